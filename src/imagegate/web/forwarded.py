"""The client's address behind trusted reverse proxies ([server] trusted_proxies).

Forwarded headers are believed only when the direct peer is a trusted proxy. The chain is walked
right to left (each proxy appends the address it saw), skipping trusted hops; the first untrusted
hop is the client. Everything left of it was written by that client and is never believed.
Only one header is read (`X-Forwarded-For` or RFC 7239 `Forwarded`, per `proxy_header`), so a
client cannot smuggle the other one past a proxy that only rewrites the first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ProxyHeader = Literal["x-forwarded-for", "forwarded"]


@dataclass(frozen=True)
class ResolvedClient:
    host: str
    scheme: str | None  # from X-Forwarded-Proto / Forwarded proto=, when a trusted proxy sent it


def parse_address(text: str) -> IPAddress | None:
    """An IP address from a header element: quotes, [brackets] and :ports removed; None if not an IP."""
    value = text.strip().strip('"')
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    def __init__(self, networks: Iterable[IPNetwork], header: ProxyHeader = "x-forwarded-for") -> None:
        self.networks = tuple(networks)
        self.header = header

    def trusts(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def resolve(self, peer: str | None, headers: Sequence[tuple[bytes, bytes]]) -> ResolvedClient | None:
        """The client behind `peer`, or None when `peer` is not a trusted proxy or sent no usable header."""
        if not self.networks or not self.trusts(parse_address(peer or "")):
            return None
        if self.header == "forwarded":
            hops, protos = _forwarded_elements(_header_values(headers, b"forwarded"))
        else:
            hops = _comma_list(_header_values(headers, b"x-forwarded-for"))
            protos = _comma_list(_header_values(headers, b"x-forwarded-proto"))
        host = self._walk(hops)
        if host is None:
            return None
        scheme = protos[-1].lower() if protos else None
        return ResolvedClient(host, scheme if scheme in ("http", "https") else None)

    def _walk(self, hops: list[str]) -> str | None:
        """Right to left: the first hop that is not a trusted proxy (or the leftmost if all are)."""
        nearest: str | None = None
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                # A trusted proxy wrote something that is not an address ("unknown", an obfuscated
                # name): the nearest trusted hop is the best we know.
                return nearest
            nearest = str(address)
            if not self.trusts(address):
                return nearest
        return nearest


def _header_values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in headers if key == name]


def _comma_list(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _forwarded_elements(values: list[str]) -> tuple[list[str], list[str]]:
    """`for=` and `proto=` of each RFC 7239 element, in order (elements without `for=` are skipped)."""
    hops: list[str] = []
    protos: list[str] = []
    for element in _comma_list(values):
        pairs = {}
        for pair in element.split(";"):
            key, _, value = pair.partition("=")
            pairs[key.strip().lower()] = value.strip().strip('"')
        if "for" in pairs:
            hops.append(pairs["for"])
        if "proto" in pairs:
            protos.append(pairs["proto"])
    return hops, protos
