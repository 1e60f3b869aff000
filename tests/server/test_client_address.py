"""The client address behind proxies: forwarded headers count only from [server] trusted_proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from imagegate.config import PlaygroundSettings, ServerSettings, Settings
from imagegate.web.app import create_app
from imagegate.web.forwarded import TrustedProxies, parse_address

GEN = "/playground/api/images/generations"
BODY = {"model": "gpt-image-1", "prompt": "a fox", "size": "1024x1024", "response_format": "b64_json"}
PROXIES = TrustedProxies([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")])


def _headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in values.items()]


def test_untrusted_peer_headers_are_ignored() -> None:
    assert PROXIES.resolve("203.0.113.9", _headers(x_forwarded_for="1.2.3.4")) is None
    assert TrustedProxies([]).resolve("10.0.0.1", _headers(x_forwarded_for="1.2.3.4")) is None
    assert PROXIES.resolve(None, _headers(x_forwarded_for="1.2.3.4")) is None


def test_chain_walked_right_to_left_skipping_trusted_hops() -> None:
    # The client forged "6.6.6.6"; the outer proxy (10.1.1.1) appended the client's real address.
    resolved = PROXIES.resolve("10.0.0.2", _headers(x_forwarded_for="6.6.6.6, 198.51.100.7, 10.1.1.1"))
    assert resolved is not None and resolved.host == "198.51.100.7"


def test_all_hops_trusted_gives_leftmost_and_garbage_gives_nearest_proxy() -> None:
    resolved = PROXIES.resolve("10.0.0.2", _headers(x_forwarded_for="10.9.9.9, 10.1.1.1"))
    assert resolved is not None and resolved.host == "10.9.9.9"
    resolved = PROXIES.resolve("10.0.0.2", _headers(x_forwarded_for="unknown, 10.1.1.1"))
    assert resolved is not None and resolved.host == "10.1.1.1"


def test_several_header_lines_and_proto() -> None:
    headers = _headers(x_forwarded_for="198.51.100.7") + _headers(x_forwarded_for="10.1.1.1", x_forwarded_proto="https")
    resolved = PROXIES.resolve("::1", headers)
    assert resolved is not None and (resolved.host, resolved.scheme) == ("198.51.100.7", "https")


def test_forwarded_header_mode_reads_only_forwarded() -> None:
    proxies = TrustedProxies(PROXIES.networks, "forwarded")
    headers = _headers(
        forwarded='for=6.6.6.6, for="[2001:db8::1]:4711";proto=https, for=10.1.1.1', x_forwarded_for="9.9.9.9"
    )
    resolved = proxies.resolve("10.0.0.2", headers)
    assert resolved is not None and (resolved.host, resolved.scheme) == ("2001:db8::1", "https")
    # X-Forwarded-For mode ignores a client-sent Forwarded header.
    resolved = PROXIES.resolve("10.0.0.2", _headers(forwarded="for=6.6.6.6", x_forwarded_for="198.51.100.7"))
    assert resolved is not None and resolved.host == "198.51.100.7"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.2.3.4:5678", "1.2.3.4"), ("[::1]:80", "::1"), ("::ffff:10.0.0.1", "10.0.0.1"), ("_hidden", None)],
)
def test_parse_address(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == expected


def test_trusted_proxies_setting_validates_cidrs() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        Settings.model_validate({"server": {"trusted_proxies": ["10.0.0.1/8"]}})
    assert ServerSettings().trusted_proxies == ()


@asynccontextmanager
async def _client(tmp_path: Path, peer: str, trusted: tuple[str, ...]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path,
            "signing_key": "k",
            "playground": PlaygroundSettings(anonymous_images_per_ip_per_day=1),
            "server": {"trusted_proxies": list(trusted)},
        }
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    await app.state.runtime.aclose()


async def test_playground_cap_ignores_spoofed_forwarded_for_from_untrusted_peer(tmp_path: Path) -> None:
    async with _client(tmp_path, "127.0.0.1", ()) as http:
        first = await http.post(GEN, json=BODY, headers={"x-forwarded-for": "198.51.100.1"})
        second = await http.post(GEN, json=BODY, headers={"x-forwarded-for": "198.51.100.2"})
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "playground_cap_exceeded"


async def test_playground_cap_per_forwarded_client_behind_trusted_proxy(tmp_path: Path) -> None:
    async with _client(tmp_path, "10.0.0.5", ("10.0.0.0/8",)) as http:
        one = await http.post(GEN, json=BODY, headers={"x-forwarded-for": "198.51.100.1"})
        other = await http.post(GEN, json=BODY, headers={"x-forwarded-for": "198.51.100.2"})
        again = await http.post(GEN, json=BODY, headers={"x-forwarded-for": "6.6.6.6, 198.51.100.1"})
    assert (one.status_code, other.status_code) == (200, 200)
    assert again.status_code == 429


async def test_forwarded_proto_from_trusted_proxy_sets_link_scheme(tmp_path: Path) -> None:
    async with _client(tmp_path, "10.0.0.5", ("10.0.0.0/8",)) as http:
        response = await http.post(
            "/v1/images/generations",
            json={**BODY, "response_format": "url"},
            headers={"x-forwarded-for": "198.51.100.1", "x-forwarded-proto": "https"},
        )
    assert response.status_code == 200
    assert response.json()["data"][0]["url"].startswith("https://testserver/")
