"""The resource envelope in front of the image handlers, in process over ASGI."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect

from imagegate.config import AuthSettings, Limits, SandboxSettings, Settings
from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.envelope import Envelope
from imagegate.providers.base import CallContext, EditInputs, ProducedImage, ProviderResult
from imagegate.providers.registry import build_registry
from imagegate.web.app import create_app
from tests.helpers import mask_bytes, png_bytes

GEN = "/v1/images/generations"
EDIT = "/v1/images/edits"
MIB = 1024 * 1024


class Gated:
    """A `fal` provider that answers only once `open` is set, and records what it was given."""

    fallback_only = False

    def __init__(self, name: str = "fal") -> None:
        self.name = name
        self.open = asyncio.Event()
        self.started = asyncio.Event()
        self.inputs: list[EditInputs | None] = []

    def available(self) -> bool:
        return True

    def extra_offering(self, model: ModelInfo) -> Offering | None:
        return None

    async def run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        self.inputs.append(inputs)
        self.started.set()
        await self.open.wait()
        width, height = (job.size.dims.width, job.size.dims.height) if job.size.dims else (64, 64)
        return ProviderResult(images=[ProducedImage(png_bytes(width, height), "png")] * job.n, billed=False)

    async def aclose(self) -> None:
        return None


def _settings(tmp_path: Path, sandbox: bool = True, **limits: object) -> Settings:
    return Settings(
        data_dir=tmp_path,
        signing_key="k",
        limits=Limits(**limits),  # type: ignore[arg-type]
        sandbox=SandboxSettings(enabled=sandbox),
    )


@asynccontextmanager
async def _app(settings: Settings, provider: Gated | None = None) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    registry = None
    if provider is not None:
        registry = build_registry(settings)
        registry.register(provider)
    app = create_app(settings, registry=registry)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        yield app, http
    await app.state.runtime.aclose()


def _envelope(app: Starlette) -> Envelope:
    envelope: Envelope = app.state.envelope
    return envelope


async def _until(condition, steps: int = 5000) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


def _busy(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "server_busy" and error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert int(response.headers["retry-after"]) >= 1


async def test_generation_reserves_while_it_runs_and_releases_after(tmp_path):
    gated = Gated()
    async with _app(_settings(tmp_path, sandbox=False), gated) as (app, http):
        task = asyncio.create_task(http.post(GEN, json={"prompt": "x", "model": "flux-1-schnell", "n": 2}))
        await gated.started.wait()
        envelope = _envelope(app)
        assert envelope.in_flight == 1 and envelope.reserved > 0
        gated.open.set()
        response = await task
        assert response.status_code == 200, response.text
        assert envelope.in_flight == 0 and envelope.reserved == 0


async def test_full_queue_answers_503_with_retry_after(tmp_path):
    async with _app(_settings(tmp_path, max_image_requests_in_flight=1, image_queue_length=0)) as (app, http):
        held = await _envelope(app).acquire(1, param="image")
        _busy(await http.post(GEN, json={"prompt": "x", "size": "256x256"}))
        held.release()
        assert (
            await http.post(GEN, json={"prompt": "x", "size": "256x256", "model": "gpt-image-2"})
        ).status_code == 200


async def test_queued_request_waits_then_runs_in_order(tmp_path):
    async with _app(_settings(tmp_path, max_image_requests_in_flight=1)) as (app, http):
        envelope = _envelope(app)
        held = await envelope.acquire(1, param="image")
        body = {"prompt": "x", "size": "256x256", "model": "gpt-image-2"}
        first = asyncio.create_task(http.post(GEN, json={**body, "prompt": "first"}))
        await _until(lambda: envelope.queued == 1)
        second = asyncio.create_task(http.post(GEN, json={**body, "prompt": "second"}))
        await _until(lambda: envelope.queued == 2)
        held.release()
        responses = await asyncio.gather(first, second)
        assert [r.status_code for r in responses] == [200, 200]
        assert responses[0].json()["created"] <= responses[1].json()["created"]
        assert envelope.idle() and envelope.reserved == 0


async def test_wait_that_runs_out_is_503(tmp_path):
    settings = _settings(tmp_path, max_image_requests_in_flight=1, image_queue_wait_seconds=0.01)
    async with _app(settings) as (app, http):
        held = await _envelope(app).acquire(1, param="image")
        _busy(await http.post(GEN, json={"prompt": "x", "size": "256x256", "model": "gpt-image-2"}))
        assert _envelope(app).queued == 0
        held.release()


async def test_generation_bigger_than_the_budget_is_413_naming_size_or_n(tmp_path):
    async with _app(_settings(tmp_path, image_memory_bytes=10 * MIB)) as (app, http):
        response = await http.post(GEN, json={"prompt": "x", "size": "1536x1024"})
        assert response.status_code == 413
        assert response.json()["error"]["param"] == "size"
        assert response.json()["error"]["code"] == "image_memory_exceeded"
        response = await http.post(GEN, json={"prompt": "x", "size": "1024x1024", "n": 4})
        assert response.status_code == 413 and response.json()["error"]["param"] == "n"
        assert _envelope(app).idle()


async def test_edit_bigger_than_the_budget_is_413_naming_image(tmp_path):
    async with _app(_settings(tmp_path, image_memory_bytes=40 * MIB)) as (app, http):
        big = png_bytes(4000, 3000)  # 12 MP: 60 MB to decode, over the 40 MiB budget
        response = await http.post(EDIT, data={"prompt": "x", "size": "1024x1024"}, files={"image": big})
        assert response.status_code == 413 and response.json()["error"]["param"] == "image"
        assert _envelope(app).idle()


async def test_edit_that_fails_to_decode_releases_its_reservation(tmp_path):
    async with _app(_settings(tmp_path)) as (app, http):
        truncated = png_bytes(512, 512, color=(1, 2, 3))
        truncated = truncated[: len(truncated) - 40]
        response = await http.post(EDIT, data={"prompt": "x"}, files={"image": truncated})
        assert response.status_code == 400 and response.json()["error"]["param"] == "image"
        assert _envelope(app).idle() and _envelope(app).reserved == 0


async def test_provider_failure_releases_the_reservation(tmp_path):
    class Failing(Gated):
        async def run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
            raise RuntimeError("upstream went away")

    async with _app(_settings(tmp_path, sandbox=False), Failing()) as (app, http):
        response = await http.post(GEN, json={"prompt": "x", "model": "flux-1-schnell"})
        assert response.status_code >= 500
        assert _envelope(app).idle() and _envelope(app).reserved == 0


async def _asgi(app: Starlette, path: str, body: bytes, disconnect: asyncio.Event, sent: list[dict]) -> None:
    """One raw ASGI request whose client disconnects when `disconnect` is set."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"gw")],
        "client": ("127.0.0.1", 1234),
        "server": ("gw", 80),
        "state": {},
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)


async def test_client_disconnect_releases_the_reservation(tmp_path):
    gated = Gated()
    async with _app(_settings(tmp_path, sandbox=False), gated) as (app, _http):
        disconnect, sent = asyncio.Event(), []
        body = orjson.dumps({"prompt": "x", "model": "flux-1-schnell"})
        task = asyncio.create_task(_asgi(app, GEN, body, disconnect, sent))
        await gated.started.wait()
        assert _envelope(app).in_flight == 1
        disconnect.set()
        await task
        assert _envelope(app).idle() and _envelope(app).reserved == 0


async def test_cancelled_while_queued_leaves_the_queue(tmp_path):
    async with _app(_settings(tmp_path, max_image_requests_in_flight=1)) as (app, _http):
        envelope = _envelope(app)
        held = await envelope.acquire(1, param="image")
        task = asyncio.create_task(_asgi(app, GEN, b'{"prompt": "x"}', asyncio.Event(), []))
        await _until(lambda: envelope.queued == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert envelope.queued == 0
        held.release()
        assert envelope.idle()


async def test_stream_holds_its_reservation_until_the_body_is_sent(tmp_path):
    async with _app(_settings(tmp_path)) as (app, _http):
        envelope = _envelope(app)
        in_flight_while_streaming: list[int] = []
        sent: list[dict] = []

        async def watch() -> None:
            body = orjson.dumps({"prompt": "x", "stream": True, "partial_images": 2, "size": "256x256"})
            await _asgi(app, GEN, body, asyncio.Event(), sent)

        task = asyncio.create_task(watch())
        await _until(lambda: any(m["type"] == "http.response.body" for m in sent))
        in_flight_while_streaming.append(envelope.in_flight)
        await task
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
        assert b"image_generation.completed" in b"".join(m.get("body", b"") for m in sent)
        assert in_flight_while_streaming == [1]
        assert envelope.idle() and envelope.reserved == 0


async def test_stream_whose_client_is_gone_before_the_body_releases(tmp_path):
    async with _app(_settings(tmp_path)) as (app, _http):
        envelope = _envelope(app)
        scope_body = orjson.dumps({"prompt": "x", "stream": True, "size": "256x256"})

        async def refusing_send(message: dict) -> None:
            if message["type"] == "http.response.body":
                raise OSError("connection reset")

        scope_messages = [{"type": "http.request", "body": scope_body, "more_body": False}]

        async def receive() -> dict:
            if scope_messages:
                return scope_messages.pop(0)
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": GEN,
            "raw_path": GEN.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1234),
            "server": ("gw", 80),
            "state": {},
        }
        with pytest.raises(ClientDisconnect):
            await app(scope, receive, refusing_send)
        assert envelope.idle() and envelope.reserved == 0
        rows, _ = await app.state.runtime.ledger.list_requests(None)
        assert [row["status"] for row in rows] == ["cancelled"]  # settled, not left pending


async def test_large_inputs_are_reduced_on_load_and_the_mask_follows(tmp_path):
    gated = Gated("openai")
    gated.open.set()
    settings = _settings(tmp_path, sandbox=False, max_decoded_input_pixels=1_000_000)
    async with _app(settings, gated) as (app, http):
        image, mask = png_bytes(2000, 1500), mask_bytes(2000, 1500, (0, 0, 1000, 750))
        response = await http.post(
            EDIT,
            data={"prompt": "x", "model": "gpt-image-1.5", "size": "1024x1024"},
            files={"image": image, "mask": mask},
        )
        assert response.status_code == 200, response.text
        inputs = gated.inputs[0]
        assert inputs is not None and inputs.mask is not None
        assert inputs.images[0].image.size == (1000, 750)
        assert inputs.mask.image.size == (1000, 750) and inputs.mask.image.mode == "RGBA"
        assert _envelope(app).idle()


async def test_anonymous_playground_edit_goes_through_the_envelope(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        signing_key="k",
        auth=AuthSettings(mode="keys"),
        limits=Limits(max_image_requests_in_flight=1, image_queue_length=0),
    )
    async with _app(settings) as (app, http):
        held = await _envelope(app).acquire(1, param="image")
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, "PNG")
        response = await http.post(
            "/playground/api/images/edits", data={"prompt": "x"}, files={"image": buffer.getvalue()}
        )
        _busy(response)
        held.release()
        response = await http.post(
            "/playground/api/images/edits",
            data={"prompt": "x", "size": "1024x1024"},
            files={"image": buffer.getvalue()},
        )
        assert response.status_code == 200, response.text
        assert _envelope(app).idle()
