"""The playground page and its anonymous front door to the image handlers, in process."""

from __future__ import annotations

import asyncio
import functools
import io
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from PIL import Image

from imagegate.config import AuthSettings, PlaygroundSettings, Settings
from imagegate.web.app import create_app

GEN = "/playground/api/images/generations"
EDIT = "/playground/api/images/edits"


def in_thread(test: Callable[..., Coroutine[object, object, None]]) -> Callable[..., None]:
    """Runs an async test on its own loop in a worker thread: robust to a session where the sync
    Playwright fixtures (tests/browser) already own the main thread's event loop."""

    @functools.wraps(test)
    def run(*args: object, **kwargs: object) -> None:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, test(*args, **kwargs)).result()

    return run


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    playground = overrides.pop("playground", PlaygroundSettings(anonymous_images_per_ip_per_day=2))
    return Settings(data_dir=tmp_path, signing_key="k", playground=playground, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def _app_clients(settings: Settings) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """One app; a client per caller IP (each client has its own address)."""
    app = create_app(settings)
    opened: list[httpx.AsyncClient] = []

    def client(ip: str = "10.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(ip, 40000))
        http = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        opened.append(http)
        return http

    try:
        yield client
    finally:
        for http in opened:
            await http.aclose()
        await app.state.runtime.aclose()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@in_thread
async def test_page_renders_without_external_urls(tmp_path):
    async with _app_clients(_settings(tmp_path)) as client:
        response = await client().get("/playground")
    assert response.status_code == 200
    html = response.text
    for element_id in ("prompt", "model", "mode-generate", "mode-edit", "generate", "cancel", "results", "alert"):
        assert f'id="{element_id}"' in html
    assert "http://" not in html and "https://" not in html
    assert 'href="/static/playground.css"' in html and 'src="/static/playground.js"' in html
    assert 'data-max-upload="20971520"' in html
    assert 'id="api-key"' not in html  # open mode: no key field
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "<script>" not in html and "style=" not in html


@in_thread
async def test_static_assets_are_served(tmp_path):
    async with _app_clients(_settings(tmp_path)) as client:
        js = await client().get("/static/playground.js")
        css = await client().get("/static/playground.css")
    assert js.status_code == 200 and "playground/api/images" in js.text
    assert css.status_code == 200 and "@media" in css.text
    assert not re.search(r"https?://", js.text + css.text)


@in_thread
async def test_anonymous_generation_works(tmp_path):
    async with _app_clients(_settings(tmp_path)) as client:
        response = await client().post(GEN, json={"prompt": "a fox", "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"][0]["b64_json"]
    assert body["imagegate"]["provider"] == "sandbox"


@in_thread
async def test_anonymous_edit_works_and_counts(tmp_path):
    async with _app_clients(_settings(tmp_path)) as client:
        http = client()
        data = {"prompt": "make it red", "response_format": "b64_json", "n": "2"}
        response = await http.post(EDIT, data=data, files=[("image[]", ("a.png", _png(), "image/png"))])
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 2
        # The cap is 2 images per IP: the two edited images used it up.
        refused = await http.post(GEN, json={"prompt": "one more"})
    assert refused.status_code == 429


@in_thread
async def test_per_ip_cap_returns_429_with_reset(tmp_path):
    async with _app_clients(_settings(tmp_path)) as client:
        http = client("10.0.0.7")
        assert (await http.post(GEN, json={"prompt": "one", "n": 2})).status_code == 200
        refused = await http.post(GEN, json={"prompt": "three"})
        other_ip = await client("10.0.0.8").post(GEN, json={"prompt": "elsewhere"})
    assert refused.status_code == 429
    retry = int(refused.headers["retry-after"])
    assert 1 <= retry <= 86400
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert "anonymous playground cap" in error["message"].lower()
    assert "per IP address" in error["message"] and "resets at 00:00 UTC" in error["message"]
    assert other_ip.status_code == 200


@in_thread
async def test_dry_run_and_failed_requests_do_not_use_the_cap(tmp_path):
    async with _app_clients(_settings(tmp_path)) as client:
        http = client()
        for _ in range(3):
            estimate = await http.post(GEN, json={"prompt": "x", "n": 2, "dry_run": True})
            assert estimate.status_code == 200, estimate.text
        bad = await http.post(GEN, json={"prompt": "x", "n": 2, "size": "99999x1"})
        assert bad.status_code == 400
        ok = await http.post(GEN, json={"prompt": "x", "n": 2})
    assert ok.status_code == 200, ok.text


@in_thread
async def test_global_cap(tmp_path):
    caps = PlaygroundSettings(anonymous_images_per_ip_per_day=10, anonymous_images_per_day=3)
    async with _app_clients(_settings(tmp_path, playground=caps)) as client:
        assert (await client("10.1.0.1").post(GEN, json={"prompt": "a", "n": 2})).status_code == 200
        assert (await client("10.1.0.2").post(GEN, json={"prompt": "b"})).status_code == 200
        refused = await client("10.1.0.3").post(GEN, json={"prompt": "c"})
        # The refused request's per-IP count was given back: that IP still has its full allowance.
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert "all anonymous users" in message and "00:00 UTC" in message
    assert int(refused.headers["retry-after"]) >= 1


@in_thread
async def test_keys_mode_playground_is_anonymous_but_v1_needs_a_key(tmp_path):
    settings = _settings(tmp_path, auth=AuthSettings(mode="keys"))
    async with _app_clients(settings) as client:
        http = client()
        page = await http.get("/playground")
        playground = await http.post(GEN, json={"prompt": "anonymous"})
        v1 = await http.post("/v1/images/generations", json={"prompt": "no key"})
        bad_key = await http.post(GEN, json={"prompt": "x"}, headers={"authorization": "Bearer nope"})
    assert 'id="api-key"' in page.text
    assert playground.status_code == 200, playground.text
    assert v1.status_code == 401
    assert bad_key.status_code == 401  # a key that is sent is checked like on /v1


@in_thread
async def test_disabled_playground_is_404(tmp_path):
    settings = _settings(tmp_path, playground=PlaygroundSettings(enabled=False))
    async with _app_clients(settings) as client:
        http = client()
        page = await http.get("/playground")
        api = await http.post(GEN, json={"prompt": "x"})
        edit = await http.post(EDIT, data={"prompt": "x"}, files=[("image[]", ("a.png", _png(), "image/png"))])
    assert (page.status_code, api.status_code, edit.status_code) == (404, 404, 404)


def test_playground_edits_get_the_multipart_body_cap(tmp_path):
    """A 3 MB PNG is over the JSON cap (1 MiB) but within the multipart cap: it must be accepted."""
    import io
    import random

    from PIL import Image
    from starlette.testclient import TestClient

    from imagegate.config import Settings
    from imagegate.web.app import create_app

    rng = random.Random(0)
    image = Image.frombytes("RGB", (1024, 1024), bytes(rng.getrandbits(8) for _ in range(1024 * 1024 * 3)))
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=0)
    assert buf.tell() > 2 * 1024 * 1024
    with TestClient(create_app(Settings(data_dir=tmp_path, signing_key="k"))) as client:
        response = client.post(
            "/playground/api/images/edits",
            data={"prompt": "big", "response_format": "b64_json"},
            files={"image": ("big.png", buf.getvalue(), "image/png")},
        )
    assert response.status_code == 200, response.text[:300]
