"""Fetching a client-supplied image URL without letting the client reach what the gateway can reach.

A URL given as an input image makes the gateway a network client on the caller's behalf, so each
hop is checked before any byte leaves (DESIGN.md section 9):

1. the URL: http or https only, no user-info, a port in `FetchPolicy.allowed_ports`, a host that
   passes `deny_hosts` / `allow_hosts`;
2. the address: a literal host is parsed the way URL parsers and ``inet_aton`` read it (``127.1``,
   ``0x7f.1``, ``2130706433``, ``0177.0.0.1`` are all 127.0.0.1); a name is resolved once by
   `resolve_host` and every answer is checked by `check_address` (loopback, private, link-local,
   cloud metadata, multicast, reserved and documentation ranges, IPv4 embedded in IPv6 included);
3. the connection goes to the address that was checked: the connector's resolver answers only
   that pinned address (no second lookup, so no DNS rebinding), while the Host header, SNI and
   certificate check keep the original name;
4. redirects are followed by hand, at most `max_redirects`, each target going through 1-3 again;
   https never downgrades to http;
5. the body is read up to `max_bytes` and no further, all within the connect and total timeouts
   and the caller's deadline, and must start with PNG, JPEG, WebP or GIF magic (the
   Content-Type header is never consulted).

No credentials travel: no Authorization, no cookies (a dummy jar), no proxy or netrc from the
environment (``trust_env=False``). Every refusal is an `InvalidRequestError` naming the caller's
`param`, quoting at most ~100 characters of the URL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from imagegate import __version__
from imagegate.core.quoting import quote
from imagegate.errors import InvalidRequestError
from imagegate.imaging.probe import sniff_format

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

USER_AGENT = f"imagegate/{__version__} (image-url-fetch)"
ACCEPTED_FORMATS = frozenset({"png", "jpeg", "webp", "gif"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
SNIFF_BYTES = 12  # enough for every signature in ACCEPTED_FORMATS (WebP needs bytes 8-12)
READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchPolicy:
    """What an image URL may point at and how much of it is read.

    `allow_hosts`: when non-empty, the only hosts fetched; `deny_hosts` always wins over it. Both
    hold exact names ("images.example.com") or suffix patterns ("*.example.com", which matches
    subdomains, not the bare name), compared lower-case without a trailing dot.
    `allow_private`: an on-premises switch that admits RFC 1918, CGNAT and unique-local
    addresses; link-local, metadata and loopback addresses stay refused. `allow_loopback`
    admits 127.0.0.0/8 and ::1 (tests, a sidecar on the same host).
    Timeouts are seconds; `max_bytes` caps the body of the final answer.
    """

    allow_hosts: tuple[str, ...] = ()
    deny_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    allow_loopback: bool = False
    max_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 5.0
    total_timeout: float = 20.0
    max_redirects: int = 3
    allowed_ports: tuple[int, ...] = (80, 443)


# --- addresses ---------------------------------------------------------------------------------

# Instance-metadata services, refused whatever the policy says (169.254.0.0/16 and fe80::/10 are
# refused as link-local anyway; these are the ones living in ranges `allow_private` opens).
_METADATA = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud (inside CGNAT)
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS over IPv6 (inside unique-local)
    )
)

_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX = re.compile(r"0x[0-9a-f]*")
_OCTAL = re.compile(r"0[0-7]+")

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
# (network, reason, opened by allow_private); checked in order, the first match decides.
_V4_RANGES: tuple[tuple[ipaddress.IPv4Network, str, bool], ...] = (
    (_V4("0.0.0.0/8"), "unspecified (this network)", False),
    (_V4("127.0.0.0/8"), "loopback", False),
    (_V4("169.254.0.0/16"), "link-local", False),
    (_V4("10.0.0.0/8"), "private network", True),
    (_V4("172.16.0.0/12"), "private network", True),
    (_V4("192.168.0.0/16"), "private network", True),
    (_V4("100.64.0.0/10"), "shared address space (CGNAT)", True),
    (_V4("192.0.0.0/24"), "reserved (IETF protocol assignments)", False),
    (_V4("192.0.2.0/24"), "documentation", False),
    (_V4("198.51.100.0/24"), "documentation", False),
    (_V4("203.0.113.0/24"), "documentation", False),
    (_V4("198.18.0.0/15"), "reserved (benchmarking)", False),
    (_V4("192.88.99.0/24"), "reserved (6to4 relay)", False),
    (_V4("224.0.0.0/4"), "multicast", False),
    (_V4("255.255.255.255/32"), "broadcast", False),
    (_V4("240.0.0.0/4"), "reserved", False),
)
_V6_RANGES: tuple[tuple[ipaddress.IPv6Network, str, bool], ...] = (
    (_V6("::/128"), "unspecified", False),
    (_V6("::1/128"), "loopback", False),
    (_V6("fe80::/10"), "link-local", False),
    (_V6("fc00::/7"), "private network (unique local)", True),
    (_V6("fec0::/10"), "private network (site local)", True),
    (_V6("ff00::/8"), "multicast", False),
    (_V6("2001:db8::/32"), "documentation", False),
    (_V6("3fff::/20"), "documentation", False),
    (_V6("100::/64"), "reserved (discard)", False),
    (_V6("2001::/23"), "reserved (IETF protocol assignments, Teredo)", False),
    (_V6("64:ff9b:1::/48"), "private network (local NAT64)", True),
)
_LOOPBACK_V4 = _V4("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")
_NAT64 = _V6("64:ff9b::/96")
_V4_COMPATIBLE = _V6("::/96")


def check_address(ip: IPAddress, *, allow_private: bool = False, allow_loopback: bool = False) -> str | None:
    """Why `ip` may not be fetched from (e.g. "loopback"), or None when it may.

    IPv6 forms that carry an IPv4 address (mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``,
    NAT64 ``64:ff9b::a.b.c.d``, 6to4 ``2002:AABB:CCDD::``) are judged by the IPv4 address they
    lead to, since that is where the packets go.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(int(ip))  # the zone does not change what the address is
    if ip in _METADATA:
        return "cloud metadata service"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            reason = check_address(embedded, allow_private=allow_private, allow_loopback=allow_loopback)
            return f"{reason} (IPv4 inside IPv6)" if reason else None
        ranges: Sequence[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str, bool]] = _V6_RANGES
    else:
        ranges = _V4_RANGES
    if allow_loopback and (ip == _LOOPBACK_V6 or ip in _LOOPBACK_V4):
        return None
    for network, reason, opened_by_private in ranges:
        if ip in network:
            return None if opened_by_private and allow_private else reason
    if ip.is_reserved or ip.is_multicast or ip.is_unspecified or not ip.is_global:
        return "reserved"
    return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the translation forms."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _V4_COMPATIBLE and int(ip) > 1):  # :: and ::1 are themselves
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def parse_host(host: str) -> IPAddress | None:
    """The address a URL host names literally, or None for a name that needs DNS.

    IPv4 is read the way WHATWG URL parsers and ``inet_aton`` read it: one to four dot-separated
    parts, each decimal, octal (leading 0) or hex (0x), the last filling the remaining bytes, so
    "2130706433", "0177.0.0.1", "0x7f.1" and "127.1" are all 127.0.0.1. IPv6 may be bracketed and
    carry a zone. Raises ValueError for a host that ends in a number but is no valid address
    ("1.2.3.999", "08.1"): a resolver might read it either way, so it is neither name nor address.
    """
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        return ipaddress.IPv6Address(text.replace("%25", "%"))  # ValueError when malformed
    text = text.removesuffix(".")
    parts = text.split(".")
    if not parts[-1] or not _looks_numeric(parts[-1]):
        return None
    if len(parts) > 4:
        raise ValueError(f"{host!r} has too many parts for an IPv4 address")
    numbers = [_parse_v4_part(part) for part in parts]
    *head, last = numbers
    if any(n > 0xFF for n in head) or last >= 256 ** (5 - len(numbers)):
        raise ValueError(f"{host!r} is out of range for an IPv4 address")
    value = last
    for index, number in enumerate(head):
        value |= number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _looks_numeric(part: str) -> bool:
    return _DIGITS.fullmatch(part) is not None or _HEX.fullmatch(part) is not None


def _parse_v4_part(part: str) -> int:
    """One part of a numeric IPv4 host: 0x hex, 0-led octal or decimal; ValueError for anything else."""
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if _OCTAL.fullmatch(part):
        return int(part, 8)
    if _DECIMAL.fullmatch(part):
        return int(part, 10)
    raise ValueError(f"{part!r} is not a number")


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the system resolver, as the connection would use it).

    Module-level so tests can replace it; `fetch_image` calls it exactly once per hop.
    """
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


class _PinnedResolver(AbstractResolver):
    """Answers the one checked address for the one checked host; any other lookup fails."""

    def __init__(self) -> None:
        self.host = ""
        self.address: IPAddress | None = None

    def pin(self, host: str, address: IPAddress) -> None:
        self.host, self.address = host, address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self.address is None or host != self.host:
            raise OSError(f"no checked address for {host!r}")
        address_family = socket.AF_INET6 if self.address.version == 6 else socket.AF_INET
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [
            ResolveResult(hostname=host, host=str(self.address), port=port, family=address_family, proto=0, flags=flags)
        ]

    async def close(self) -> None:
        pass


# --- the fetch ---------------------------------------------------------------------------------


async def fetch_image(url: str, param: str, policy: FetchPolicy, *, deadline: float | None = None) -> bytes:
    """The bytes of the image at `url`, every hop checked against `policy` (see the module docstring).

    `deadline` is an event-loop time (``loop.time()``); the fetch ends by it or by
    ``policy.total_timeout`` from now, whichever is first. Every refusal and failure raises
    `InvalidRequestError` with `param`.
    """
    label = f"image URL {quote(url)}"
    loop = asyncio.get_running_loop()
    until = loop.time() + policy.total_timeout
    if deadline is not None:
        until = min(until, deadline)
    resolver = _PinnedResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True, limit=1)
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, connect=policy.connect_timeout, sock_connect=policy.connect_timeout),
        headers={
            "User-Agent": USER_AGENT,
            "Accept": "image/png, image/jpeg, image/webp, image/gif",
            "Accept-Encoding": "identity",
        },
    )
    try:
        async with session, asyncio.timeout_at(until):
            return await _follow(session, resolver, url, label, param, policy)
    except TimeoutError:
        raise InvalidRequestError(f"{label} did not deliver an image in the time allowed", param=param) from None
    except aiohttp.ClientError as exc:
        raise InvalidRequestError(f"{label} could not be fetched ({_describe(exc)})", param=param) from None


async def _follow(
    session: aiohttp.ClientSession,
    resolver: _PinnedResolver,
    url: str,
    label: str,
    param: str,
    policy: FetchPolicy,
) -> bytes:
    """Request, following redirects by hand so that every target is checked before it is contacted."""
    try:
        current = _check_url(URL(url), label, param, policy)
    except (ValueError, TypeError):
        raise InvalidRequestError(f"{label} is not a valid URL", param=param) from None
    for hop in range(policy.max_redirects + 1):
        where = label if hop == 0 else f"{label} (redirect {hop})"
        target = await _pin(current, where, param, policy, resolver)
        async with session.get(target, allow_redirects=False) as response:
            if response.status in REDIRECT_STATUSES:
                if hop == policy.max_redirects:
                    raise InvalidRequestError(f"{label} redirected more than {policy.max_redirects} times", param=param)
                current = redirect_target(current, response.headers.get("Location"), label, param, policy)
                continue
            if response.status != 200:
                raise InvalidRequestError(f"{where} answered HTTP {response.status}", param=param)
            return await _read_image(response, where, param, policy.max_bytes)
    raise AssertionError("unreachable: the last hop returns or raises")


async def check_target(url: str, param: str, policy: FetchPolicy, label: str = "URL") -> None:
    """Refuse `url` now, before anything is sent to it, if a request to it would be refused: the same
    URL, host and address checks as a fetch (the address is checked again when it is contacted)."""
    label = f"{label} {quote(url)}"
    try:
        parsed = _check_url(URL(url), label, param, policy)
    except (ValueError, TypeError):
        raise InvalidRequestError(f"{label} is not a valid URL", param=param) from None
    await _pin(parsed, label, param, policy, _PinnedResolver())


async def post_json(url: str, body: bytes, headers: dict[str, str], policy: FetchPolicy) -> int:
    """POST `body` (JSON) to `url`, every check of a fetch applied, redirects not followed; returns
    the status. Refusals raise `InvalidRequestError`, failures `aiohttp.ClientError` or TimeoutError."""
    label = f"URL {quote(url)}"
    try:
        target = _check_url(URL(url), label, "url", policy)
    except (ValueError, TypeError):
        raise InvalidRequestError(f"{label} is not a valid URL", param="url") from None
    resolver = _PinnedResolver()
    target = await _pin(target, label, "url", policy, resolver)
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True, limit=1)
    timeout = aiohttp.ClientTimeout(total=policy.total_timeout, connect=policy.connect_timeout)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, timeout=timeout
    ) as session:
        sent = {"User-Agent": USER_AGENT.replace("image-url-fetch", "webhook"), "Content-Type": "application/json"}
        async with session.post(target, data=body, headers={**sent, **headers}, allow_redirects=False) as response:
            await response.content.read(READ_CHUNK)  # a little of the answer, never all of it
            return response.status


def _check_url(parsed: URL, label: str, param: str, policy: FetchPolicy) -> URL:
    """`parsed` without its fragment, when scheme, credentials, port and host name are acceptable."""
    if parsed.scheme not in ("http", "https"):
        raise InvalidRequestError(f"{label} must use http or https", param=param)
    if not parsed.raw_host:
        raise InvalidRequestError(f"{label} has no host", param=param)
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise InvalidRequestError(f"{label} must not carry credentials", param=param)
    if parsed.port not in policy.allowed_ports:
        raise InvalidRequestError(f"{label} uses port {parsed.port}, which is not allowed", param=param)
    if not host_allowed(parsed.raw_host, policy):
        raise InvalidRequestError(f"{label} names a host that is not allowed", param=param)
    return parsed.with_fragment(None)


def redirect_target(current: URL, location: str | None, label: str, param: str, policy: FetchPolicy) -> URL:
    """Where a redirect from `current` leads, checked like the first URL; https never drops to http."""
    if not location:
        raise InvalidRequestError(f"{label} redirected without a Location", param=param)
    try:
        target = current.join(URL(location))
    except (ValueError, TypeError):
        raise InvalidRequestError(f"{label} redirected to an invalid URL", param=param) from None
    if current.scheme == "https" and target.scheme == "http":
        raise InvalidRequestError(f"{label} redirected from https to http", param=param)
    return _check_url(target, f"{label} redirected to a URL that", param, policy)


def host_allowed(raw_host: str, policy: FetchPolicy) -> bool:
    """`deny_hosts` first, then `allow_hosts` when it is set; a literal address also matches its canonical form."""
    names = {_host_key(raw_host)}
    try:
        literal = parse_host(raw_host)
    except ValueError:
        literal = None
    if literal is not None:
        names.add(_canonical(literal))
    if any(_matches(name, policy.deny_hosts) for name in names):
        return False
    return not policy.allow_hosts or any(_matches(name, policy.allow_hosts) for name in names)


async def _pin(url: URL, label: str, param: str, policy: FetchPolicy, resolver: _PinnedResolver) -> URL:
    """Resolve `url`'s host once, check every answer, pin the first; returns the URL to request."""
    raw_host = url.raw_host or ""
    try:
        literal = parse_host(raw_host)
    except ValueError:
        raise InvalidRequestError(f"{label} has a malformed numeric host", param=param) from None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = await resolve_host(raw_host, url.port or 0)
        except OSError:
            addresses = []
        if not addresses:
            raise InvalidRequestError(f"{label} names a host that does not resolve", param=param)
    for address in addresses:
        reason = check_address(address, allow_private=policy.allow_private, allow_loopback=policy.allow_loopback)
        if reason is not None:
            verb = "is" if literal is not None else "resolves to"
            raise InvalidRequestError(f"{label} {verb} a blocked address ({reason})", param=param)
    if literal is not None:
        # Connect to the canonical spelling: aiohttp refuses legacy forms, and a literal address
        # has no name to keep for the Host header or SNI.
        return url.with_host(_canonical(literal))
    resolver.pin(raw_host, addresses[0])
    return url


async def _read_image(response: aiohttp.ClientResponse, label: str, param: str, max_bytes: int) -> bytes:
    """The body, refused as soon as it passes `max_bytes` or its first bytes are no accepted image."""
    too_large = f"{label} is larger than the {max_bytes} byte cap"
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise InvalidRequestError(too_large, param=param, code="payload_too_large")
    chunks: list[bytes] = []
    size = 0
    sniffed = False
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise InvalidRequestError(too_large, param=param, code="payload_too_large")
        chunks.append(chunk)
        if not sniffed and size >= SNIFF_BYTES:
            _check_magic(b"".join(chunks), label, param)
            sniffed = True
    data = b"".join(chunks)
    if not sniffed:
        _check_magic(data, label, param)
    return data


def _check_magic(data: bytes, label: str, param: str) -> None:
    if sniff_format(data) not in ACCEPTED_FORMATS:
        raise InvalidRequestError(f"{label} did not return a PNG, JPEG, WebP or GIF image", param=param)


def _canonical(ip: IPAddress) -> str:
    return str(ip).split("%")[0]


def _host_key(raw_host: str) -> str:
    return raw_host.lower().removesuffix(".")


def _matches(host: str, patterns: Sequence[str]) -> bool:
    """Whether `host` is one of `patterns`: an exact name, or "*.suffix" for any subdomain of suffix."""
    for pattern in patterns:
        key = _host_key(pattern)
        if key.startswith("*."):
            if host.endswith(key[1:]):
                return True
        elif host == key:
            return True
    return False


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection failed"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "truncated body"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return "connection closed"
    return type(exc).__name__
