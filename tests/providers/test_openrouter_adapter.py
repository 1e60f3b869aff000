"""The `openrouter` provider (chat completions image output) against the fake OpenRouter (tests/fakes/openrouter.py)."""

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
from imagegate.providers import openrouter
from imagegate.providers import openrouter_wire as wire
from imagegate.providers.base import CallContext, EditInputs, Provider
from imagegate.providers.http import HttpClient
from imagegate.providers.openrouter import DEFAULT_BASE_URL, OpenRouterProvider, OpenRouterSettings
from imagegate.results import merge_results
from tests.fakes.faults import Fault
from tests.fakes.images import make_image
from tests.fakes.openrouter import FakeOpenRouter

KEY = "sk-or-v1-0123456789abcdefCanaryOpenRouterKey0123456789abcdef"
SEEDREAM = "seedream-4.5"
FLASH = "gemini-2.5-flash-image"
PRO = "gemini-3-pro-image"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenRouter]:
    server = FakeOpenRouter(key=KEY)
    await server.start()
    yield server
    await server.stop()


def _create(
    tmp_path: Path, base_url: str | None, key: str | None = KEY, enabled: bool = True
) -> OpenRouterProvider | None:
    config = OpenRouterSettings(base_url=base_url, api_key=key, enabled=enabled, api_key_env="IMAGEGATE_TEST_NO_KEY")
    return openrouter.create("openrouter", config, Settings(data_dir=tmp_path))


@pytest.fixture
async def provider(fake: FakeOpenRouter, tmp_path: Path) -> AsyncIterator[OpenRouterProvider]:
    built = _create(tmp_path, fake.base_url)
    assert built is not None
    yield built
    await built.aclose()


def _job(
    model: str = SEEDREAM,
    *,
    mode: str = "text-to-image",
    prompt: str = "a lighthouse at dawn",
    ratio: str | None = None,
    resolution: str | None = None,
    inputs: int = 0,
) -> ProviderJob:
    """The first job the planner makes for the catalog's `openrouter` offering of `model`."""
    offering = load_catalog().get(model).offering("openrouter")  # type: ignore[union-attr]
    assert offering is not None
    wish = build_size_request(None, ratio, resolution)
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


async def test_factory_protocol_and_catalog_modalities(tmp_path: Path, fake: FakeOpenRouter) -> None:
    built = _create(tmp_path, fake.base_url)
    assert isinstance(built, Provider) and built.available() and not built.fallback_only
    assert built.name == "openrouter" and built.extra_offering(load_catalog().get(SEEDREAM)) is None  # type: ignore[arg-type]
    assert built.modalities("bytedance-seed/seedream-4.5") == ("image",)
    assert built.modalities("google/gemini-2.5-flash-image") == ("image", "text")
    assert built.modalities("google/gemini-3-pro-image-preview") == ("image", "text")
    assert built.modalities("someone/unknown-model") == wire.DEFAULT_MODALITIES
    assert _create(tmp_path, fake.base_url, enabled=False) is None
    no_key = _create(tmp_path, fake.base_url, key=None)
    assert no_key is not None and not no_key.available()
    with pytest.raises(UpstreamAuthError) as caught:
        await no_key.run(_job(), None, _ctx())
    assert caught.value.disable_provider and fake.requests == []
    default = openrouter.create(
        "openrouter", OpenRouterSettings(api_key_env="NOPE_NOT_SET"), Settings(data_dir=tmp_path)
    )
    assert default is not None and not default.available()
    assert default.url == f"{DEFAULT_BASE_URL}/chat/completions" == "https://openrouter.ai/api/v1/chat/completions"
    with pytest.raises(NotImplementedError):
        built.stream(_job(), None, _ctx())
    assert openrouter.KIND.name == "openrouter" and openrouter.KIND.settings_model is OpenRouterSettings
    assert openrouter.KIND.default_instance and openrouter.KIND.default_key_env == "OPENROUTER_API_KEY"
    await built.aclose()


def test_modalities_from_rule_values() -> None:
    assert wire.modalities_of(["text", "image"]) == ("image", "text")
    assert wire.modalities_of(["IMAGE"]) == ("image",)
    assert wire.modalities_of(["text"]) is None and wire.modalities_of([]) is None
    assert wire.modalities_of(["image", "audio"]) is None


# --- generations ---------------------------------------------------------------------------------------


async def test_seedream_generation_sends_image_only(provider: OpenRouterProvider, fake: FakeOpenRouter) -> None:
    job = _job()
    assert (job.provider_model, job.size.ratio, job.size.tier) == ("bytedance-seed/seedream-4.5", "1:1", "2K")
    result = await provider.run(job, None, _ctx())
    assert len(result.images) == 1 and result.images[0].format == "png"
    image = _open(result.images[0].data)
    assert (image.format, image.size) == ("PNG", (2048, 2048))
    assert result.usage is not None and result.usage["cost"] == 0.04 and result.billed
    assert result.upstream_request_id and result.upstream_request_id.startswith("gen-")
    assert result.metadata == {"model": "bytedance-seed/seedream-4.5"}
    sent = fake.requests[-1]
    assert sent.path == "/api/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "bytedance-seed/seedream-4.5",
        "messages": [{"role": "user", "content": "a lighthouse at dawn"}],
        "modalities": ["image"],
        "image_config": {"aspect_ratio": "1:1", "image_size": "2K"},
    }


async def test_gemini_generation_sends_image_and_text(provider: OpenRouterProvider, fake: FakeOpenRouter) -> None:
    job = _job(FLASH, ratio="16:9")
    result = await provider.run(job, None, _ctx())
    assert _open(result.images[0].data).size == (1360, 768)  # the fake's 1K area at 16:9
    sent = fake.requests[-1].json
    assert sent["model"] == "google/gemini-2.5-flash-image" and sent["modalities"] == ["image", "text"]
    assert sent["image_config"] == {"aspect_ratio": "16:9"}  # 1K is the default: never sent
    assert result.usage is not None
    assert result.usage["output_tokens_details"] == {"text_tokens": 12, "image_tokens": 1290}
    pro = await provider.run(_job(PRO, ratio="1:1", resolution="4K"), None, _ctx())
    assert _open(pro.images[0].data).size == (4096, 4096)
    sent = fake.requests[-1].json
    assert sent["model"] == "google/gemini-3-pro-image-preview" and sent["modalities"] == ["image", "text"]
    assert sent["image_config"] == {"aspect_ratio": "1:1", "image_size": "4K"}


async def test_usage_cost_is_read_and_summed(provider: OpenRouterProvider) -> None:
    job = _job(FLASH, prompt="a" * 40)
    result = await provider.run(job, None, _ctx())
    expected = 10 * 0.30e-6 + 12 * 2.50e-6 + 1290 * 30e-6
    assert result.usage == {
        "input_tokens": 10,
        "output_tokens": 1302,
        "total_tokens": 1312,
        "output_tokens_details": {"text_tokens": 12, "image_tokens": 1290},
        "cost": pytest.approx(expected),
    }
    merged = merge_results([result, result]).usage
    assert merged is not None and merged["cost"] == pytest.approx(2 * expected)
    # Until pricing reads `usage.cost`, the catalog's per-image price is what the gateway charges.
    seedream = await provider.run(_job(), None, _ctx())
    offering = load_catalog().get(SEEDREAM).offering("openrouter")  # type: ignore[union-attr]
    assert offering is not None
    assert actual_cost(offering, None, Dimensions(2048, 2048), "2K", 1, seedream.usage) == Decimal("0.04")
    assert Decimal(str(seedream.usage["cost"])) == Decimal("0.04")  # type: ignore[index]


def test_usage_without_a_usable_cost() -> None:
    assert wire.usage_of(None) is None
    for cost in (None, "0.04", -1, True, float("nan")):
        usage = wire.usage_of({"prompt_tokens": 3, "completion_tokens": 5, "cost": cost})
        assert usage is not None and "cost" not in usage and usage["total_tokens"] == 8


async def test_extra_goes_into_the_body_but_never_overrides(provider: OpenRouterProvider, fake: FakeOpenRouter) -> None:
    job = dataclasses.replace(
        _job(FLASH),
        extra={"seed": 7, "modalities": ["text"], "model": "evil/model", "messages": "evil", "image_config": {}},
    )
    await provider.run(job, None, _ctx())
    sent = fake.requests[-1].json
    assert sent["seed"] == 7 and sent["modalities"] == ["image", "text"]
    assert sent["model"] == "google/gemini-2.5-flash-image" and sent["messages"][0]["content"] == "a lighthouse at dawn"
    assert sent["image_config"] == {"aspect_ratio": "1:1"}


def test_image_config_without_a_ratio_label() -> None:
    job = _job(FLASH)
    assert wire.image_config(dataclasses.replace(job, size=SizeChoice(dims=Dimensions(1536, 1024)))) == {
        "aspect_ratio": "3:2"
    }
    assert wire.image_config(dataclasses.replace(job, size=SizeChoice(dims=None, auto=True))) is None


# --- edits -----------------------------------------------------------------------------------------------


async def test_edit_sends_input_images_as_image_url_parts(provider: OpenRouterProvider, fake: FakeOpenRouter) -> None:
    job = _job(SEEDREAM, mode="image-edit", prompt="put the cat on the sofa", ratio="4:3", inputs=2)
    images = [_decoded(320, 240, seed=i) for i in range(2)]
    result = await provider.run(job, EditInputs(images=images), _ctx())
    assert _open(result.images[0].data).size == (2368, 1776)  # the fake's 2K area at 4:3
    content = fake.requests[-1].json["messages"][0]["content"]
    assert fake.requests[-1].json["modalities"] == ["image"]
    assert content[0] == {"type": "text", "text": "put the cat on the sofa"} and len(content) == 3
    for index, part in enumerate(content[1:]):
        assert part["type"] == "image_url"
        url = part["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        sent = _open(base64.b64decode(url.partition(",")[2]))
        assert (sent.format, sent.size) == ("PNG", (320, 240))
        assert sent.convert("RGB").tobytes() == images[index].image.tobytes()


async def test_edit_refusals(provider: OpenRouterProvider, fake: FakeOpenRouter) -> None:
    job = _job(FLASH, mode="image-edit", prompt="x", inputs=1)
    with pytest.raises(InvalidRequestError) as no_images:
        await provider.run(job, EditInputs(images=[]), _ctx())
    assert no_images.value.param == "image"
    with pytest.raises(InvalidRequestError) as masked:
        await provider.run(job, EditInputs(images=[_decoded(64, 64)], mask=_decoded(64, 64)), _ctx())
    assert masked.value.param == "mask" and fake.requests == []
    with pytest.raises(InvalidRequestError) as too_many:  # 2.5 Flash takes three: the fake refuses with a 400
        await provider.run(job, EditInputs(images=[_decoded(32, 32, seed=i) for i in range(4)]), _ctx())
    assert "at most 3 input images" in too_many.value.message and too_many.value.message.startswith("openrouter: ")


# --- answers without an image ----------------------------------------------------------------------------


async def test_text_and_no_image_is_a_502_naming_it(provider: OpenRouterProvider) -> None:
    with pytest.raises(UpstreamMalformedError) as caught:
        await provider.run(_job(FLASH, prompt="TEXT_ONLY " + "lorem ipsum " * 60), None, _ctx())
    error = caught.value
    assert error.status == 502 and error.may_have_charged and error.upstream_status == 200
    assert "answered without an image" in error.message and "I would rather describe it in words" in error.message
    assert "finish_reason STOP" in error.message and len(error.message) < 320


@pytest.mark.parametrize(
    "body",
    [
        {"choices": []},
        {"choices": [{"message": {"content": None, "images": []}}]},
        {"choices": [{"message": {"images": [{"image_url": {"url": "https://example.com/a.png"}}]}}]},
        {"choices": [{"message": {"images": [{"image_url": {"url": "data:image/png;base64,@@nope@@"}}]}}]},
        {"choices": [{"message": {"images": [{"image_url": {"url": "data:image/png;base64,aGVsbG8gd29ybGQh"}}]}}]},
        {"error": {"code": 502, "message": "Provider returned error"}},
        [1, 2],
    ],
)
async def test_unusable_200_is_malformed(provider: OpenRouterProvider, fake: FakeOpenRouter, body: object) -> None:
    fake.script.push(Fault("status", status=200, body=body))
    with pytest.raises(UpstreamMalformedError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.may_have_charged and caught.value.retryable


@pytest.mark.parametrize("kind", ["truncate", "malformed", "error_200"])
async def test_broken_200_is_malformed(provider: OpenRouterProvider, fake: FakeOpenRouter, kind: str) -> None:
    fake.script.push(Fault(kind))  # type: ignore[arg-type]
    with pytest.raises(UpstreamMalformedError):
        await provider.run(_job(), None, _ctx())


def test_jpeg_data_url_is_read_by_its_bytes() -> None:
    picture = base64.b64encode(make_image(16, 16, "jpeg")).decode()
    body = {
        "choices": [
            {"message": {"images": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{picture}"}}]}}
        ]
    }
    reply = wire.parse_reply(body, 1)
    assert [fmt for _, fmt in reply.images] == ["jpeg"] and reply.usage is None and reply.response_id is None


# --- error translation -------------------------------------------------------------------------------------


async def test_out_of_credits_disables(fake: FakeOpenRouter, provider: OpenRouterProvider) -> None:
    fake.credits = 0.01
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert error.upstream_status == 402 and error.disable_provider and "no credit left" in error.message
    assert "requires more credits" in error.message


async def test_wrong_modalities_404_names_them(fake: FakeOpenRouter, tmp_path: Path) -> None:
    """A catalog without the modalities rule for an image-only model: image+text is sent, and refused."""
    blind = OpenRouterProvider(
        base_url=fake.base_url,
        api_key=KEY,
        timeout=30,
        http=HttpClient("openrouter", connect_timeout=5, max_connections=4, max_bytes=64 * 1024 * 1024),
        modalities={},
    )
    with pytest.raises(UpstreamError) as caught:
        await blind.run(_job(), None, _ctx())
    await blind.aclose()
    error = caught.value
    assert fake.requests[-1].json["modalities"] == ["image", "text"]
    assert error.upstream_status == 404 and error.retryable and not error.disable_provider
    assert "output modalities image+text" in error.message and "caps.params.modalities" in error.message
    assert "No endpoints found that support the requested output modalities" in error.message


async def test_wrong_key_is_auth_error_and_never_leaks(fake: FakeOpenRouter, tmp_path: Path) -> None:
    wrong = _create(tmp_path, fake.base_url, key="sk-or-v1-WrongButSecret-99999999")
    assert wrong is not None
    with pytest.raises(UpstreamAuthError) as caught:
        await wrong.run(_job(), None, _ctx())
    await wrong.aclose()
    error = caught.value
    assert error.disable_provider and error.upstream_status == 401 and error.retryable
    assert error.message == "openrouter rejected the gateway's credentials (HTTP 401)"
    assert "99999999" not in error.message


async def test_flagged_prompt_is_moderation(provider: OpenRouterProvider) -> None:
    with pytest.raises(ModerationBlockedError) as caught:
        await provider.run(_job(prompt="a FLAGGED scene"), None, _ctx())
    assert caught.value.status == 400 and "Your input was flagged" in caught.value.message


async def test_plain_403_is_refused_credentials(provider: OpenRouterProvider, fake: FakeOpenRouter) -> None:
    fake.script.push(Fault("status", status=403, body={"error": {"code": 403, "message": "key {token} disabled"}}))
    with pytest.raises(UpstreamAuthError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.disable_provider and "disabled" not in caught.value.message


@pytest.mark.parametrize(("headers", "expected"), [({"retry-after": "2"}, 2.0), ({}, None)])
async def test_rate_limit_retry_after(
    provider: OpenRouterProvider, fake: FakeOpenRouter, headers: dict[str, str], expected: float | None
) -> None:
    fake.script.push(Fault("status", status=429, headers=headers))
    with pytest.raises(UpstreamRateLimitError) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert error.retry_after == expected and error.retryable and not error.disable_provider
    assert "rate limit reached" in error.message


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(provider: OpenRouterProvider, fake: FakeOpenRouter, status: int) -> None:
    fake.script.push(Fault("status", status=status, headers={"retry-after": "1"}))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert type(error) is UpstreamError and error.retryable and error.upstream_status == status
    assert error.retry_after == 1.0 and not error.may_have_charged and not error.disable_provider


async def test_timeouts_bad_requests_and_unknown_models(provider: OpenRouterProvider, fake: FakeOpenRouter) -> None:
    fake.script.push(Fault("status", status=408))
    with pytest.raises(UpstreamTimeoutError):
        await provider.run(_job(), None, _ctx())
    bad_ratio = dataclasses.replace(_job(), size=SizeChoice(dims=Dimensions(1000, 300), ratio="10:3", tier="2K"))
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(bad_ratio, None, _ctx())
    assert caught.value.param == "size" and "unsupported aspect_ratio 10:3" in caught.value.message
    with pytest.raises(InvalidRequestError) as unknown:
        await provider.run(dataclasses.replace(_job(), provider_model="someone/nothing"), None, _ctx())
    assert unknown.value.param is None and "not a valid model ID" in unknown.value.message
    fake.script.push(Fault("status", status=404, body={"error": {"code": 404, "message": "Model not found"}}))
    with pytest.raises(UpstreamError) as missing:
        await provider.run(_job(), None, _ctx())
    assert (
        missing.value.upstream_status == 404 and "does not serve this model: Model not found" in missing.value.message
    )


async def test_reset_connection_and_deadline(provider: OpenRouterProvider, fake: FakeOpenRouter) -> None:
    fake.script.push(Fault("reset"))
    with pytest.raises(UpstreamError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.retryable and caught.value.code == "upstream_connection_reset"
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
    provider: OpenRouterProvider, fake: FakeOpenRouter, status: int, kind: type[ImagegateError]
) -> None:
    echoed = {"error": {"code": status, "message": "you sent Authorization: {authorization} (key={token})"}}
    fake.script.push(Fault("status", status=status, body=echoed, headers={"x-echo": "{token}"}))
    with pytest.raises(kind) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert KEY not in error.message and KEY[10:30] not in error.message and "you sent" in error.message
    assert all(KEY not in str(value) for value in (error.param, error.code, *error.headers.values()))
    said = {"choices": [{"message": {"content": "your key is {token}", "images": []}, "finish_reason": "stop"}]}
    fake.script.push(Fault("status", status=200, body=said))
    with pytest.raises(UpstreamMalformedError) as quoted:
        await provider.run(_job(), None, _ctx())
    assert KEY not in quoted.value.message and "the model said" in quoted.value.message


# --- the fake itself ---------------------------------------------------------------------------------------


async def test_fake_checks_key_and_serves_control_routes(fake: FakeOpenRouter) -> None:
    url = f"{fake.base_url}/chat/completions"
    body = {
        "model": "google/gemini-2.5-flash-image",
        "messages": [{"role": "user", "content": "x"}],
        "modalities": ["image"],
    }
    auth = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body) as reply:
            assert reply.status == 401 and (await reply.json())["error"]["message"] == "No auth credentials found"
        async with session.post(f"{fake.root_url}/_fake/faults", json=[{"kind": "status", "status": 503}]) as reply:
            assert (await reply.json())["queued"] == 1
        async with session.post(url, json=body, headers=auth) as reply:
            assert reply.status == 503 and (await reply.json())["error"]["code"] == 503
        async with session.post(url, json=body, headers=auth) as reply:
            message = (await reply.json())["choices"][0]["message"]
            assert reply.status == 200 and message["content"] == "" and len(message["images"]) == 1  # image only
        async with session.post(url, json={**body, "modalities": ["text"]}, headers=auth) as reply:
            assert reply.status == 200 and "images" not in (await reply.json())["choices"][0]["message"]
        async with session.get(f"{fake.root_url}/_fake/requests") as reply:
            assert len(await reply.json()) == 4
        async with session.post(f"{fake.root_url}/_fake/clear") as reply:
            assert reply.status == 200
    assert fake.requests == [] and not fake.script.queue


def test_fake_runs_in_a_thread() -> None:
    server = FakeOpenRouter(key=KEY)

    async def call(base_url: str) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base_url}/chat/completions", json={"model": "x"}, headers={"Authorization": f"Bearer {KEY}"}
            ) as reply,
        ):
            return reply.status

    with server.run_in_thread() as base_url:
        assert base_url.startswith("http://127.0.0.1:") and asyncio.run(call(base_url)) == 400
    assert len(server.requests) == 1
