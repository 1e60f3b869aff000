"""The `google` provider (Gemini API generateContent) against the fake Gemini API (tests/fakes/google.py)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
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
from imagegate.providers import google
from imagegate.providers import google_wire as wire
from imagegate.providers.base import CallContext, EditInputs, Provider
from imagegate.providers.google import DEFAULT_BASE_URL, GoogleProvider, GoogleSettings
from imagegate.results import merge_results
from tests.fakes.faults import Fault
from tests.fakes.google import FakeGoogle
from tests.fakes.images import make_image

KEY = "AIzaFakeGeminiCanaryKey0123456789abcdef"
PRO = "gemini-3-pro-image"
FLASH = "gemini-2.5-flash-image"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGoogle]:
    server = FakeGoogle(key=KEY)
    await server.start()
    yield server
    await server.stop()


def _create(tmp_path: Path, base_url: str | None, key: str | None = KEY, enabled: bool = True) -> GoogleProvider | None:
    config = GoogleSettings(base_url=base_url, api_key=key, enabled=enabled, api_key_env="IMAGEGATE_TEST_NO_KEY")
    return google.create("google", config, Settings(data_dir=tmp_path))


@pytest.fixture
async def provider(fake: FakeGoogle, tmp_path: Path) -> AsyncIterator[GoogleProvider]:
    built = _create(tmp_path, fake.base_url)
    assert built is not None
    yield built
    await built.aclose()


def _job(
    model: str = PRO,
    *,
    mode: str = "text-to-image",
    prompt: str = "a lighthouse at dawn",
    size: tuple[int, int] | None = None,
    ratio: str | None = None,
    resolution: str | None = None,
    inputs: int = 0,
) -> ProviderJob:
    """The first job the planner makes for the catalog's `google` offering of `model`."""
    offering = load_catalog().get(model).offering("google")  # type: ignore[union-attr]
    assert offering is not None
    dims = f"{size[0]}x{size[1]}" if size else None
    wish = build_size_request(dims, ratio, resolution)
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


# --- the provider contract ---------------------------------------------------------------------------


async def test_factory_and_protocol(tmp_path: Path, fake: FakeGoogle) -> None:
    built = _create(tmp_path, fake.base_url)
    assert isinstance(built, Provider) and built.available() and not built.fallback_only
    assert built.name == "google" and built.extra_offering(load_catalog().get(PRO)) is None  # type: ignore[arg-type]
    assert _create(tmp_path, fake.base_url, enabled=False) is None
    no_key = _create(tmp_path, fake.base_url, key=None)
    assert no_key is not None and not no_key.available()
    with pytest.raises(UpstreamAuthError) as caught:
        await no_key.run(_job(), None, _ctx())
    assert caught.value.disable_provider and fake.requests == []
    default = google.create("google", GoogleSettings(api_key_env="NOPE_NOT_SET"), Settings(data_dir=tmp_path))
    assert default is not None and default._base_url == DEFAULT_BASE_URL and not default.available()
    assert default.url(PRO) == f"{DEFAULT_BASE_URL}/models/{PRO}:generateContent"
    assert default.url("../x?key=1") == f"{DEFAULT_BASE_URL}/models/..%2Fx%3Fkey%3D1:generateContent"
    with pytest.raises(NotImplementedError):
        built.stream(_job(), None, _ctx())
    assert google.KIND.name == "google" and google.KIND.settings_model is GoogleSettings
    assert google.KIND.default_instance and google.KIND.default_key_env == "GEMINI_API_KEY"
    await built.aclose()


# --- generations ---------------------------------------------------------------------------------------


async def test_generate_16_9_at_2k(provider: GoogleProvider, fake: FakeGoogle) -> None:
    job = _job(size=(2752, 1536))
    assert (job.size.ratio, job.size.tier) == ("16:9", "2K")
    result = await provider.run(job, None, _ctx())
    assert len(result.images) == 1 and result.images[0].format == "png"
    image = _open(result.images[0].data)
    assert (image.format, image.size) == ("PNG", (2752, 1536))  # the answer, not the 64x64 thought sketch
    assert result.usage is not None and result.usage["output_tokens"] == 1120 + 180 and result.billed
    assert result.usage["output_tokens_details"] == {"text_tokens": 180, "image_tokens": 1120}  # thoughts bill as text
    assert result.upstream_request_id and result.metadata == {"model_version": PRO}
    sent = fake.requests[-1]
    assert sent.path == f"/v1beta/models/{PRO}:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY and "authorization" not in sent.headers
    assert sent.json == {
        "contents": [{"role": "user", "parts": [{"text": "a lighthouse at dawn"}]}],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
        },
    }
    assert KEY not in sent.path and KEY not in str(sent.json)


async def test_usage_prices_with_the_catalog(provider: GoogleProvider) -> None:
    """2.5 Flash is priced by tokens: 1290 image tokens at $30/M, the prompt at $0.30/M."""
    job = _job(FLASH, prompt="a" * 40)
    offering = load_catalog().get(FLASH).offering("google")  # type: ignore[union-attr]
    assert offering is not None
    result = await provider.run(job, None, _ctx())
    cost = actual_cost(offering, None, job.size.dims, job.size.tier, 1, result.usage)
    assert cost == (Decimal(1290) * Decimal("30.00") + Decimal(10) * Decimal("0.30")) / 1_000_000
    assert merge_results([result, result]).usage == {
        "input_tokens": 20,
        "output_tokens": 2580,
        "total_tokens": 2600,
        "input_tokens_details": {"text_tokens": 20, "image_tokens": 0},
        "output_tokens_details": {"text_tokens": 0, "image_tokens": 2580},
    }


@pytest.mark.parametrize(
    ("model", "ratio", "resolution", "dims", "tokens"),
    [
        (FLASH, "21:9", None, (1536, 672), 1290),
        (FLASH, "9:16", None, (768, 1344), 1290),
        (PRO, "3:4", "1K", (896, 1200), 1120),
        (PRO, "1:1", "4K", (4096, 4096), 2000),
    ],
)
async def test_ratio_and_tier_from_the_size_system(
    provider: GoogleProvider,
    fake: FakeGoogle,
    model: str,
    ratio: str,
    resolution: str | None,
    dims: tuple[int, int],
    tokens: int,
) -> None:
    job = _job(model, ratio=ratio, resolution=resolution)
    result = await provider.run(job, None, _ctx())
    assert _open(result.images[0].data).size == dims
    assert result.usage is not None and result.usage["output_tokens_details"]["image_tokens"] == tokens  # type: ignore[index]
    config = fake.requests[-1].json["generationConfig"]["imageConfig"]
    assert config["aspectRatio"] == ratio
    assert config.get("imageSize") == (None if dims[0] < 2048 else "4K")  # 1K is the default: never sent


async def test_extra_goes_into_generation_config_but_never_overrides(
    provider: GoogleProvider, fake: FakeGoogle
) -> None:
    job = dataclasses.replace(
        _job(FLASH),
        extra={
            "temperature": 0.4,
            "seed": 7,
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
            "responseModalities": ["TEXT"],
            "imageConfig": {"aspectRatio": "21:9"},
            "contents": "evil",
            "candidateCount": 4,
        },
    )
    result = await provider.run(job, None, _ctx())
    assert _open(result.images[0].data).size == (1024, 1024)
    sent = fake.requests[-1].json
    assert sent["safetySettings"][0]["threshold"] == "BLOCK_ONLY_HIGH"
    assert sent["generationConfig"] == {
        "temperature": 0.4,
        "seed": 7,
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"aspectRatio": "1:1"},
    }
    assert sent["contents"][0]["parts"] == [{"text": "a lighthouse at dawn"}]


def test_image_config_without_a_ratio_label() -> None:
    job = _job(FLASH)
    reduced = dataclasses.replace(job, size=SizeChoice(dims=Dimensions(1536, 1024)))
    assert wire.image_config(reduced) == {"aspectRatio": "3:2"}
    assert wire.image_config(dataclasses.replace(job, size=SizeChoice(dims=None, auto=True))) is None
    lower = dataclasses.replace(job, size=SizeChoice(dims=Dimensions(2048, 2048), ratio="1:1", tier="2k"))
    assert wire.image_config(lower) == {"aspectRatio": "1:1", "imageSize": "2K"}


# --- edits -----------------------------------------------------------------------------------------------


async def test_three_image_edit(provider: GoogleProvider, fake: FakeGoogle) -> None:
    job = _job(FLASH, mode="image-edit", prompt="put the cat on the sofa", ratio="4:3", inputs=3)
    images = [_decoded(320, 240, seed=i) for i in range(3)]
    result = await provider.run(job, EditInputs(images=images), _ctx())
    assert _open(result.images[0].data).size == (1184, 864)
    assert result.usage is not None and result.usage["input_tokens"] == len(job.prompt) // 4 + 3 * 258
    assert result.usage["input_tokens_details"] == {"text_tokens": len(job.prompt) // 4, "image_tokens": 3 * 258}
    parts = fake.requests[-1].json["contents"][0]["parts"]
    assert parts[0] == {"text": "put the cat on the sofa"} and len(parts) == 4
    for index, part in enumerate(parts[1:]):
        assert part["inlineData"]["mimeType"] == "image/png"
        sent = _open(base64.b64decode(part["inlineData"]["data"]))
        assert (sent.format, sent.size) == ("PNG", (320, 240))
        assert sent.convert("RGB").tobytes() == images[index].image.tobytes()


async def test_edit_refusals(provider: GoogleProvider, fake: FakeGoogle) -> None:
    job = _job(FLASH, mode="image-edit", prompt="x", inputs=1)
    with pytest.raises(InvalidRequestError) as no_images:
        await provider.run(job, EditInputs(images=[]), _ctx())
    assert no_images.value.param == "image"
    with pytest.raises(InvalidRequestError) as masked:
        await provider.run(job, EditInputs(images=[_decoded(64, 64)], mask=_decoded(64, 64)), _ctx())
    assert masked.value.param == "mask" and fake.requests == []
    # Four images where 2.5 Flash takes three: the fake refuses like Google, relayed as a 400.
    with pytest.raises(InvalidRequestError) as too_many:
        await provider.run(job, EditInputs(images=[_decoded(32, 32, seed=i) for i in range(4)]), _ctx())
    assert "at most 3 input images" in too_many.value.message and too_many.value.message.startswith("google: ")


# --- refusals and text-only answers ----------------------------------------------------------------------


async def test_safety_block_is_moderation(provider: GoogleProvider) -> None:
    with pytest.raises(ModerationBlockedError) as caught:
        await provider.run(_job(prompt="a BLOCKED_BY_SAFETY scene"), None, _ctx())
    assert caught.value.status == 400 and caught.value.code == "moderation_blocked"
    assert "IMAGE_SAFETY" in caught.value.message


async def test_blocked_prompt_is_moderation(provider: GoogleProvider) -> None:
    with pytest.raises(ModerationBlockedError) as caught:
        await provider.run(_job(prompt="BLOCKED_PROMPT please"), None, _ctx())
    assert "PROHIBITED_CONTENT" in caught.value.message


async def test_text_only_answer_is_malformed_with_the_reason(provider: GoogleProvider) -> None:
    with pytest.raises(UpstreamMalformedError) as caught:
        await provider.run(_job(prompt="TEXT_ONLY " + "lorem ipsum " * 60), None, _ctx())
    error = caught.value
    assert error.status == 502 and error.may_have_charged and error.upstream_status == 200
    assert "finishReason STOP" in error.message and "I would rather describe it in words" in error.message
    assert len(error.message) < 320  # at most ~200 characters of the model's words


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ({"finishReason": "NO_IMAGE", "index": 0}, UpstreamMalformedError),
        ({"finishReason": "IMAGE_OTHER", "content": {"parts": [{"text": "hm"}]}}, UpstreamMalformedError),
        ({"finishReason": "PROHIBITED_CONTENT"}, ModerationBlockedError),
        ({"finishReason": "SPII"}, ModerationBlockedError),
        ({"finishReason": "BLOCKLIST"}, ModerationBlockedError),
        ({"finishReason": "SAFETY", "content": {"parts": [{"text": "no"}]}}, ModerationBlockedError),
    ],
)
def test_finish_reasons(candidate: dict[str, object], expected: type[ImagegateError]) -> None:
    with pytest.raises(expected) as caught:
        wire.parse_reply({"candidates": [candidate]}, 1)
    assert str(candidate["finishReason"]) in caught.value.message


def test_thought_images_are_skipped_and_text_ignored() -> None:
    thought = base64.b64encode(make_image(8, 8)).decode()
    answer = base64.b64encode(make_image(16, 16, "jpeg")).decode()
    parts = [
        {"inlineData": {"mimeType": "image/png", "data": thought}, "thought": True},
        {"text": "here"},
        {"inlineData": {"mimeType": "image/jpeg", "data": answer}},
    ]
    reply = wire.parse_reply(
        {"candidates": [{"content": {"parts": parts}}], "usageMetadata": {"totalTokenCount": 3}}, 1
    )
    assert [fmt for _, fmt in reply.images] == ["jpeg"] and _open(reply.images[0][0].raw).size == (16, 16)
    assert reply.usage is not None and reply.usage["total_tokens"] == 3 and reply.response_id is None
    only_thoughts = {"candidates": [{"content": {"parts": parts[:1]}, "finishReason": "STOP"}]}
    with pytest.raises(UpstreamMalformedError):
        wire.parse_reply(only_thoughts, 1)


# --- error translation -------------------------------------------------------------------------------------


async def test_wrong_key_is_auth_error_and_never_leaks(fake: FakeGoogle, tmp_path: Path) -> None:
    wrong = _create(tmp_path, fake.base_url, key="AIzaWrongButSecret-99999999")
    assert wrong is not None
    with pytest.raises(UpstreamAuthError) as caught:
        await wrong.run(_job(), None, _ctx())
    await wrong.aclose()
    error = caught.value
    assert error.disable_provider and error.upstream_status == 400  # Google's API_KEY_INVALID
    assert "99999999" not in error.message and "AIza" not in error.message


@pytest.mark.parametrize("status", [401, 403])
async def test_unauthorized_disables(provider: GoogleProvider, fake: FakeGoogle, status: int) -> None:
    fake.script.push(Fault("status", status=status, body={"error": {"code": status, "message": "key {token} refused"}}))
    with pytest.raises(UpstreamAuthError) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert error.disable_provider and error.retryable and error.upstream_status == status
    assert error.message == f"google rejected the gateway's credentials (HTTP {status})"


@pytest.mark.parametrize(("headers", "expected"), [({"retry-after": "2"}, 2.0), ({}, 7.0)])
async def test_rate_limit_retry_after(
    provider: GoogleProvider, fake: FakeGoogle, headers: dict[str, str], expected: float
) -> None:
    fake.script.push(Fault("status", status=429, headers=headers))  # the fake adds RetryInfo retryDelay 7s
    with pytest.raises(UpstreamRateLimitError) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert error.retry_after == expected and error.retryable and not error.disable_provider
    assert "RESOURCE_EXHAUSTED" not in error.message and "exhausted" in error.message


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(provider: GoogleProvider, fake: FakeGoogle, status: int) -> None:
    fake.script.push(Fault("status", status=status, headers={"retry-after": "1"}))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert type(error) is UpstreamError and error.retryable and error.upstream_status == status
    assert error.retry_after == 1.0 and not error.may_have_charged


async def test_gateway_timeout_and_not_found(provider: GoogleProvider, fake: FakeGoogle) -> None:
    fake.script.push(Fault("status", status=504))
    with pytest.raises(UpstreamTimeoutError) as timed_out:
        await provider.run(_job(), None, _ctx())
    assert timed_out.value.retryable
    with pytest.raises(UpstreamError) as missing:
        await provider.run(dataclasses.replace(_job(), provider_model="gemini-9-image"), None, _ctx())
    assert missing.value.upstream_status == 404 and "does not serve this model" in missing.value.message
    assert "models/gemini-9-image is not found" in missing.value.message


async def test_invalid_argument_names_size_when_clear(provider: GoogleProvider, fake: FakeGoogle) -> None:
    bad_ratio = dataclasses.replace(_job(FLASH), size=SizeChoice(dims=Dimensions(1000, 300), ratio="10:3"))
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(bad_ratio, None, _ctx())
    assert caught.value.param == "size" and "Unsupported aspect ratio: 10:3" in caught.value.message
    two_k_on_flash = dataclasses.replace(
        _job(FLASH), size=SizeChoice(dims=Dimensions(2048, 2048), ratio="1:1", tier="2K")
    )
    with pytest.raises(InvalidRequestError):
        await provider.run(two_k_on_flash, None, _ctx())
    fake.script.push(
        Fault("status", status=400, body={"error": {"code": 400, "message": "Bad thing", "status": "INVALID_ARGUMENT"}})
    )
    with pytest.raises(InvalidRequestError) as plain:
        await provider.run(_job(), None, _ctx())
    assert plain.value.param is None and plain.value.message == "google: Bad thing"
    precondition = {"error": {"code": 400, "message": "Enable billing.", "status": "FAILED_PRECONDITION"}}
    fake.script.push(Fault("status", status=400, body=precondition))
    with pytest.raises(UpstreamError) as upstream:
        await provider.run(_job(), None, _ctx())
    assert type(upstream.value) is UpstreamError and upstream.value.retryable


async def test_reset_connection(provider: GoogleProvider, fake: FakeGoogle) -> None:
    fake.script.push(Fault("reset"))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.retryable and caught.value.code == "upstream_connection_reset"


@pytest.mark.parametrize("kind", ["truncate", "malformed", "error_200"])
async def test_unusable_200_is_malformed(provider: GoogleProvider, fake: FakeGoogle, kind: str) -> None:
    fake.script.push(Fault(kind))  # type: ignore[arg-type]
    with pytest.raises(UpstreamMalformedError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.may_have_charged and caught.value.retryable


@pytest.mark.parametrize(
    "body",
    [
        {"candidates": []},
        {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "@@nope@@"}}]}}]},
        {
            "candidates": [
                {"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "aGVsbG8gd29ybGQh"}}]}}
            ]
        },
        [1, 2],
    ],
)
async def test_unusable_content_is_malformed(provider: GoogleProvider, fake: FakeGoogle, body: object) -> None:
    fake.script.push(Fault("status", status=200, body=body))
    with pytest.raises(UpstreamMalformedError):
        await provider.run(_job(), None, _ctx())


async def test_deadline_cuts_a_slow_upstream(provider: GoogleProvider, fake: FakeGoogle) -> None:
    fake.script.push(Fault("latency", delay=5.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeoutError):
        await provider.run(_job(), None, _ctx(0.5))
    assert loop.time() - started < 2.0


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, InvalidRequestError), (404, UpstreamError), (429, UpstreamRateLimitError), (500, UpstreamError)],
)
async def test_canary_key_never_in_an_error(
    provider: GoogleProvider, fake: FakeGoogle, status: int, kind: type[ImagegateError]
) -> None:
    echoed = {"error": {"code": status, "message": "you sent x-goog-api-key: {token} (key={token})", "status": "X"}}
    fake.script.push(Fault("status", status=status, body=echoed, headers={"x-echo": "{token}"}))
    with pytest.raises(kind) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert KEY not in error.message and KEY[4:20] not in error.message and "you sent" in error.message
    assert all(KEY not in str(value) for value in (error.param, error.code, *error.headers.values()))
    fake.script.push(Fault("status", status=200, body={"candidates": [{"content": {"parts": [{"text": "{token}"}]}}]}))
    with pytest.raises(UpstreamMalformedError) as quoted:
        await provider.run(_job(), None, _ctx())
    assert KEY not in quoted.value.message and "the model said" in quoted.value.message


# --- the fake itself ---------------------------------------------------------------------------------------


async def test_fake_checks_key_and_serves_control_routes(fake: FakeGoogle) -> None:
    root = fake.base_url.removesuffix("/v1beta")
    url = f"{fake.base_url}/models/{FLASH}:generateContent"
    body = {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseModalities": ["IMAGE"]}}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body) as reply:
            assert reply.status == 403 and (await reply.json())["error"]["status"] == "PERMISSION_DENIED"
        async with session.post(f"{url}?key={KEY}", json=body) as reply:
            assert reply.status == 400  # the fake takes the key only from the header
        async with session.post(f"{root}/_fake/faults", json=[{"kind": "status", "status": 503, "times": 1}]) as reply:
            assert (await reply.json())["queued"] == 1
        async with session.post(url, json=body, headers={"x-goog-api-key": KEY}) as reply:
            assert reply.status == 503 and (await reply.json())["error"]["status"] == "UNAVAILABLE"
        async with session.post(url, json=body, headers={"x-goog-api-key": KEY}) as reply:
            parts = (await reply.json())["candidates"][0]["content"]["parts"]
            assert reply.status == 200 and [list(p) for p in parts] == [["inlineData"]]  # IMAGE only: no text
        async with session.get(f"{root}/_fake/requests") as reply:
            recorded = await reply.json()
            assert len(recorded) == 4 and recorded[1]["path"].endswith(f"?key={KEY}")
        async with session.post(f"{root}/_fake/clear") as reply:
            assert reply.status == 200
    assert fake.requests == [] and not fake.script.queue


def test_fake_runs_in_a_thread() -> None:
    server = FakeGoogle(key=KEY)

    async def call(base_url: str) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base_url}/models/{PRO}:generateContent", json={"contents": []}, headers={"x-goog-api-key": KEY}
            ) as reply,
        ):
            return reply.status

    with server.run_in_thread() as base_url:
        assert base_url.startswith("http://127.0.0.1:") and asyncio.run(call(base_url)) == 400
    assert len(server.requests) == 1
