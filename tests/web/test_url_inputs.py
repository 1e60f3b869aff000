"""Input images given as http(s) URLs, fetched by the gateway (imagegate.netfetch) under `[inputs]`:
served when the address class is allowed, refused naming the param (and never connected) when not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from imagegate.config import Settings
from imagegate.web.app import create_app
from tests.helpers import mask_bytes, png_bytes
from tests.local_server import local_app


@pytest.fixture
async def origin() -> AsyncIterator[tuple[str, list[str]]]:
    """A local image server; the list records every path it was asked for."""
    seen: list[str] = []

    async def image(request: web.Request) -> web.Response:
        seen.append(request.path)
        data = mask_bytes(64, 64, (0, 0, 32, 64)) if "mask" in request.path else png_bytes(64, 64, (10, 90, 200))
        return web.Response(body=data, content_type="application/octet-stream")  # the bytes decide, not the type

    app = web.Application()
    app.router.add_get("/{name}", image)
    async with local_app(app) as port:
        yield f"http://127.0.0.1:{port}", seen


async def _edit(tmp_path: Path, body: dict[str, object], **inputs: object) -> httpx.Response:
    app = create_app(Settings(data_dir=tmp_path, signing_key="k", inputs=inputs))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.post("/v1/images/edits", json=body)
    await app.state.runtime.aclose()
    return response


async def test_an_allowed_url_is_fetched_and_edited(tmp_path: Path, origin: tuple[str, list[str]]) -> None:
    base, seen = origin
    port = int(base.rsplit(":", 1)[1])
    body = {
        "model": "gpt-image-1.5",
        "prompt": "x",
        "images": [{"image_url": f"{base}/a.png"}],
        "mask": {"image_url": f"{base}/mask.png"},
    }
    response = await _edit(tmp_path, body, allow_loopback=True, allowed_ports=[port])
    assert response.status_code == 200, response.text
    assert seen == ["/a.png", "/mask.png"]
    decisions = {d["param"]: d for d in response.json()["imagegate"]["decisions"]}
    for param, name in (("images[0].image_url", "a.png"), ("mask.image_url", "mask.png")):
        assert decisions[param]["asked"] == f"{base}/{name}" and decisions[param]["sent"] == "image bytes"
        assert "the provider never receives the URL" in decisions[param]["note"]


@pytest.mark.parametrize(
    ("inputs", "with_port", "words"),
    [
        ({}, True, "blocked"),  # loopback is refused by default
        ({"allow_loopback": True}, False, "port"),  # and only ports 80/443 unless allowed
        ({"allow_loopback": True, "deny_hosts": ["127.0.0.1"]}, True, "not allowed"),
    ],
)
async def test_a_refused_url_names_its_param_and_is_never_connected(
    tmp_path: Path, origin: tuple[str, list[str]], inputs: dict[str, object], with_port: bool, words: str
) -> None:
    base, seen = origin
    if with_port:
        inputs = {**inputs, "allowed_ports": [int(base.rsplit(":", 1)[1])]}
    response = await _edit(tmp_path, {"prompt": "x", "images": [{"image_url": f"{base}/a.png"}]}, **inputs)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "images[0].image_url" and words in error["message"], error
    assert seen == []


async def test_metadata_and_private_addresses_are_refused(tmp_path: Path) -> None:
    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/a.png", "http://[::ffff:127.0.0.1]/a.png"):
        response = await _edit(tmp_path, {"prompt": "x", "images": [{"image_url": url}]}, allow_private=True)
        assert response.status_code == 400 and response.json()["error"]["param"] == "images[0].image_url", url
