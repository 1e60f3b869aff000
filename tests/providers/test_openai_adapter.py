"""The `openai` provider against the fake OpenAI Images API (tests/fakes/openai.py)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from imagegate.catalog.loader import load_catalog
from imagegate.config import ProviderSettings, Settings
from imagegate.core.normalize import plan_request
from imagegate.core.types import Dimensions, ProviderJob, PublicRequest, SizeChoice, SizeRequest
from imagegate.errors import (
    InvalidRequestError,
    ModerationBlockedError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamMalformedError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from imagegate.imaging.probe import DecodedImage
from imagegate.providers import openai as openai_provider
from imagegate.providers.base import CallContext, EditInputs, PartialImage, Provider, StreamDone, StreamEvent
from imagegate.providers.openai import DEFAULT_BASE_URL, OpenAIProvider
from tests.fakes.faults import Fault
from tests.fakes.images import data_uri, make_image
from tests.fakes.openai import FakeOpenAI

KEY = "sk-fake-adapter-secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI(key=KEY)
    await server.start()
    yield server
    await server.stop()


def create(settings: Settings) -> OpenAIProvider | None:
    """The `openai` instance the gateway would build from `settings`."""
    return openai_provider.create("openai", settings.provider("openai"), settings)


def _settings(tmp_path: Path, base_url: str | None, key: str | None = KEY, enabled: bool = True) -> Settings:
    provider = ProviderSettings(base_url=base_url, api_key=key, enabled=enabled, api_key_env="IMAGEGATE_TEST_NO_KEY")
    return Settings(providers={"openai": provider}, data_dir=tmp_path)


@pytest.fixture
async def provider(fake: FakeOpenAI, tmp_path: Path) -> AsyncIterator[OpenAIProvider]:
    built = create(_settings(tmp_path, fake.base_url))
    assert built is not None
    yield built
    await built.aclose()


def _job(
    mode: str = "text-to-image",
    *,
    n: int = 1,
    size: tuple[int, int] | None = (1024, 1024),
    fmt: str = "png",
    quality: str | None = "low",
) -> ProviderJob:
    choice = SizeChoice(dims=Dimensions(*size)) if size else SizeChoice(dims=None, auto=True)
    return ProviderJob(
        mode=mode,  # type: ignore[arg-type]
        provider_model="gpt-image-1",
        prompt="a red fox in the snow",
        size=choice,
        n=n,
        output_format=fmt,
        output_compression=None,
        quality=quality,
        background=None,
    )


def _ctx(seconds: float = 30.0) -> CallContext:
    return CallContext(request_id="t", deadline=asyncio.get_running_loop().time() + seconds)


def _decoded(width: int, height: int, seed: int = 0, mode: str = "RGB") -> DecodedImage:
    image = Image.open(io.BytesIO(make_image(width, height, "png", seed=seed))).convert(mode)
    return DecodedImage(image=image, source_format="png", width=width, height=height)


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- the provider contract -------------------------------------------------------------------------


async def test_factory_and_protocol(tmp_path: Path, fake: FakeOpenAI) -> None:
    built = create(_settings(tmp_path, fake.base_url))
    assert isinstance(built, Provider) and built.available() and not built.fallback_only
    assert built.name == "openai" and built.extra_offering(load_catalog().get("gpt-image-1")) is None  # type: ignore[arg-type]
    assert create(_settings(tmp_path, fake.base_url, enabled=False)) is None
    no_key = create(_settings(tmp_path, fake.base_url, key=None))
    assert no_key is not None and not no_key.available()
    default = create(Settings(data_dir=tmp_path, providers={"openai": ProviderSettings(api_key_env="NOPE_NOT_SET")}))
    assert default is not None and default._endpoint.url("gpt-image-1", "edits") == f"{DEFAULT_BASE_URL}/images/edits"
    assert not default.available()
    with pytest.raises(UpstreamAuthError):
        await no_key.run(_job(), None, _ctx())
    await built.aclose()


# --- generations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "pil"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
async def test_generation_formats_and_sizes(provider: OpenAIProvider, fmt: str, pil: str) -> None:
    result = await provider.run(_job(size=(1536, 1024), fmt=fmt), None, _ctx())
    assert len(result.images) == 1 and result.images[0].format == fmt
    image = _open(result.images[0].data)
    assert (image.format, image.size) == (pil, (1536, 1024))
    assert result.quality == "low" and result.background == "opaque" and result.billed
    assert result.usage is not None and result.usage["output_tokens"] == 408
    assert result.upstream_request_id and result.upstream_request_id.startswith("req_")


async def test_generation_request_body(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    job = dataclasses.replace(_job(n=3, size=None, quality="medium"), background="opaque", output_compression=None)
    result = await provider.run(job, None, _ctx())
    assert len(result.images) == 3 and all(_open(i.data).size == (1024, 1024) for i in result.images)
    assert result.usage is not None and result.usage["output_tokens"] == 3 * 1056
    sent = fake.requests[-1]
    assert sent.path == "/v1/images/generations" and sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "gpt-image-1",
        "prompt": "a red fox in the snow",
        "n": 3,
        "size": "auto",
        "quality": "medium",
        "output_format": "png",
        "background": "opaque",
    }


async def test_options_and_extra_pass_through_but_never_override(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    job = dataclasses.replace(
        _job(fmt="webp"),
        output_compression=70,
        options={"moderation": "low", "user": "user-42"},
        extra={"model": "dall-e-2", "prompt": "evil", "n": 9, "response_format": "url", "custom_knob": 3},
    )
    await provider.run(job, None, _ctx())
    sent = fake.requests[-1].json
    assert (sent["moderation"], sent["user"], sent["custom_knob"]) == ("low", "user-42", 3)
    assert (sent["model"], sent["prompt"], sent["n"]) == ("gpt-image-1", "a red fox in the snow", 1)
    assert sent["output_compression"] == 70 and "response_format" not in sent


async def test_plan_from_catalog_runs(provider: OpenAIProvider) -> None:
    offering = load_catalog().get("gpt-image-1").offering("openai")  # type: ignore[union-attr]
    assert offering is not None
    request = PublicRequest(
        mode="text-to-image", prompt="a lighthouse", n=2, size=SizeRequest(dims=Dimensions(1024, 1536))
    )
    plan = plan_request(request, offering)
    result = await provider.run(plan.jobs[0], None, _ctx())
    assert len(result.images) == 2 and _open(result.images[0].data).size == (1024, 1536)


async def test_dalle3_url_results_are_fetched(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    job = dataclasses.replace(_job(quality="hd"), provider_model="dall-e-3")
    result = await provider.run(job, None, _ctx())
    assert fake.requests[-1].json["response_format"] == "b64_json" and "output_format" not in fake.requests[-1].json
    assert result.images[0].revised_prompt and _open(result.images[0].data).size == (1024, 1024)
    # A reply with `url` items (OpenAI's dall-e default) is downloaded.
    session = aiohttp.ClientSession()
    try:
        async with session.post(
            f"{fake.base_url}/images/generations",
            json={"model": "dall-e-3", "prompt": "cat"},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as reply:
            url = (await reply.json())["data"][0]["url"]
    finally:
        await session.close()
    assert url.startswith(fake.base_url.removesuffix("/v1") + "/files/")
    image = await provider._image({"url": url, "revised_prompt": "r"}, "png", _ctx())
    assert image.revised_prompt == "r" and _open(image.data).size == (1024, 1024)


# --- edits ---------------------------------------------------------------------------------------------


async def test_edit_one_image_is_a_single_image_part(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    job = dataclasses.replace(_job("image-edit", n=2), options={"moderation": "low", "input_fidelity": "high"})
    result = await provider.run(job, EditInputs(images=[_decoded(512, 512)]), _ctx())
    assert len(result.images) == 2 and _open(result.images[0].data).size == (1024, 1024)
    sent = fake.requests[-1]
    assert sent.path == "/v1/images/edits" and sent.json is None
    assert [(name, ctype) for name, ctype, _ in sent.files] == [("image", "image/png")]
    assert sent.fields["n"] == "2" and sent.fields["size"] == "1024x1024" and sent.fields["quality"] == "low"
    assert sent.fields["input_fidelity"] == "high" and "moderation" not in sent.fields
    assert result.usage is not None and result.usage["input_tokens_details"]["image_tokens"] > 0  # type: ignore[index]


async def test_edit_ten_images_and_mask(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    images = [_decoded(512, 512, seed=i) for i in range(10)]
    mask = _decoded(512, 512, seed=99, mode="RGBA")
    job = _job("image-edit", size=(1536, 1024), fmt="jpeg")
    result = await provider.run(job, EditInputs(images=images, mask=mask), _ctx())
    assert _open(result.images[0].data).format == "JPEG" and _open(result.images[0].data).size == (1536, 1024)
    names = [name for name, _, _ in fake.requests[-1].files]
    assert names == ["image[]"] * 10 + ["mask"]
    assert all(ctype == "image/png" and size > 0 for _, ctype, size in fake.requests[-1].files)
    assert fake.requests[-1].fields["output_format"] == "jpeg"


async def test_edit_without_images_is_refused(provider: OpenAIProvider) -> None:
    with pytest.raises(InvalidRequestError):
        await provider.run(_job("image-edit"), EditInputs(images=[]), _ctx())


async def test_fake_rejects_mismatched_mask(provider: OpenAIProvider) -> None:
    inputs = EditInputs(images=[_decoded(512, 512)], mask=_decoded(256, 256, mode="RGBA"))
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(_job("image-edit"), inputs, _ctx())
    assert caught.value.param == "mask" and caught.value.message.startswith("openai: ")


# --- error translation -----------------------------------------------------------------------------------


async def test_bad_size_is_invalid_request(provider: OpenAIProvider) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(_job(size=(512, 512)), None, _ctx())
    assert caught.value.param == "size" and caught.value.status == 400
    assert caught.value.message.startswith("openai: Invalid value: '512x512'. Supported values are:")


async def test_moderation_blocked(provider: OpenAIProvider) -> None:
    job = dataclasses.replace(_job(), prompt="please BLOCKED_BY_SAFETY")
    with pytest.raises(ModerationBlockedError) as caught:
        await provider.run(job, None, _ctx())
    assert caught.value.code == "moderation_blocked"


async def test_unauthorized_never_leaks_the_key(fake: FakeOpenAI, tmp_path: Path) -> None:
    wrong = create(_settings(tmp_path, fake.base_url, key="sk-wrong-but-secret-9999"))
    assert wrong is not None
    with pytest.raises(UpstreamAuthError) as caught:
        await wrong.run(_job(), None, _ctx())
    await wrong.aclose()
    error = caught.value
    assert error.disable_provider and error.retryable and error.upstream_status == 401
    assert "9999" not in error.message and "sk-" not in error.message and KEY not in error.message


async def test_forbidden_is_auth_error(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    fake.script.push(Fault("status", status=403))
    with pytest.raises(UpstreamAuthError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.message == "openai rejected the gateway's credentials (HTTP 403)"


@pytest.mark.parametrize(
    ("headers", "expected"), [({"retry-after": "2"}, 2.0), ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5)]
)
async def test_rate_limit_retry_after(
    provider: OpenAIProvider, fake: FakeOpenAI, headers: dict[str, str], expected: float
) -> None:
    fake.script.push(Fault("status", status=429, headers=headers))
    with pytest.raises(UpstreamRateLimitError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.retry_after == expected and caught.value.retryable and not caught.value.disable_provider


async def test_insufficient_quota_disables_provider(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    body = {"error": {"message": "quota", "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
    fake.script.push(Fault("status", status=429, body=body))
    with pytest.raises(UpstreamRateLimitError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.disable_provider


@pytest.mark.parametrize("status", [404, 408, 409, 500, 502, 503])
async def test_server_errors_are_retryable(provider: OpenAIProvider, fake: FakeOpenAI, status: int) -> None:
    fake.script.push(Fault("status", status=status, headers={"retry-after": "1"}))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert type(error) is UpstreamError and error.retryable and error.upstream_status == status
    assert error.retry_after == 1.0 and not error.may_have_charged


async def test_should_retry_false_is_honoured(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    fake.script.push(Fault("status", status=500, headers={"x-should-retry": "false"}))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(), None, _ctx())
    assert not caught.value.retryable


async def test_reset_connection(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    fake.script.push(Fault("reset"))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.retryable and caught.value.code == "upstream_connection_reset"


@pytest.mark.parametrize("kind", ["truncate", "malformed", "error_200"])
async def test_unusable_200_is_malformed(provider: OpenAIProvider, fake: FakeOpenAI, kind: str) -> None:
    fake.script.push(Fault(kind))  # type: ignore[arg-type]
    with pytest.raises(UpstreamMalformedError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.may_have_charged and caught.value.retryable


@pytest.mark.parametrize(
    "body",
    [{"created": 1, "data": []}, {"created": 1}, {"created": 1, "data": [{"b64_json": "@@not base64@@"}]}, [1, 2]],
)
async def test_unusable_data_is_malformed(provider: OpenAIProvider, fake: FakeOpenAI, body: object) -> None:
    fake.script.push(Fault("status", status=200, body=body))
    with pytest.raises(UpstreamMalformedError):
        await provider.run(_job(), None, _ctx())


async def test_deadline_cuts_a_slow_upstream(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    fake.script.push(Fault("latency", delay=5.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeoutError):
        await provider.run(_job(), None, _ctx(0.5))
    assert loop.time() - started < 2.0


async def test_plain_http_base_url_and_unreachable_host(tmp_path: Path) -> None:
    # The fake itself is plain http; a closed port is a connection failure, retryable and unbilled.
    probe = FakeOpenAI(key=KEY)
    url = await probe.start()
    await probe.stop()
    dead = create(_settings(tmp_path, url))
    assert dead is not None
    with pytest.raises(UpstreamError) as caught:
        await dead.run(_job(), None, _ctx())
    await dead.aclose()
    assert caught.value.retryable and not caught.value.may_have_charged and caught.value.code == "upstream_unreachable"


# --- streaming ---------------------------------------------------------------------------------------------


async def _collect(stream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in stream]


async def test_stream_generation_partials_then_done(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    job = dataclasses.replace(_job(size=(1024, 1536), fmt="webp"), partial_images=2)
    events = await _collect(provider.stream(job, None, _ctx()))
    assert [type(e) for e in events] == [PartialImage, PartialImage, StreamDone]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]  # type: ignore[union-attr]
    done = events[-1]
    assert isinstance(done, StreamDone) and done.result.usage is not None and done.result.usage["output_tokens"] > 0
    assert _open(done.result.images[0].data).size == (1024, 1536) and done.result.images[0].format == "webp"
    assert done.result.quality == "low" and done.result.upstream_request_id
    sent = fake.requests[-1].json
    assert sent["stream"] is True and sent["partial_images"] == 2


async def test_stream_edit(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    job = dataclasses.replace(_job("image-edit"), partial_images=1)
    events = await _collect(provider.stream(job, EditInputs(images=[_decoded(256, 256)]), _ctx()))
    assert [type(e) for e in events] == [PartialImage, StreamDone]
    fields = fake.requests[-1].fields
    assert fields["stream"] == "true" and fields["partial_images"] == "1"


async def test_stream_without_partials(provider: OpenAIProvider) -> None:
    events = await _collect(provider.stream(_job(), None, _ctx()))
    assert len(events) == 1 and isinstance(events[0], StreamDone)


async def test_stream_errors(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    fake.script.push(Fault("status", status=429, headers={"retry-after": "3"}))
    with pytest.raises(UpstreamRateLimitError) as limited:
        await _collect(provider.stream(_job(), None, _ctx()))
    assert limited.value.retry_after == 3.0
    fake.script.push(Fault("error_200"))  # an SSE `error` event
    with pytest.raises(UpstreamError) as failed:
        await _collect(provider.stream(_job(), None, _ctx()))
    assert failed.value.may_have_charged
    with pytest.raises(ModerationBlockedError):
        await _collect(provider.stream(dataclasses.replace(_job(), prompt="BLOCKED_BY_SAFETY"), None, _ctx()))
    fake.script.push(Fault("reset"))
    with pytest.raises(UpstreamError):
        await _collect(provider.stream(_job(), None, _ctx()))
    fake.script.push(Fault("latency", delay=5.0))
    with pytest.raises(UpstreamTimeoutError):
        await _collect(provider.stream(_job(), None, _ctx(0.3)))


async def test_stream_ending_without_completed_is_malformed(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    fake.script.push(Fault("truncate"))  # a JSON body, cut short: not an event stream
    with pytest.raises(UpstreamMalformedError):
        await _collect(provider.stream(_job(), None, _ctx()))
    from imagegate.providers.openai import _event

    assert _event(_job(), "image_generation.partial_image", b"[DONE]", None) is None
    with pytest.raises(UpstreamMalformedError):
        _event(_job(), "image_generation.completed", b"{not json", None)


# --- the fake itself ------------------------------------------------------------------------------------------


async def test_fake_checks_key_and_serves_control_routes(fake: FakeOpenAI) -> None:
    root = fake.base_url.removesuffix("/v1")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{fake.base_url}/images/generations",
            json={"model": "gpt-image-1", "prompt": "x"},
            headers={"Authorization": "Bearer sk-wrong"},
        ) as reply:
            assert reply.status == 401
            assert (await reply.json())["error"]["code"] == "invalid_api_key"
        async with session.post(f"{root}/_fake/faults", json=[{"kind": "status", "status": 503, "times": 2}]) as reply:
            assert (await reply.json())["queued"] == 2
        for _ in range(2):
            async with session.post(
                f"{fake.base_url}/images/generations",
                json={"model": "gpt-image-1", "prompt": "x"},
                headers={"Authorization": f"Bearer {KEY}"},
            ) as reply:
                assert reply.status == 503 and reply.headers["x-request-id"].startswith("req_")
        async with session.get(f"{root}/_fake/requests") as reply:
            recorded = await reply.json()
            assert len(recorded) == 3 and recorded[0]["path"] == "/v1/images/generations"
        async with session.post(f"{root}/_fake/clear") as reply:
            assert reply.status == 200
    assert fake.requests == [] and not fake.script.queue


async def test_fake_json_edit_form(fake: FakeOpenAI) -> None:
    image = data_uri(make_image(320, 240, "jpeg"), "jpeg")
    body = {"model": "gpt-image-1", "prompt": "x", "images": [{"image_url": image}], "size": "1024x1536"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake.base_url}/images/edits", json=body, headers={"Authorization": f"Bearer {KEY}"}) as reply,
    ):
        assert reply.status == 200
        result = await reply.json()
    assert result["size"] == "1024x1536" and result["usage"]["input_tokens_details"]["image_tokens"] > 0


def test_make_image_is_exact_and_cached() -> None:
    for fmt, pil in (("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")):
        image = _open(make_image(333, 77, fmt, seed=4))
        assert (image.format, image.size) == (pil, (333, 77))
    assert make_image(64, 64, "png", transparent=True) is make_image(64, 64, "png", transparent=True)
    assert _open(make_image(64, 64, "png", transparent=True)).mode == "RGBA"
    assert data_uri(b"abc", "png") == "data:image/png;base64,YWJj"


async def test_stream_abandoned_early_and_json_reply(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    stream = provider.stream(dataclasses.replace(_job(), partial_images=3), None, _ctx())
    assert isinstance(await stream.__anext__(), PartialImage)
    await stream.aclose()  # type: ignore[attr-defined]
    whole = {"created": 1, "data": [{"b64_json": base64.b64encode(make_image(64, 64)).decode()}], "quality": "high"}
    fake.script.push(Fault("status", status=200, body=whole))  # an upstream that ignored `stream`
    events = await _collect(provider.stream(_job(), None, _ctx()))
    assert len(events) == 1 and isinstance(events[0], StreamDone) and events[0].result.quality == "high"
    assert len(await _collect(provider.stream(_job(), None, _ctx()))) == 1  # the connection pool still works
