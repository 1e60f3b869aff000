"""Image URL fetching: address checks, literal-host parsing, redirects, caps, sniffing, DNS pinning.

The fetches run against a real aiohttp server on 127.0.0.1 (reachable only with
``allow_loopback=True`` and its port allowed); other hosts come from a replaced `resolve_host`,
and the suite's network guard refuses any connection beyond loopback.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest
from aiohttp import web
from PIL import Image
from yarl import URL

from imagegate import netfetch
from imagegate.errors import InvalidRequestError
from imagegate.netfetch import FetchPolicy, check_address, fetch_image, host_allowed, parse_host, redirect_target

PARAM = "images[0].image_url"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


@dataclass
class Server:
    port: int
    requests: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def policy(self, **changes: object) -> FetchPolicy:
        base = FetchPolicy(allow_loopback=True, allowed_ports=(80, 443, self.port), total_timeout=5.0)
        return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    seen: list[dict[str, str]] = []

    async def image(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(body=PNG, content_type="text/plain")  # the header is not what decides

    async def redirect(request: web.Request) -> web.Response:
        left = int(request.match_info["left"])
        target = "/image" if left == 0 else f"/redirect/{left - 1}"
        raise web.HTTPFound(target)

    async def to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"], headers={"Set-Cookie": "session=secret"})

    async def html(request: web.Request) -> web.Response:
        return web.Response(body=b"<html>not an image</html>", content_type="image/png")

    async def big_declared(request: web.Request) -> web.Response:
        return web.Response(body=PNG + b"\0" * 200_000, content_type="image/png")

    async def big_streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(PNG)
        for _ in range(64):
            await response.write(b"\0" * 65536)
        await response.write_eof()
        return response

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(PNG[:16])
        await asyncio.sleep(10)  # cancelled when the client goes away
        return response

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/image", image)
    app.router.add_get("/redirect/{left}", redirect)
    app.router.add_get("/to", to)
    app.router.add_get("/html", html)
    app.router.add_get("/big-declared", big_declared)
    app.router.add_get("/big-streamed", big_streamed)
    app.router.add_get("/slow", slow)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield Server(port, seen)
    await runner.cleanup()


async def _refused(url: str, policy: FetchPolicy, **kwargs: float) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        await fetch_image(url, PARAM, policy, **kwargs)
    assert caught.value.param == PARAM
    return caught.value


# --- fetching from the loopback server ---------------------------------------------------------


async def test_fetches_a_png_whatever_its_content_type(server: Server) -> None:
    assert await fetch_image(server.url("/image"), PARAM, server.policy()) == PNG


async def test_sends_no_credentials_or_cookies(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # The redirect sets a cookie for a name (jars ignore cookies from bare addresses); the next
    # hop, to the same name, must not send it back.
    _fake_resolver(monkeypatch, ["127.0.0.1"])
    url = server.url("/to?url=" + server.url("/image", "images.test"), "images.test")
    assert await fetch_image(url, PARAM, server.policy()) == PNG
    headers = {name.lower() for name in server.requests[-1]}
    assert not headers & {"authorization", "cookie", "proxy-authorization"}


async def test_ignores_proxy_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://10.255.255.1:3128")  # unreachable: using it would fail
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert await fetch_image(server.url("/image"), PARAM, server.policy()) == PNG


async def test_loopback_is_refused_without_allow_loopback(server: Server) -> None:
    error = await _refused(server.url("/image"), server.policy(allow_loopback=False, allow_private=True))
    assert "blocked address (loopback)" in error.message
    assert server.requests == []


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0x7f000001", "127.0.0.1."])
async def test_literal_loopback_spellings(server: Server, host: str) -> None:
    error = await _refused(server.url("/image", host), server.policy(allow_loopback=False))
    assert "loopback" in error.message
    assert server.requests == []
    # Allowed, the same spelling reaches the server (connecting to the canonical address).
    assert await fetch_image(server.url("/image", host), PARAM, server.policy()) == PNG


async def test_follows_up_to_three_redirects(server: Server) -> None:
    assert await fetch_image(server.url("/redirect/2"), PARAM, server.policy()) == PNG  # 3 redirects


async def test_refuses_a_fourth_redirect(server: Server) -> None:
    error = await _refused(server.url("/redirect/3"), server.policy())  # 4 redirects
    assert "redirected more than 3 times" in error.message
    assert server.requests == []


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata service"),
        ("http://10.0.0.5/x.png", "private network"),
        ("http://[::ffff:192.168.1.1]/x.png", "private network (IPv4 inside IPv6)"),
        ("http://0251.0376.0251.0376/", "cloud metadata service"),  # 169.254.169.254 in octal
        ("ftp://example.com/x.png", "must use http or https"),
        ("http://example.com:22/x.png", "port 22"),
    ],
)
async def test_redirect_targets_are_checked(server: Server, target: str, reason: str) -> None:
    error = await _refused(server.url("/to?url=" + target), server.policy())
    assert reason in error.message
    assert "redirect" in error.message


async def test_redirect_to_a_denied_host(server: Server) -> None:
    policy = server.policy(deny_hosts=("*.internal",))
    error = await _refused(server.url("/to?url=http://db.corp.internal/x.png"), policy)
    assert "host that is not allowed" in error.message


async def test_refuses_a_non_image(server: Server) -> None:
    error = await _refused(server.url("/html"), server.policy())
    assert "did not return a PNG, JPEG, WebP or GIF image" in error.message


async def test_refuses_an_error_status(server: Server) -> None:
    error = await _refused(server.url("/missing"), server.policy())
    assert "HTTP 404" in error.message


async def test_refuses_a_declared_oversized_body(server: Server) -> None:
    error = await _refused(server.url("/big-declared"), server.policy(max_bytes=100_000))
    assert error.code == "payload_too_large"


async def test_stops_reading_an_oversized_stream(server: Server) -> None:
    error = await _refused(server.url("/big-streamed"), server.policy(max_bytes=100_000))
    assert error.code == "payload_too_large"
    assert "100000 byte cap" in error.message


async def test_a_slow_body_times_out(server: Server) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    error = await _refused(server.url("/slow"), server.policy(total_timeout=0.3))
    assert "in the time allowed" in error.message
    assert loop.time() - started < 2


async def test_the_callers_deadline_wins(server: Server) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    error = await _refused(server.url("/slow"), server.policy(total_timeout=30), deadline=started + 0.2)
    assert "in the time allowed" in error.message
    assert loop.time() - started < 2


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "must use http or https"),
        ("gopher://127.0.0.1/", "must use http or https"),
        ("http://user:secret@127.0.0.1/image", "must not carry credentials"),
        ("http://127.0.0.1:8080/image", "port 8080"),
        ("http:///image", "has no host"),
        ("http://1.2.3.09/", "malformed numeric host"),
    ],
)
async def test_refuses_before_connecting(url: str, reason: str) -> None:
    error = await _refused(url, FetchPolicy(allow_loopback=True))
    assert reason in error.message


async def test_long_urls_are_clipped_in_messages() -> None:
    url = "ftp://example.com/" + "a" * 5000
    error = await _refused(url, FetchPolicy())
    assert len(error.message) < 250
    assert "(5018 characters)" in error.message


# --- resolution: checked once, pinned --------------------------------------------------------


def _fake_resolver(monkeypatch: pytest.MonkeyPatch, *answers: list[str]) -> list[str]:
    """Replace `resolve_host` with one giving `answers` in turn (the last one repeats)."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[netfetch.IPAddress]:
        calls.append(host)
        answer = answers[min(len(calls), len(answers)) - 1]
        return [ipaddress.ip_address(text) for text in answer]

    monkeypatch.setattr(netfetch, "resolve_host", resolve)
    return calls


async def test_a_name_is_resolved_once_and_keeps_its_host_header(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_resolver(monkeypatch, ["127.0.0.1"])
    assert await fetch_image(server.url("/image", "images.test"), PARAM, server.policy()) == PNG
    assert calls == ["images.test"]
    assert server.requests[-1]["Host"] == f"images.test:{server.port}"


async def test_dns_rebinding_connects_to_the_checked_answer(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # First answer public (passes the check), every later one loopback (where the server is).
    calls = _fake_resolver(monkeypatch, ["93.184.215.14"], ["127.0.0.1"])
    connected: list[object] = []
    guarded = socket.socket.connect

    def recording_connect(self: socket.socket, address: object) -> None:
        connected.append(address)
        guarded(self, address)  # the suite's guard refuses anything beyond loopback

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    error = await _refused(server.url("/image", "rebind.test"), server.policy())
    assert "could not be fetched" in error.message
    assert calls == ["rebind.test"]
    assert [address[0] for address in connected] == ["93.184.215.14"]  # type: ignore[index]
    assert server.requests == []


async def test_any_blocked_answer_refuses_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_resolver(monkeypatch, ["93.184.215.14", "10.1.2.3"])
    error = await _refused("http://mixed.test/x.png", FetchPolicy())
    assert "resolves to a blocked address (private network)" in error.message


async def test_an_unresolvable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(host: str, port: int) -> list[netfetch.IPAddress]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(netfetch, "resolve_host", fail)
    error = await _refused("http://nowhere.test/x.png", FetchPolicy())
    assert "does not resolve" in error.message


async def test_real_resolver_checks_localhost(server: Server) -> None:
    error = await _refused(server.url("/image", "localhost"), server.policy(allow_loopback=False))
    assert "resolves to a blocked address (loopback" in error.message


# --- redirects, hosts: pure rules ------------------------------------------------------------


def test_https_never_redirects_to_http() -> None:
    policy = FetchPolicy()
    with pytest.raises(InvalidRequestError, match="from https to http"):
        redirect_target(URL("https://a.example/x"), "http://a.example/y", "image URL", PARAM, policy)
    assert redirect_target(URL("http://a.example/x"), "https://b.example/y#f", "u", PARAM, policy) == URL(
        "https://b.example/y"
    )
    assert redirect_target(URL("https://a.example/x/y"), "../z", "u", PARAM, policy) == URL("https://a.example/z")
    with pytest.raises(InvalidRequestError, match="without a Location"):
        redirect_target(URL("https://a.example/x"), None, "image URL", PARAM, policy)


@pytest.mark.parametrize(
    ("host", "allow", "deny", "expected"),
    [
        ("images.example.com", (), (), True),
        ("images.example.com", ("images.example.com",), (), True),
        ("IMAGES.example.com.", ("images.example.com",), (), True),
        ("cdn.example.com", ("images.example.com",), (), False),
        ("a.b.example.com", ("*.example.com",), (), True),
        ("example.com", ("*.example.com",), (), False),
        ("badexample.com", ("*.example.com",), (), False),
        ("a.example.com", ("*.example.com",), ("a.example.com",), False),
        ("db.internal", (), ("*.internal",), False),
        ("0x7f.1", (), ("127.0.0.1",), False),
        ("2130706433", ("127.0.0.1",), (), True),
    ],
)
def test_host_lists(host: str, allow: tuple[str, ...], deny: tuple[str, ...], expected: bool) -> None:
    assert host_allowed(host, FetchPolicy(allow_hosts=allow, deny_hosts=deny)) is expected


# --- parse_host and check_address tables --------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0X7F.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("10.1", "10.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("[fe80::1%25eth0]", "fe80::1%eth0"),
        ("example.com", None),
        ("127.0.0.1.example.com", None),
        ("localhost", None),
        ("0x7f.example", None),
    ],
)
def test_parse_host(host: str, expected: str | None) -> None:
    parsed = parse_host(host)
    assert parsed == (ipaddress.ip_address(expected) if expected else None)


@pytest.mark.parametrize(
    "host",
    ["1.2.3.256", "1.2.3.4.5", "08.1", "1.09", "0x100.1", "4294967296", "1_0.0.0.1", "example.123", "1..2", "[::g]"],
)
def test_parse_host_refuses_malformed_numbers(host: str) -> None:
    with pytest.raises(ValueError):
        parse_host(host)


BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.255", "CGNAT"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "metadata"),
    ("169.254.170.2", "metadata"),
    ("100.100.100.200", "metadata"),
    ("192.0.0.192", "metadata"),
    ("192.0.0.8", "reserved"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fd00:ec2::254", "metadata"),
    ("fec0::1", "site local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("100::1", "discard"),
    ("2001::1", "Teredo"),
    ("::ffff:127.0.0.1", "loopback (IPv4 inside IPv6)"),
    ("::ffff:10.0.0.1", "private network (IPv4 inside IPv6)"),
    ("::ffff:169.254.169.254", "metadata"),
    ("::127.0.0.1", "loopback (IPv4 inside IPv6)"),
    ("::10.0.0.1", "private network (IPv4 inside IPv6)"),
    ("64:ff9b::127.0.0.1", "loopback (IPv4 inside IPv6)"),
    ("64:ff9b::a9fe:a9fe", "metadata"),
    ("64:ff9b:1::1", "local NAT64"),
    ("2002:7f00:1::", "loopback (IPv4 inside IPv6)"),
    ("2002:c0a8:101::1", "private network (IPv4 inside IPv6)"),
    ("4000::1", "reserved"),
]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_check_address_blocks(address: str, reason: str) -> None:
    found = check_address(ipaddress.ip_address(address))
    assert found is not None
    assert reason in found


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "8.8.8.8", "100.63.255.255", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"]
)
def test_check_address_allows_public(address: str) -> None:
    assert check_address(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.0.0.1", True),
        ("172.20.1.1", True),
        ("192.168.0.10", True),
        ("100.64.1.1", True),
        ("fd12::1", True),
        ("::ffff:192.168.0.10", True),
        ("169.254.169.254", False),
        ("100.100.100.200", False),
        ("fd00:ec2::254", False),
        ("169.254.1.1", False),
        ("fe80::1", False),
        ("127.0.0.1", False),
        ("::1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
    ],
)
def test_allow_private_opens_private_ranges_only(address: str, allowed: bool) -> None:
    found = check_address(ipaddress.ip_address(address), allow_private=True)
    assert (found is None) is allowed


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("169.254.169.254", False),
    ],
)
def test_allow_loopback_opens_loopback_only(address: str, allowed: bool) -> None:
    found = check_address(ipaddress.ip_address(address), allow_loopback=True)
    assert (found is None) is allowed
