"""The `fal` provider against the fake fal.ai (tests/fakes/fal.py), with jobs planned from the catalog."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pybase64
import pytest
from PIL import Image

from imagegate.catalog.loader import load_catalog
from imagegate.config import Settings
from imagegate.core.normalize import plan_request
from imagegate.core.types import Dimensions, ProviderJob, SizeChoice
from imagegate.errors import (
    InvalidRequestError,
    ModerationBlockedError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamMalformedError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from imagegate.imaging.probe import ImageLimits, decode_image
from imagegate.providers import fal
from imagegate.providers.base import CallContext, EditInputs, Provider
from imagegate.providers.fal import DEFAULT_QUEUE_URL, DEFAULT_RUN_URL, FalProvider, FalSettings
from imagegate.schemas import EditParams, GenerateParams, parse_params, to_public
from tests.fakes.fal import FakeFal, kontext_dims
from tests.fakes.faults import Fault
from tests.fakes.images import make_image

KEY = "fal-key-id:fal-secret"
CATALOG = load_catalog()


@pytest.fixture
async def fake() -> AsyncIterator[FakeFal]:
    server = FakeFal(key=KEY, job_seconds=0.05)
    await server.start()
    yield server
    await server.stop()


def create(settings: Settings) -> FalProvider | None:
    """The `fal` instance the gateway would build from `settings`."""
    return fal.create("fal", settings.provider("fal"), settings)  # type: ignore[arg-type]


def _settings(
    tmp_path: Path,
    fake: FakeFal,
    *,
    key: str | None = KEY,
    mode: str | None = None,
    enabled: bool = True,
) -> Settings:
    section = FalSettings(
        base_url=fake.run_url,
        queue_url=fake.queue_url,
        api_key=key,
        api_key_env="IMAGEGATE_TEST_NO_FAL_KEY",
        mode=mode,  # type: ignore[arg-type]
        enabled=enabled,
        poll_interval_seconds=0.01,
        poll_max_interval_seconds=0.05,
    )
    return Settings(data_dir=tmp_path, providers={"fal": section})


@pytest.fixture
async def provider(fake: FakeFal, tmp_path: Path) -> AsyncIterator[FalProvider]:
    built = create(_settings(tmp_path, fake))
    assert built is not None
    yield built
    await built.aclose()


@pytest.fixture
async def sync_provider(fake: FakeFal, tmp_path: Path) -> AsyncIterator[FalProvider]:
    built = create(_settings(tmp_path, fake, mode="sync"))
    assert built is not None
    yield built
    await built.aclose()


def _job(model: str, params: dict[str, Any], mode: str = "text-to-image", images: int = 0) -> ProviderJob:
    """The first job the real normalizer plans for the model's fal offering."""
    info = CATALOG.get(model)
    assert info is not None
    offering = info.offering("fal")
    assert offering is not None
    cls = EditParams if mode == "image-edit" else GenerateParams
    parsed = parse_params(cls, {"prompt": "a lighthouse at dusk", **params})
    return plan_request(to_public(parsed, mode, images, False), offering).jobs[0]  # type: ignore[arg-type]


def _ctx(seconds: float = 30.0) -> CallContext:
    return CallContext(request_id="t", deadline=asyncio.get_running_loop().time() + seconds)


def _inputs(count: int, size: tuple[int, int] = (256, 256)) -> EditInputs:
    return EditInputs(
        images=[decode_image(make_image(*size, "png", seed=i), "image", ImageLimits()) for i in range(count)]
    )


def _dims(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _api(fake: FakeFal) -> list[Any]:
    return [r for r in fake.requests if not r.path.startswith(("/files/", "/_fake"))]


def _submits(fake: FakeFal) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST"]


# --- happy paths --------------------------------------------------------------------------------


def test_provider_protocol_and_defaults(tmp_path: Path) -> None:
    built = create(Settings(data_dir=tmp_path, providers={"fal": FalSettings(api_key=KEY)}))
    assert isinstance(built, Provider)
    assert built.name == "fal" and built.fallback_only is False
    assert built.config.run_url == DEFAULT_RUN_URL and built.config.queue_url == DEFAULT_QUEUE_URL
    assert built.config.mode == "queue"
    assert built.available()
    assert built.extra_offering(CATALOG.get("gpt-image-1")) is None  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError):
        built.stream(_job("flux-1-schnell", {}), None, CallContext("t", 0.0))


async def test_gpt_image_text_to_image_via_queue(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("gpt-image-1", {"size": "1536x1024", "quality": "low", "output_format": "webp"})
    result = await provider.run(job, None, _ctx())
    assert len(result.images) == 1
    assert _dims(result.images[0].data) == (1536, 1024)
    assert result.images[0].format == "webp"
    assert result.quality == "low" and result.billed is True and result.usage is None
    assert isinstance(result.metadata["inference_time"], float)

    submit, *polls = _api(fake)
    assert (submit.method, submit.path) == ("POST", "/queue/fal-ai/gpt-image-1/text-to-image")
    assert submit.json == {
        "prompt": "a lighthouse at dusk",
        "image_size": "1536x1024",
        "num_images": 1,
        "output_format": "webp",
        "quality": "low",
    }
    request_id = result.upstream_request_id
    assert request_id in fake.jobs
    base = f"/queue/fal-ai/gpt-image-1/requests/{request_id}"
    assert {(r.method, r.path) for r in polls} == {("GET", f"{base}/status"), ("GET", base)}
    assert (polls[-1].method, polls[-1].path) == ("GET", base)
    assert all(r.headers["authorization"] == f"Key {KEY}" for r in _api(fake))
    downloads = [r for r in fake.requests if r.path.startswith("/files/")]
    assert len(downloads) == 1 and "authorization" not in downloads[0].headers
    assert not fake.cancelled


async def test_gpt_image_auto_size(provider: FalProvider, fake: FakeFal) -> None:
    result = await provider.run(_job("gpt-image-1", {"size": "auto"}), None, _ctx())
    assert _submits(fake)[0].json["image_size"] == "auto"
    assert result.images[0].format == "png"


async def test_gpt_image_edit_sends_three_data_uris(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("gpt-image-1", {"size": "1024x1024", "input_fidelity": "low"}, mode="image-edit", images=3)
    result = await provider.run(job, _inputs(3), _ctx())
    assert _dims(result.images[0].data) == (1024, 1024)
    submit = _submits(fake)[0]
    assert submit.path == "/queue/fal-ai/gpt-image-1/edit-image"
    urls = submit.json["image_urls"]
    assert len(urls) == 3 and all(url.startswith("data:image/png;base64,") for url in urls)
    assert _dims(pybase64.b64decode(urls[2].partition(",")[2])) == (256, 256)
    assert submit.json["input_fidelity"] == "low"
    assert "mask" not in submit.json and "mask_image_url" not in submit.json


async def test_edit_with_mask_is_refused_before_any_call(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("gpt-image-1", {}, mode="image-edit", images=1)
    inputs = _inputs(1)
    masked = EditInputs(images=inputs.images, mask=inputs.images[0])
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(job, masked, _ctx())
    assert caught.value.param == "mask"
    assert fake.requests == []


async def test_flux_schnell_preset_and_n(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("flux-1-schnell", {"size": "1024x576", "n": 2, "seed": 42})
    result = await provider.run(job, None, _ctx())
    body = _submits(fake)[0].json
    assert body["image_size"] == "landscape_16_9" and body["num_images"] == 2 and body["seed"] == 42
    assert body["output_format"] == "jpeg"
    assert [(_dims(i.data), i.format) for i in result.images] == [((1024, 576), "jpeg")] * 2
    assert result.metadata["seed"] == 42
    assert _submits(fake)[0].path == "/queue/fal-ai/flux/schnell"
    assert any(r.path.startswith("/queue/fal-ai/flux/requests/") for r in fake.requests)


async def test_flux_dev_custom_size(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("flux-1-dev", {"size": "1280x720", "output_format": "png"})
    assert job.size.custom
    result = await provider.run(job, None, _ctx())
    assert _submits(fake)[0].json["image_size"] == {"width": 1280, "height": 720}
    assert _dims(result.images[0].data) == (1280, 720)
    assert result.images[0].format == "png"


async def test_kontext_aspect_ratio_text_to_image(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("flux-kontext-pro", {"aspect_ratio": "16:9"})
    result = await provider.run(job, None, _ctx())
    body = _submits(fake)[0].json
    assert body["aspect_ratio"] == "16:9" and "image_size" not in body
    assert _submits(fake)[0].path == "/queue/fal-ai/flux-pro/kontext/text-to-image"
    assert job.size.dims is not None
    assert _dims(result.images[0].data) == (job.size.dims.width, job.size.dims.height) == kontext_dims("16:9")


async def test_kontext_edit_sends_one_image_url(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("flux-kontext-pro", {"size": "1:1"}, mode="image-edit", images=1)
    await provider.run(job, _inputs(1), _ctx())
    body = _submits(fake)[0].json
    assert _submits(fake)[0].path == "/queue/fal-ai/flux-pro/kontext"
    assert body["image_url"].startswith("data:image/png;base64,") and "image_urls" not in body
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(job, _inputs(2), _ctx())
    assert caught.value.param == "image"


async def test_sync_mode(sync_provider: FalProvider, fake: FakeFal) -> None:
    result = await sync_provider.run(_job("flux-1-schnell", {"size": "512x512"}), None, _ctx())
    assert _dims(result.images[0].data) == (512, 512)
    assert [(r.method, r.path) for r in _api(fake)] == [("POST", "/run/fal-ai/flux/schnell")]
    assert result.upstream_request_id  # from x-fal-request-id
    assert fake.jobs == {}


async def test_sync_mode_data_uris_need_no_download(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("flux-1-schnell", {"size": "1024x768", "sync_mode": True, "n": 2})
    result = await provider.run(job, None, _ctx())
    assert [_dims(i.data) for i in result.images] == [(1024, 768)] * 2
    assert _submits(fake)[0].json["sync_mode"] is True
    assert not [r for r in fake.requests if r.path.startswith("/files/")]


# --- upstream refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"output_format": "webp"}, "output_format"),
        ({"size": SizeChoice(Dimensions(1024, 1024), preset="huge_square")}, "size"),
        ({"n": 9}, "n"),
    ],
)
async def test_422_names_our_parameter(provider: FalProvider, change: dict[str, Any], param: str) -> None:
    job = dataclasses.replace(_job("flux-1-schnell", {}), **change)
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(job, None, _ctx())
    assert caught.value.param == param
    assert caught.value.message.startswith("fal: ")
    assert not isinstance(caught.value, ModerationBlockedError)


async def test_422_reported_by_a_failed_job(provider: FalProvider, fake: FakeFal) -> None:
    fake.validate_at = "result"
    job = dataclasses.replace(_job("flux-1-schnell", {}), output_format="webp")
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(job, None, _ctx())
    assert caught.value.param == "output_format"


async def test_plain_string_detail(provider: FalProvider, fake: FakeFal) -> None:
    fake.script.push(Fault("status", status=400, body={"detail": "Image too large"}))
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(_job("flux-1-schnell", {}), None, _ctx())
    assert caught.value.param is None and caught.value.message == "fal: Image too large"


async def test_content_policy_is_moderation(provider: FalProvider, fake: FakeFal) -> None:
    with pytest.raises(ModerationBlockedError):
        await provider.run(_job("gpt-image-1", {"prompt": "BLOCKED_BY_SAFETY now"}), None, _ctx())
    fake.script.push(
        Fault(
            "status", status=422, body={"detail": "flagged"}, headers={"x-fal-error-type": "content_policy_violation"}
        )
    )
    with pytest.raises(ModerationBlockedError):
        await provider.run(_job("gpt-image-1", {}), None, _ctx())


async def test_bad_key_is_auth_error_without_the_key(fake: FakeFal, tmp_path: Path) -> None:
    wrong = "wrong-id:wrong-secret-value"
    built = create(_settings(tmp_path, fake, key=wrong))
    assert built is not None
    try:
        with pytest.raises(UpstreamAuthError) as caught:
            await built.run(_job("flux-1-schnell", {}), None, _ctx())
    finally:
        await built.aclose()
    error = caught.value
    assert error.disable_provider and error.upstream_status == 401
    for secret in (wrong, "wrong-secret-value", KEY, "fal-secret"):
        assert secret not in error.message and secret not in str(error)
    assert "Invalid key" not in error.message  # the 401 body is not echoed


async def test_rate_limit_with_retry_after(provider: FalProvider, fake: FakeFal) -> None:
    fake.script.push(Fault("status", status=429, headers={"retry-after": "3"}))
    with pytest.raises(UpstreamRateLimitError) as caught:
        await provider.run(_job("flux-1-schnell", {}), None, _ctx())
    assert caught.value.retry_after == 3.0 and caught.value.retryable


@pytest.mark.parametrize("status", [500, 502, 503, 408, 409])
async def test_server_errors_are_retryable(provider: FalProvider, fake: FakeFal, status: int) -> None:
    fake.script.push(Fault("status", status=status))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job("flux-1-schnell", {}), None, _ctx())
    assert caught.value.retryable and caught.value.upstream_status == status
    assert not isinstance(caught.value, UpstreamRateLimitError | UpstreamAuthError)


async def test_user_timeout_504_is_not_retryable(provider: FalProvider, fake: FakeFal) -> None:
    fake.script.push(Fault("status", status=504, headers={"X-Fal-Request-Timeout-Type": "user"}))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job("flux-1-schnell", {}), None, _ctx())
    assert caught.value.retryable is False


async def test_unknown_endpoint_404_is_retryable(provider: FalProvider) -> None:
    job = dataclasses.replace(_job("flux-1-schnell", {}), provider_model="fal-ai/flux/nope")
    with pytest.raises(UpstreamError) as caught:
        await provider.run(job, None, _ctx())
    assert caught.value.retryable and caught.value.upstream_status == 404


# --- broken replies -------------------------------------------------------------------------------


async def test_reset(provider: FalProvider, fake: FakeFal) -> None:
    fake.script.push(Fault("reset"))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job("flux-1-schnell", {}), None, _ctx())
    assert caught.value.retryable


@pytest.mark.parametrize("mode", ["queue", "sync"])
@pytest.mark.parametrize("kind", ["truncate", "malformed", "error_200"])
async def test_unusable_replies_are_malformed(fake: FakeFal, tmp_path: Path, mode: str, kind: str) -> None:
    built = create(_settings(tmp_path, fake, mode=mode))
    assert built is not None
    fake.script.push(Fault(kind))  # type: ignore[arg-type]
    try:
        with pytest.raises(UpstreamMalformedError) as caught:
            await built.run(_job("flux-1-schnell", {}), None, _ctx())
    finally:
        await built.aclose()
    assert caught.value.retryable


@pytest.mark.parametrize("kind", ["truncate", "malformed", "error_200"])
async def test_unusable_result_reply(provider: FalProvider, fake: FakeFal, kind: str) -> None:
    fake.job_script.push(Fault(kind))  # type: ignore[arg-type]
    with pytest.raises(UpstreamMalformedError) as caught:
        await provider.run(_job("flux-1-schnell", {}), None, _ctx())
    assert caught.value.may_have_charged


@pytest.mark.parametrize("fault", [Fault("status", status=404), Fault("reset"), Fault("malformed")])
async def test_result_file_failure(provider: FalProvider, fake: FakeFal, fault: Fault) -> None:
    fake.file_script.push(fault, times=2)  # aiohttp repeats an idempotent GET once after a reset
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job("flux-1-schnell", {}), None, _ctx())
    assert caught.value.retryable


async def test_completed_with_error(provider: FalProvider, fake: FakeFal) -> None:
    fake.job_script.push(Fault("status", status=500, body={"detail": "GPU fell over"}))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job("flux-1-schnell", {}), None, _ctx())
    error = caught.value
    assert error.retryable and error.may_have_charged is False
    assert "GPU fell over" in error.message


async def test_completed_with_policy_error(provider: FalProvider, fake: FakeFal) -> None:
    body = {"detail": [{"loc": ["body", "prompt"], "msg": "nsfw output", "type": "content_policy_violation"}]}
    fake.job_script.push(Fault("status", status=422, body=body))
    with pytest.raises(ModerationBlockedError):
        await provider.run(_job("flux-1-schnell", {}), None, _ctx())


# --- deadlines, cancellation, hosts ---------------------------------------------------------------


async def test_stalled_job_times_out_and_is_cancelled(provider: FalProvider, fake: FakeFal) -> None:
    fake.script.push(Fault("stall"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeoutError):
        await provider.run(_job("flux-1-schnell", {}), None, _ctx(0.5))
    assert loop.time() - started < 2.0
    assert len(fake.cancelled) == 1
    (request_id,) = fake.cancelled
    cancel = [r for r in fake.requests if r.method == "PUT"]
    assert [r.path for r in cancel] == [f"/queue/fal-ai/flux/requests/{request_id}/cancel"]
    assert cancel[0].headers["authorization"] == f"Key {KEY}"


async def test_task_cancel_mid_poll_cancels_upstream(provider: FalProvider, fake: FakeFal) -> None:
    fake.script.push(Fault("stall"))
    task = asyncio.create_task(provider.run(_job("flux-1-schnell", {}), None, _ctx()))
    for _ in range(200):
        if any(r.path.endswith("/status") for r in fake.requests):
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(fake.cancelled) == 1


async def test_status_url_on_another_host_is_refused(provider: FalProvider, fake: FakeFal) -> None:
    elsewhere = FakeFal(key=KEY)
    await elsewhere.start()
    try:
        base = f"{elsewhere.queue_url}/fal-ai/flux/requests/abc"
        body = {"request_id": "abc", "status": "IN_QUEUE", "status_url": f"{base}/status", "response_url": base}
        fake.script.push(Fault("status", status=200, body=body))
        with pytest.raises(UpstreamMalformedError):
            await provider.run(_job("flux-1-schnell", {}), None, _ctx())
    finally:
        await elsewhere.stop()
    assert elsewhere.requests == []
    # the job is cancelled on the configured host, by the owner/alias rule
    assert [r.path for r in fake.requests if r.method == "PUT"] == ["/queue/fal-ai/flux/requests/abc/cancel"]


async def test_no_key_is_not_available(fake: FakeFal, tmp_path: Path) -> None:
    built = create(_settings(tmp_path, fake, key=None))
    assert built is not None and not built.available()
    with pytest.raises(UpstreamAuthError):
        await built.run(_job("flux-1-schnell", {}), None, _ctx())
    await built.aclose()
    assert fake.requests == []
    assert create(_settings(tmp_path, fake, enabled=False)) is None


async def test_upstream_text_never_carries_the_key(provider: FalProvider, fake: FakeFal) -> None:
    fake.script.push(Fault("status", status=422, body={"detail": f"bad header Key {KEY}"}))
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(_job("flux-1-schnell", {}), None, _ctx())
    assert "fal-secret" not in caught.value.message and "fal-key-id" not in str(caught.value)


async def test_polling_backs_off(provider: FalProvider, fake: FakeFal) -> None:
    fake.job_seconds = 0.4
    await provider.run(_job("flux-1-schnell", {}), None, _ctx())
    polls = [r for r in fake.requests if r.path.endswith("/status")]
    assert 3 <= len(polls) <= 15  # 0.01 s growing x1.5 to the 0.05 s cap, not one poll per 10 ms
