"""The `bfl` provider (Black Forest Labs submit-then-poll API) against the fake BFL API (tests/fakes/bfl.py)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from imagegate.catalog.loader import load_catalog
from imagegate.config import Settings
from imagegate.core.normalize import plan_request
from imagegate.core.pricing import actual_cost
from imagegate.core.sizes import build_size_request
from imagegate.core.types import Dimensions, ProviderJob, PublicRequest, SizeChoice
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
from imagegate.imaging.probe import DecodedImage
from imagegate.providers import bfl
from imagegate.providers import bfl_wire as wire
from imagegate.providers.base import CallContext, EditInputs, Provider
from imagegate.providers.bfl import DEFAULT_BASE_URL, BflProvider, BflSettings
from tests.fakes.bfl import FakeBFL
from tests.fakes.faults import Fault
from tests.fakes.images import make_image

KEY = "bfl-canary-key-0123456789abcdef0123456789"
PRO = "flux-2-pro"


@pytest.fixture
async def fake() -> AsyncIterator[FakeBFL]:
    server = FakeBFL(key=KEY)
    await server.start()
    yield server
    await server.stop()


def _create(tmp_path: Path, base_url: str | None, key: str | None = KEY, enabled: bool = True) -> BflProvider | None:
    config = BflSettings(
        base_url=base_url,
        api_key=key,
        enabled=enabled,
        api_key_env="IMAGEGATE_TEST_NO_KEY",
        poll_interval_seconds=0.01,
        poll_max_interval_seconds=0.02,
    )
    return bfl.create("bfl", config, Settings(data_dir=tmp_path))


@pytest.fixture
async def provider(fake: FakeBFL, tmp_path: Path) -> AsyncIterator[BflProvider]:
    built = _create(tmp_path, fake.base_url)
    assert built is not None
    yield built
    await built.aclose()


def _job(
    model: str = PRO,
    *,
    mode: str = "text-to-image",
    prompt: str = "a red fox in the snow",
    size: str | None = None,
    ratio: str | None = None,
    inputs: int = 0,
) -> ProviderJob:
    """The first job the planner makes for the catalog's `bfl` offering of `model`."""
    offering = load_catalog().get(model).offering("bfl")  # type: ignore[union-attr]
    assert offering is not None
    wish = build_size_request(size, ratio, None)
    request = PublicRequest(mode=mode, prompt=prompt, n=1, size=wish, input_images=inputs)  # type: ignore[arg-type]
    return plan_request(request, offering).jobs[0]


def _ctx(seconds: float = 30.0) -> CallContext:
    return CallContext(request_id="t", deadline=asyncio.get_running_loop().time() + seconds)


def _decoded(width: int, height: int, seed: int = 0) -> DecodedImage:
    image = Image.open(io.BytesIO(make_image(width, height, "png", seed=seed))).convert("RGB")
    return DecodedImage(image=image, source_format="png", width=width, height=height)


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _polls(fake: FakeBFL) -> list[str]:
    return [r.path for r in fake.requests if r.method == "GET"]


# --- the provider contract ---------------------------------------------------------------------------


async def test_factory_and_protocol(tmp_path: Path, fake: FakeBFL) -> None:
    built = _create(tmp_path, fake.base_url)
    assert isinstance(built, Provider) and built.available() and not built.fallback_only
    assert built.name == "bfl" and built.extra_offering(load_catalog().get(PRO)) is None  # type: ignore[arg-type]
    assert _create(tmp_path, fake.base_url, enabled=False) is None
    no_key = _create(tmp_path, fake.base_url, key=None)
    assert no_key is not None and not no_key.available()
    with pytest.raises(UpstreamAuthError) as caught:
        await no_key.run(_job(), None, _ctx())
    assert caught.value.disable_provider and fake.requests == []
    default = bfl.create("bfl", BflSettings(api_key_env="NOPE_NOT_SET"), Settings(data_dir=tmp_path))
    assert default is not None and not default.available()
    assert default.url(PRO) == f"{DEFAULT_BASE_URL}/flux-2-pro" == "https://api.bfl.ai/v1/flux-2-pro"
    assert default.url("../x?key=1") == f"{DEFAULT_BASE_URL}/..%2Fx%3Fkey%3D1"
    with pytest.raises(NotImplementedError):
        built.stream(_job(), None, _ctx())
    assert bfl.KIND.name == "bfl" and bfl.KIND.settings_model is BflSettings
    assert bfl.KIND.default_instance and bfl.KIND.default_key_env == "BFL_API_KEY"
    for provider in (built, no_key, default):
        await provider.aclose()


# --- generations ---------------------------------------------------------------------------------------


async def test_flux2_pro_1920x1080(provider: BflProvider, fake: FakeBFL) -> None:
    job = _job(size="1920x1080")
    result = await provider.run(job, None, _ctx())
    submit = fake.requests[0]
    assert submit.method == "POST" and submit.path == "/v1/flux-2-pro"
    assert submit.headers["x-key"] == KEY and "authorization" not in submit.headers
    assert submit.json == {"prompt": "a red fox in the snow", "width": 1920, "height": 1088, "output_format": "jpeg"}
    polls = _polls(fake)
    assert len(polls) == 2 and all(path.startswith("/v1/get_result?id=") for path in polls)  # Pending, then Ready
    assert all(r.headers["x-key"] == KEY for r in fake.requests)
    (download,) = fake.downloads
    assert "x-key" not in download.headers and "se=fake-signature" in download.path
    image = _open(result.images[0].data)
    assert (image.format, image.size, result.images[0].format) == ("JPEG", (1920, 1088), "jpeg")
    task_id = polls[0].split("=", 1)[1]
    assert result.upstream_request_id == task_id and result.billed
    assert result.metadata == {"task_id": task_id, "seed": 42, "cost_credits": 4.5, "input_mp": 0.0, "output_mp": 2.09}


async def test_cost_from_the_reported_cost(provider: BflProvider, fake: FakeBFL) -> None:
    """BFL's `cost` is in credits (1 credit = $0.01): 3 + 1.5 for the second megapixel = $0.045."""
    result = await provider.run(_job(size="1920x1080"), None, _ctx())
    assert result.usage == {"cost": 0.045}
    assert wire.cost_usd(wire.credits(4.5)) == Decimal("0.045")
    assert wire.credits("7") == Decimal(7) and wire.credits(None) is None and wire.credits(-1) is None
    assert wire.credits(True) is None and wire.credits("lots") is None
    # Without a reported cost there is no usage, and the catalog's per-megapixel price applies.
    offering = load_catalog().get(PRO).offering("bfl")  # type: ignore[union-attr]
    assert offering is not None
    job = _job(size="1024x1024")
    assert actual_cost(offering, None, job.size.dims, None, 1, None) == Decimal("0.03")


async def test_ultra_sends_an_aspect_ratio(provider: BflProvider, fake: FakeBFL) -> None:
    job = _job("flux-1.1-pro-ultra", ratio="16:9")
    result = await provider.run(job, None, _ctx())
    assert fake.requests[0].json == {"prompt": "a red fox in the snow", "aspect_ratio": "16:9", "output_format": "jpeg"}
    assert _open(result.images[0].data).size == (2720, 1536)
    assert result.usage == {"cost": 0.06}


async def test_extra_and_options_never_override_owned_fields(provider: BflProvider, fake: FakeBFL) -> None:
    job = dataclasses.replace(
        _job("flux-1.1-pro", size="1024x768"),
        extra={"seed": 7, "safety_tolerance": 5, "width": 4096, "prompt": "evil", "webhook_url": "http://x", "n": None},
        options={"prompt_upsampling": True},
    )
    result = await provider.run(job, None, _ctx())
    assert fake.requests[0].json == {
        "seed": 7,
        "safety_tolerance": 5,
        "prompt_upsampling": True,
        "prompt": "a red fox in the snow",
        "width": 1024,
        "height": 768,
        "output_format": "jpeg",
    }
    assert result.metadata["seed"] == 7


# --- edits -----------------------------------------------------------------------------------------------


async def test_kontext_edit_with_two_reference_images(provider: BflProvider, fake: FakeBFL) -> None:
    job = _job("flux-kontext-max", mode="image-edit", prompt="put both cats on the sofa", ratio="4:3", inputs=2)
    images = [_decoded(320, 240, seed=1), _decoded(200, 300, seed=2)]
    result = await provider.run(job, EditInputs(images=images), _ctx())
    sent = fake.requests[0].json
    assert fake.requests[0].path == "/v1/flux-kontext-max"
    assert sent["aspect_ratio"] == "4:3" and sent["output_format"] == "png" and "width" not in sent
    assert sorted(sent) == ["aspect_ratio", "input_image", "input_image_2", "output_format", "prompt"]
    for field, original in zip(("input_image", "input_image_2"), images, strict=True):
        decoded = _open(base64.b64decode(sent[field]))
        assert decoded.format == "PNG" and decoded.size == (original.width, original.height)
        assert decoded.convert("RGB").tobytes() == original.image.tobytes()
    assert _open(result.images[0].data).format == "PNG" and result.images[0].format == "png"
    assert result.usage == {"cost": 0.08}


async def test_kontext_pro_bfl_offering_and_auto_edit(provider: BflProvider, fake: FakeBFL) -> None:
    job = _job("flux-kontext-pro", mode="image-edit", prompt="make it night", size="auto", inputs=1)
    result = await provider.run(job, EditInputs(images=[_decoded(640, 320)]), _ctx())
    assert "aspect_ratio" not in fake.requests[0].json and "input_image" in fake.requests[0].json
    assert _open(result.images[0].data).size == (1440, 736)  # BFL keeps the input's 2:1 shape


async def test_edit_refusals(provider: BflProvider, fake: FakeBFL) -> None:
    job = _job("flux-kontext-max", mode="image-edit", prompt="x", inputs=1)
    with pytest.raises(InvalidRequestError) as no_images:
        await provider.run(job, EditInputs(images=[]), _ctx())
    assert no_images.value.param == "image"
    with pytest.raises(InvalidRequestError) as masked:
        await provider.run(job, EditInputs(images=[_decoded(64, 64)], mask=_decoded(64, 64)), _ctx())
    assert masked.value.param == "mask" and fake.requests == []
    with pytest.raises(InvalidRequestError) as too_many:  # the fake refuses a fifth reference like a 422
        await provider.run(job, EditInputs(images=[_decoded(32, 32, seed=i) for i in range(5)]), _ctx())
    assert too_many.value.param == "image" and "at most 4 input images" in too_many.value.message


# --- terminal statuses --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "status"), [("REQUEST_MODERATED", "Request Moderated"), ("CONTENT_MODERATED", "Content Moderated")]
)
async def test_moderated_is_moderation_blocked(provider: BflProvider, word: str, status: str) -> None:
    with pytest.raises(ModerationBlockedError) as caught:
        await provider.run(_job(prompt=f"a {word} scene"), None, _ctx())
    error = caught.value
    assert error.status == 400 and error.code == "moderation_blocked" and f"({status})" in error.message
    assert ("request" in error.message) == (status == "Request Moderated")


async def test_error_status_is_a_clear_upstream_error(provider: BflProvider) -> None:
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(prompt="GENERATION_ERROR"), None, _ctx())
    error = caught.value
    assert type(error) is UpstreamError and error.retryable and error.may_have_charged
    assert error.message == "bfl: the generation failed (Error)"


async def test_task_not_found(provider: BflProvider, fake: FakeBFL) -> None:
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(prompt="TASK_LOST"), None, _ctx())
    error = caught.value
    assert type(error) is UpstreamError and error.retryable and error.may_have_charged
    assert error.message == "bfl no longer knows the task (Task not found)" and fake.downloads == []


def test_unknown_or_empty_poll_replies_are_malformed() -> None:
    assert wire.parse_poll({"status": "Pending"}) is None
    for body in ({"status": "Exploded"}, {"status": "Ready", "result": {}}, {"result": 1}, [1]):
        with pytest.raises(UpstreamMalformedError):
            wire.parse_poll(body)
    failed = wire.status_failure("Error", {"details": {"reason": "x" * 500}})
    assert failed.message.startswith("bfl: the generation failed (Error): ") and len(failed.message) < 360


# --- where the key goes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:1", "evil.example:{port}"])
async def test_polling_url_on_a_foreign_host_is_refused(provider: BflProvider, fake: FakeBFL, host: str) -> None:
    port = fake.base_url.rsplit(":", 1)[1].split("/")[0]
    fake.polling_base = f"http://{host.format(port=port)}/v1"  # localhost: the fake itself, under another name
    with pytest.raises(UpstreamMalformedError) as caught:
        await provider.run(_job(), None, _ctx())
    assert "another host" in caught.value.message and caught.value.may_have_charged
    assert [r.method for r in fake.requests] == ["POST"] and fake.downloads == []  # no poll: the key stayed home


@pytest.mark.parametrize(
    ("url", "trusted"),
    [
        ("https://api.bfl.ai/v1/get_result?id=1", True),
        ("https://api.eu.bfl.ai/v1/get_result?id=1", True),
        ("https://api.us1.bfl.ai/v1/get_result?id=1", True),
        ("https://API.US.BFL.AI./v1/get_result?id=1", True),
        ("http://api.eu.bfl.ai/v1/get_result?id=1", False),  # not the configured scheme
        ("https://api.eu.bfl.ai:8443/v1/get_result?id=1", False),
        ("https://bfl.ai.evil.com/v1/get_result", False),
        ("https://evilbfl.ai/v1/get_result", False),
        ("https://user:pw@api.bfl.ai/v1/get_result", False),
        ("ftp://api.bfl.ai/v1/get_result", False),
        ("not a url", False),
    ],
)
def test_trusted_polling_hosts(url: str, trusted: bool) -> None:
    assert wire.trusted_url(url, "https://api.bfl.ai/v1") is trusted


def test_trusted_hosts_of_an_ip_or_short_base() -> None:
    assert wire.trusted_url("http://127.0.0.1:8000/v1/get_result", "http://127.0.0.1:8000/v1")
    assert not wire.trusted_url("http://127.0.0.2:8000/v1/get_result", "http://127.0.0.1:8000/v1")
    assert not wire.trusted_url("http://127.0.0.1:8001/v1/get_result", "http://127.0.0.1:8000/v1")
    assert not wire.trusted_url("https://other.ai/v1", "https://bfl.ai/v1")


async def test_expired_result_url(provider: BflProvider, fake: FakeBFL) -> None:
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(prompt="EXPIRED_SAMPLE"), None, _ctx())
    error = caught.value
    assert type(error) is UpstreamError and error.upstream_status == 403 and error.may_have_charged
    assert error.retryable and "expired" in error.message and not error.disable_provider
    assert len(fake.downloads) == 1 and "x-key" not in fake.downloads[0].headers


async def test_result_that_is_not_an_image(provider: BflProvider, fake: FakeBFL) -> None:
    fake.poll_script.push(Fault("latency"))  # the first poll answers normally (Pending)
    fake.poll_script.push(
        Fault("status", status=200, body={"status": "Ready", "result": {"sample": f"{fake.root_url}/_fake/requests"}})
    )
    with pytest.raises(UpstreamMalformedError) as caught:
        await provider.run(_job(), None, _ctx())
    assert "not a PNG, JPEG or WebP" in caught.value.message and caught.value.may_have_charged
    fake.poll_script.push(Fault("status", status=200, body={"status": "Ready", "result": {"sample": "file:///etc"}}))
    with pytest.raises(UpstreamMalformedError):
        await provider.run(_job(), None, _ctx())


# --- error translation -------------------------------------------------------------------------------------


async def test_wrong_key_is_auth_error_and_never_leaks(fake: FakeBFL, tmp_path: Path) -> None:
    wrong = _create(tmp_path, fake.base_url, key="bfl-wrong-but-secret-99999999")
    assert wrong is not None
    with pytest.raises(UpstreamAuthError) as caught:
        await wrong.run(_job(), None, _ctx())
    await wrong.aclose()
    error = caught.value
    assert error.disable_provider and error.upstream_status == 403 and "99999999" not in error.message


@pytest.mark.parametrize("polling", [False, True])
async def test_401_disables(provider: BflProvider, fake: FakeBFL, polling: bool) -> None:
    script = fake.poll_script if polling else fake.script
    script.push(Fault("status", status=401, body={"detail": "key {token} refused"}))
    with pytest.raises(UpstreamAuthError) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert error.disable_provider and error.retryable and error.upstream_status == 401
    assert error.message == "bfl rejected the gateway's credentials (HTTP 401)"


async def test_402_out_of_credits_disables(provider: BflProvider, fake: FakeBFL) -> None:
    fake.script.push(Fault("status", status=402, body={"detail": "Insufficient credits"}))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.disable_provider and "no credit left: Insufficient credits" in caught.value.message


async def test_429_with_retry_after(provider: BflProvider, fake: FakeBFL) -> None:
    fake.script.push(
        Fault("status", status=429, body={"detail": "Too many active tasks"}, headers={"retry-after": "3"})
    )
    with pytest.raises(UpstreamRateLimitError) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert error.retry_after == 3.0 and error.retryable and not error.disable_provider
    assert error.message == "bfl rate limit reached: Too many active tasks" and not error.may_have_charged


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_retryable(provider: BflProvider, fake: FakeBFL, status: int) -> None:
    fake.script.push(Fault("status", status=status, headers={"retry-after": "1"}))
    with pytest.raises(UpstreamError) as submit:
        await provider.run(_job(), None, _ctx())
    error = submit.value
    assert type(error) is UpstreamError and error.retryable and error.upstream_status == status
    assert error.retry_after == 1.0 and not error.may_have_charged
    fake.poll_script.push(Fault("status", status=status))
    with pytest.raises(UpstreamError) as poll:
        await provider.run(_job(), None, _ctx())
    assert poll.value.retryable and poll.value.may_have_charged  # the task was accepted


async def test_validation_error_names_the_parameter(provider: BflProvider) -> None:
    odd = dataclasses.replace(_job(), size=SizeChoice(dims=Dimensions(1000, 1000)))
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(odd, None, _ctx())
    assert caught.value.param == "size" and "multiple of 16" in caught.value.message
    with pytest.raises(UpstreamError) as missing:
        await provider.run(dataclasses.replace(_job(), provider_model="flux-9"), None, _ctx())
    assert missing.value.upstream_status == 404 and "does not serve this model" in missing.value.message


async def test_deadline_while_polling(provider: BflProvider, fake: FakeBFL) -> None:
    fake.poll_script.push(Fault("latency", delay=5.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeoutError) as caught:
        await provider.run(_job(), None, _ctx(0.5))
    assert loop.time() - started < 2.0 and caught.value.may_have_charged


@pytest.mark.parametrize("kind", ["malformed", "truncate"])
async def test_unusable_submit_reply_is_malformed(provider: BflProvider, fake: FakeBFL, kind: str) -> None:
    fake.script.push(Fault(kind))  # type: ignore[arg-type]
    with pytest.raises(UpstreamMalformedError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.may_have_charged


@pytest.mark.parametrize(
    ("status", "kind", "polling"),
    [
        (400, InvalidRequestError, False),
        (422, InvalidRequestError, False),
        (429, UpstreamRateLimitError, False),
        (500, UpstreamError, False),
        (500, UpstreamError, True),
        (404, UpstreamError, True),
    ],
)
async def test_key_canary_never_in_an_error(
    provider: BflProvider, fake: FakeBFL, status: int, kind: type[ImagegateError], polling: bool
) -> None:
    echoed: dict[str, object] = {"detail": "you sent x-key: {token} (key={token})"}
    if status == 422:
        echoed = {"detail": [{"loc": ["body", "prompt"], "msg": "bad prompt for key {token}", "type": "x"}]}
    (fake.poll_script if polling else fake.script).push(
        Fault("status", status=status, body=echoed, headers={"x-echo": "{token}"})
    )
    with pytest.raises(kind) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert KEY not in error.message and KEY[4:20] not in error.message
    assert ("you sent" in error.message) or ("bad prompt" in error.message)
    assert all(KEY not in str(value) for value in (error.param, error.code, *error.headers.values()))
    fake.poll_script.push(Fault("latency"))
    fake.poll_script.push(Fault("status", status=200, body={"status": "Error", "details": {"echo": "{token}"}}))
    with pytest.raises(UpstreamError) as failed:
        await provider.run(_job(), None, _ctx())
    assert KEY not in failed.value.message and "generation failed" in failed.value.message
