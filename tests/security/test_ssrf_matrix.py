"""The SSRF matrix: every blocked address class, given as an input image URL and as a webhook URL,
is refused with a 400 naming the parameter, and the gateway opens no connection at all (every
`socket.connect` of the process is recorded). Run with ``-s`` to print the matrix."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imagegate import netfetch
from imagegate.config import Settings
from imagegate.web.app import create_app

# (address class, the host as written in the URL); names resolve through a patched resolver.
CLASSES: list[tuple[str, str]] = [
    ("loopback v4", "127.0.0.1"),
    ("loopback, decimal", "2130706433"),
    ("loopback, hex", "0x7f.1"),
    ("loopback, octal", "0177.0.0.1"),
    ("loopback, short", "127.1"),
    ("loopback v6", "[::1]"),
    ("v4-mapped loopback", "[::ffff:127.0.0.1]"),
    ("NAT64 loopback", "[64:ff9b::7f00:1]"),
    ("unspecified", "0.0.0.0"),
    ("private 10/8", "10.0.0.1"),
    ("private 172.16/12", "172.16.0.1"),
    ("private 192.168/16", "192.168.1.1"),
    ("CGNAT", "100.64.0.1"),
    ("link-local v4", "169.254.1.1"),
    ("metadata (AWS/GCP/Azure)", "169.254.169.254"),
    ("metadata (Alibaba)", "100.100.100.200"),
    ("link-local v6", "[fe80::1]"),
    ("unique-local v6", "[fd00::1]"),
    ("metadata v6 (AWS)", "[fd00:ec2::254]"),
    ("multicast v4", "224.0.0.1"),
    ("multicast v6", "[ff02::1]"),
    ("broadcast", "255.255.255.255"),
    ("reserved 240/4", "240.0.0.1"),
    ("documentation", "192.0.2.1"),
    ("benchmarking", "198.18.0.1"),
    ("name -> loopback", "loopback.attacker.test"),
    ("name -> metadata", "metadata.attacker.test"),
    ("name -> private", "private.attacker.test"),
]
NAMES = {
    "loopback.attacker.test": "127.0.0.1",
    "metadata.attacker.test": "169.254.169.254",
    "private.attacker.test": "10.1.2.3",
}
USES = ["input image_url", "webhook_url"]
MATRIX: dict[tuple[str, str], tuple[int, int]] = {}


@pytest.fixture(autouse=True, scope="module")
def _print_matrix() -> Iterator[None]:
    """After the module: the matrix as a table (seen with ``-s``)."""
    yield
    if MATRIX:
        print(f"\n| address class | {' | '.join(USES)} |\n|---|{'---|' * len(USES)}")
        for label, _ in CLASSES:
            cells = [MATRIX.get((label, use)) for use in USES]
            shown = [f"{c[0]}, connections {c[1]}" if c else "not run" for c in cells]
            print(f"| {label} | {' | '.join(shown)} |")


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    seen: list[object] = []
    guarded = socket.socket.connect

    def recording(self: socket.socket, address: object) -> None:
        seen.append(address)
        return guarded(self, address)  # type: ignore[arg-type]

    async def resolve(host: str, port: int) -> list[netfetch.IPAddress]:
        return [ipaddress.ip_address(NAMES[host])] if host in NAMES else []

    monkeypatch.setattr(socket.socket, "connect", recording)
    monkeypatch.setattr(netfetch, "resolve_host", resolve)
    yield seen


def _request(use: str, host: str) -> tuple[str, dict[str, object], str]:
    url = f"http://{host}/x.png"
    if use == "webhook_url":
        return "/v1/images/generations", {"prompt": "x", "webhook_url": url}, "webhook_url"
    return "/v1/images/edits", {"prompt": "x", "images": [{"image_url": url}]}, "images[0].image_url"


@pytest.mark.parametrize("use", USES)
@pytest.mark.parametrize(("label", "host"), CLASSES)
async def test_every_blocked_class_is_refused_without_a_connection(
    tmp_path: Path, connections: list[object], use: str, label: str, host: str
) -> None:
    app = create_app(Settings(data_dir=tmp_path, signing_key="k"))
    path, body, param = _request(use, host)
    await app.state.runtime.ready()  # connect the database first: its connects are not the URL's
    connections.clear()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        answer = await http.post(path, json=body)
    await app.state.runtime.aclose()
    MATRIX[(label, use)] = (answer.status_code, len(connections))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert connections == []


async def test_a_webhook_host_that_turns_blocked_after_accept_is_not_contacted(
    tmp_path: Path, connections: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked at accept and again at every delivery: a name re-pointed at a blocked address later
    (DNS rebinding across time) fails the delivery with no connection."""
    answers = iter(["93.184.215.14", "169.254.169.254"])

    async def resolve(host: str, port: int) -> list[netfetch.IPAddress]:
        return [ipaddress.ip_address(next(answers))]

    monkeypatch.setattr(netfetch, "resolve_host", resolve)
    settings = Settings.model_validate(
        {"data_dir": tmp_path, "signing_key": "k", "jobs": {"poll_interval_seconds": 0.05}}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        connections.clear()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            accepted = await http.post(
                "/v1/images/generations", json={"prompt": "x", "webhook_url": "http://hooks.example.com/in"}
            )
            assert accepted.status_code == 202, accepted.text
            for _ in range(200):
                job = (await http.get(accepted.headers["location"])).json()
                if (job["webhook"] or {}).get("status") == "failed":
                    break
                await asyncio.sleep(0.02)
    assert job["webhook"]["status"] == "failed" and "blocked address" in job["webhook"]["last_error"]
    assert [c for c in connections if isinstance(c, tuple) and c[0] not in ("127.0.0.1", "::1")] == []
