"""The `replicate` provider (predictions API) against the fake Replicate (tests/fakes/replicate.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from imagegate.catalog.loader import load_catalog
from imagegate.config import Settings
from imagegate.core.normalize import plan_request
from imagegate.core.sizes import build_size_request
from imagegate.core.types import ProviderJob, PublicRequest
from imagegate.errors import (
    ImagegateError,
    InvalidRequestError,
    ModerationBlockedError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamMalformedError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from imagegate.providers import replicate
from imagegate.providers import replicate_wire as wire
from imagegate.providers.base import CallContext, Provider
from imagegate.providers.replicate import DEFAULT_BASE_URL, ReplicateProvider, ReplicateSettings
from tests.fakes.faults import Fault
from tests.fakes.images import make_image
from tests.fakes.replicate import FakeReplicate

KEY = "r8_CanaryReplicateToken0123456789abcdef"
SCHNELL = "flux-1-schnell"
DEV = "flux-1-dev"


@pytest.fixture
async def fake() -> AsyncIterator[FakeReplicate]:
    server = FakeReplicate(key=KEY)
    await server.start()
    yield server
    await server.stop()


def _create(
    tmp_path: Path, base_url: str | None, key: str | None = KEY, enabled: bool = True, **extra: float
) -> ReplicateProvider | None:
    config = ReplicateSettings(
        base_url=base_url,
        api_key=key,
        enabled=enabled,
        api_key_env="IMAGEGATE_TEST_NO_KEY",
        poll_interval_seconds=0.02,
        poll_max_interval_seconds=0.05,
        **extra,  # type: ignore[arg-type]
    )
    return replicate.create("replicate", config, Settings(data_dir=tmp_path))


@pytest.fixture
async def provider(fake: FakeReplicate, tmp_path: Path) -> AsyncIterator[ReplicateProvider]:
    built = _create(tmp_path, fake.base_url)
    assert built is not None
    yield built
    await built.aclose()


def _job(
    model: str = SCHNELL,
    *,
    ratio: str | None = None,
    size: str | None = None,
    n: int = 1,
    output_format: str | None = None,
    compression: int | None = None,
    options: dict[str, object] | None = None,
) -> ProviderJob:
    """The first job the planner makes for the catalog's `replicate` offering of `model`."""
    offering = load_catalog().get(model).offering("replicate")  # type: ignore[union-attr]
    assert offering is not None
    request = PublicRequest(
        mode="text-to-image",
        prompt="a fox in the snow",
        n=n,
        size=build_size_request(size, ratio, None),
        output_format=output_format,
        output_compression=compression,
        options=dict(options or {}),
    )
    return plan_request(request, offering).jobs[0]


def _ctx(seconds: float = 10.0) -> CallContext:
    return CallContext(request_id="t", deadline=asyncio.get_running_loop().time() + seconds)


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- the provider contract ---------------------------------------------------------------------------


async def test_factory_and_protocol(tmp_path: Path, fake: FakeReplicate) -> None:
    built = _create(tmp_path, fake.base_url)
    assert isinstance(built, Provider) and built.available() and not built.fallback_only
    assert built.name == "replicate" and built.extra_offering(load_catalog().get(SCHNELL)) is None  # type: ignore[arg-type]
    assert built.input_map("black-forest-labs/flux-schnell").tier == "megapixels"  # read from the catalog
    assert _create(tmp_path, fake.base_url, enabled=False) is None
    no_key = _create(tmp_path, fake.base_url, key=None)
    assert no_key is not None and not no_key.available()
    with pytest.raises(UpstreamAuthError) as caught:
        await no_key.run(_job(), None, _ctx())
    assert caught.value.disable_provider and fake.requests == []
    default = replicate.create("replicate", ReplicateSettings(api_key_env="NOPE_NOT_SET"), Settings(data_dir=tmp_path))
    assert default is not None and default.config.base_url == DEFAULT_BASE_URL and not default.available()
    assert replicate.KIND.name == "replicate" and replicate.KIND.default_key_env == "REPLICATE_API_TOKEN"
    with pytest.raises(NotImplementedError):
        built.stream(_job(), None, _ctx())
    for made in (built, no_key, default):
        await made.aclose()


# --- requests ------------------------------------------------------------------------------------------


async def test_schnell_21_9_finishes_inline(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    job = _job(ratio="21:9", n=2)
    result = await provider.run(job, None, _ctx())
    [created] = fake.created()
    assert created.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert created.headers["authorization"] == f"Bearer {KEY}" and created.headers["prefer"] == "wait=8"
    sent = created.json["input"]
    assert sent["aspect_ratio"] == "21:9" and sent["megapixels"] == "1" and sent["num_outputs"] == 2
    assert sent["output_format"] == "webp" and sent["prompt"] == "a fox in the snow"
    assert not [r for r in fake.requests if r.method == "GET" and "/predictions/" in r.path]  # no polling
    assert len(result.images) == 2 and all(image.format == "webp" for image in result.images)
    width, height = _open(result.images[0].data).size
    assert abs(width / height - 21 / 9) < 0.05
    assert result.upstream_request_id in fake.predictions and result.metadata["predict_time"] == 0.42


async def test_catalog_mapping_renames_format_quality_and_passes_seed(
    provider: ReplicateProvider, fake: FakeReplicate
) -> None:
    job = _job(DEV, size="512x512", output_format="jpeg", compression=55, options={"seed": 7})
    result = await provider.run(job, None, _ctx())
    [created] = fake.created()
    assert created.path == "/v1/models/black-forest-labs/flux-dev/predictions"
    sent = created.json["input"]
    assert sent["output_format"] == "jpg" and sent["output_quality"] == 55 and sent["seed"] == 7
    assert sent["aspect_ratio"] == "1:1" and sent["megapixels"] == "0.25"
    assert result.images[0].format == "jpeg"


async def test_version_pin_posts_to_predictions(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    version = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"
    job = dataclasses.replace(_job(), provider_model=f"black-forest-labs/flux-schnell:{version}")
    await provider.run(job, None, _ctx())
    [created] = fake.created()
    assert created.path == "/v1/predictions" and created.json["version"] == version
    assert created.json["input"]["aspect_ratio"] == "1:1"  # the default map: FLUX.1's fields


async def test_owned_fields_beat_the_callers_extras(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    job = dataclasses.replace(_job(ratio="16:9"), extra={"aspect_ratio": "1:1", "num_outputs": 4, "go_fast": False})
    await provider.run(job, None, _ctx())
    sent = fake.created()[0].json["input"]
    assert sent["aspect_ratio"] == "16:9" and sent["num_outputs"] == 1 and sent["go_fast"] is False


# --- predictions that do not finish inline ----------------------------------------------------------------


async def test_still_running_is_polled_to_success(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    fake.job_seconds, fake.hold_cap = 0.3, 0.05
    result = await provider.run(_job(ratio="3:2"), None, _ctx())
    polls = [r for r in fake.requests if r.method == "GET" and r.path.startswith("/v1/predictions/")]
    assert polls and all(r.headers["authorization"] == f"Bearer {KEY}" for r in polls)
    assert len(result.images) == 1 and fake.cancels == []


async def test_failed_prediction(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    fake.outcomes.append("failed")
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.retryable and "failed: CUDA out of memory" in caught.value.message
    fake.outcomes.append("failed")
    fake.fail_error = "NSFW content detected. Try running it again, or try a different prompt."
    with pytest.raises(ModerationBlockedError):
        await provider.run(_job(), None, _ctx())


async def test_canceled_prediction(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    fake.outcomes.append("canceled")
    fake.job_seconds, fake.hold_cap = 0.1, 0.02
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(), None, _ctx())
    assert "canceled the prediction" in caught.value.message and caught.value.retryable
    assert fake.cancels == []  # Replicate ended it; nothing for us to cancel


async def test_never_finishing_is_canceled_at_the_deadline(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    fake.outcomes.append("stall")
    fake.hold_cap = 0.05
    with pytest.raises(UpstreamTimeoutError) as caught:
        await provider.run(_job(), None, _ctx(0.6))
    assert caught.value.may_have_charged
    [prediction] = fake.predictions.values()
    assert fake.cancels == [prediction.id] and prediction.status == "canceled"
    [cancel] = [r for r in fake.requests if r.path.endswith("/cancel")]
    assert cancel.method == "POST" and cancel.headers["authorization"] == f"Bearer {KEY}"
    assert "prefer" not in fake.created()[0].headers  # under a second left: no inline wait, the id comes back


async def test_client_gone_cancels_upstream(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    fake.outcomes.append("stall")
    fake.hold_cap = 0.02
    task = asyncio.ensure_future(provider.run(_job(), None, _ctx()))
    while not [r for r in fake.requests if r.method == "GET"]:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.cancels == list(fake.predictions)


async def test_poll_urls_off_the_configured_host_are_not_followed() -> None:
    base = "https://api.replicate.com/v1"
    foreign = wire.Prediction(
        "p1", "processing", None, None, "https://evil.example/p1", "https://evil.example/c", None, None
    )
    handle = wire.handle_of(foreign, base)
    assert handle.get_url == f"{base}/predictions/p1" and handle.cancel_url == f"{base}/predictions/p1/cancel"
    own = dataclasses.replace(foreign, get_url=f"{base}/predictions/p1?x=1", cancel_url=f"{base}/predictions/p1/cancel")
    assert wire.handle_of(own, base).get_url == f"{base}/predictions/p1?x=1"


# --- output files ----------------------------------------------------------------------------------------


async def test_output_url_is_fetched_without_the_token(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    await provider.run(_job(n=3), None, _ctx())
    files = [r for r in fake.requests if r.path.startswith("/files/")]
    assert len(files) == 3 and all("authorization" not in r.headers for r in files)


async def test_output_over_the_cap_is_refused(tmp_path: Path, fake: FakeReplicate) -> None:
    small = _create(tmp_path, fake.base_url, max_result_bytes=2048)
    assert small is not None
    with pytest.raises(UpstreamMalformedError) as caught:
        await small.run(_job(), None, _ctx())
    assert "cap" in caught.value.message
    await small.aclose()


# --- errors ------------------------------------------------------------------------------------------------


async def test_401_disables_and_never_quotes(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    body = {"title": "Unauthenticated", "detail": "token {token} is invalid", "status": 401}
    fake.script.push(Fault("status", status=401, body=body))
    with pytest.raises(UpstreamAuthError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.disable_provider and "token" not in caught.value.message


async def test_429_carries_retry_after(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    body = {"title": "Too Many Requests", "detail": "Request was throttled.", "status": 429}
    fake.script.push(Fault("status", status=429, body=body, headers={"Retry-After": "7"}))
    with pytest.raises(UpstreamRateLimitError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.retry_after == 7.0 and caught.value.retryable and "throttled" in caught.value.message


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_retryable(provider: ReplicateProvider, fake: FakeReplicate, status: int) -> None:
    fake.script.push(Fault("status", status=status))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.retryable and caught.value.upstream_status == status
    assert not isinstance(caught.value, UpstreamAuthError) and not caught.value.disable_provider


async def test_422_names_the_parameter(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    job = _job()
    bad = dataclasses.replace(job, size=dataclasses.replace(job.size, ratio="7:3"))
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(bad, None, _ctx())
    assert caught.value.param == "size" and "aspect_ratio must be one of" in caught.value.message


async def test_unknown_model_is_404(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    job = dataclasses.replace(_job(), provider_model="nobody/nothing")
    with pytest.raises(UpstreamError) as caught:
        await provider.run(job, None, _ctx())
    assert caught.value.upstream_status == 404 and "does not serve this model" in caught.value.message
    with pytest.raises(InvalidRequestError):
        await provider.run(dataclasses.replace(job, provider_model="../x?y=1"), None, _ctx())


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, UpstreamAuthError), (422, InvalidRequestError), (429, UpstreamRateLimitError), (500, UpstreamError)],
)
async def test_canary_key_never_in_an_error(
    provider: ReplicateProvider, fake: FakeReplicate, status: int, kind: type[ImagegateError]
) -> None:
    echoed = {"title": "x", "status": status, "detail": "you sent {authorization} (token={token})"}
    fake.script.push(Fault("status", status=status, body=echoed, headers={"x-echo": "{token}"}))
    with pytest.raises(kind) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert KEY not in error.message and KEY[4:20] not in error.message
    assert all(KEY not in str(value) for value in (error.param, error.code, *error.headers.values()))
    fake.outcomes.append("failed")
    fake.fail_error = "worker said: Bearer " + KEY
    with pytest.raises(UpstreamError) as failed:
        await provider.run(_job(), None, _ctx())
    assert KEY not in failed.value.message and KEY[4:20] not in failed.value.message


async def test_malformed_create_reply(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    fake.script.push(Fault("malformed"))
    with pytest.raises(UpstreamMalformedError):
        await provider.run(_job(), None, _ctx())
    fake.script.push(Fault("error_200", body={"detail": "oops"}))
    with pytest.raises(UpstreamMalformedError):
        await provider.run(_job(), None, _ctx())


# --- the wire module on its own ------------------------------------------------------------------------------


def test_edit_images_go_where_the_map_says() -> None:
    job = dataclasses.replace(_job(), mode="image-edit")
    single = wire.InputMap(n=None, image="input_image")
    assert wire.build_input(job, single, ["data:a", "data:b"])["input_image"] == "data:a"
    many = wire.InputMap(image="images", image_list=True)
    assert wire.build_input(job, many, ["data:a", "data:b"])["images"] == ["data:a", "data:b"]
    with pytest.raises(InvalidRequestError) as caught:
        wire.build_input(job, wire.InputMap(), ["data:a"])
    assert caught.value.param == "image"


def test_data_uri_outputs_are_decoded_and_sniffed() -> None:
    png = make_image(32, 16, "png")
    data = wire.decode_data_uri(wire.png_data_uri(png), 1 << 20)
    assert data == png and wire.image_format(data, None) == "png"
    with pytest.raises(UpstreamMalformedError):
        wire.image_format(b"<html>gone</html>", "image/png")
    with pytest.raises(UpstreamMalformedError):
        wire.decode_data_uri("data:image/png,notbase64", 1 << 20)
