"""End to end with the official `openai` SDK against one `imagegate serve` process in front of the fake
Black Forest Labs, Replicate and OpenRouter APIs: FLUX.2 pro at 1920x1080, a Kontext edit with two
references (BFL), flux-schnell at 21:9 (Replicate), Seedream 4.5 via OpenRouter. Run with `-s` for the
transcript (the SDK call and the upstream request)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import openai
import pybase64
import pytest
from PIL import Image

from tests.fakes.bfl import FakeBFL
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.replicate import FakeReplicate
from tests.gateway_process import gateway_process
from tests.helpers import png_bytes

BFL_KEY = "bfl-e2e-key-0123456789"
REPLICATE_KEY = "r8_e2eReplicateKey0123456789"
OPENROUTER_KEY = "sk-or-v1-e2e0123456789abcdef"


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    bfl, replicate, router = FakeBFL(key=BFL_KEY), FakeReplicate(key=REPLICATE_KEY), FakeOpenRouter(key=OPENROUTER_KEY)
    with bfl.run_in_thread(), replicate.run_in_thread(), router.run_in_thread():
        yield {"bfl": bfl, "replicate": replicate, "openrouter": router}


@pytest.fixture(scope="module")
def sdk(fakes: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    config = f"""
default_response_format = "b64_json"
request_timeout_seconds = 30
[providers.bfl]
base_url = "{fakes["bfl"].base_url}"
api_key_env = "E2E_MARKET_BFL_KEY"
poll_interval_seconds = 0.02
[providers.replicate]
base_url = "{fakes["replicate"].base_url}"
api_key_env = "E2E_MARKET_REPLICATE_KEY"
[providers.openrouter]
base_url = "{fakes["openrouter"].base_url}"
api_key_env = "E2E_MARKET_OPENROUTER_KEY"
"""
    env = {
        "E2E_MARKET_BFL_KEY": BFL_KEY,
        "E2E_MARKET_REPLICATE_KEY": REPLICATE_KEY,
        "E2E_MARKET_OPENROUTER_KEY": OPENROUTER_KEY,
    }
    with gateway_process(tmp_path_factory.mktemp("gw"), config, env) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="caller-key-unused", max_retries=0)


def _size(b64: str | None) -> tuple[int, int]:
    assert b64 is not None
    with Image.open(io.BytesIO(pybase64.b64decode(b64))) as image:
        return image.size


def _last(fake: Any, path_part: str) -> Any:
    return [r for r in fake.requests if path_part in r.path][-1]


def _transcript(call: str, result: Any, upstream: Any) -> None:
    meta = result.model_extra["imagegate"]
    shown = json.dumps(upstream.json, default=str)
    shown = shown if len(shown) <= 400 else shown[:400] + "..."
    print(f"\n$ {call}\n  -> provider {meta['provider']}, size {result.size}, cost {meta['cost_usd']}")
    print(f"  upstream {upstream.method} {upstream.path}\n  body {shown}")


def test_flux_2_pro_at_1920x1080_on_bfl(sdk: openai.OpenAI, fakes: dict[str, Any]) -> None:
    result = sdk.images.generate(model="flux-2-pro", prompt="a harbour at dawn", size="1920x1080")
    sent = _last(fakes["bfl"], "/flux-2-pro")
    assert result.model_extra["imagegate"]["provider"] == "bfl"
    assert (sent.json["width"], sent.json["height"]) == _size(result.data[0].b64_json) == (1920, 1088)
    assert sent.headers["x-key"] == BFL_KEY
    _transcript("images.generate(model='flux-2-pro', size='1920x1080')", result, sent)


def test_a_kontext_edit_with_two_references_on_bfl(sdk: openai.OpenAI, fakes: dict[str, Any]) -> None:
    images = [(f"ref{i}.png", png_bytes(512, 512, (i * 120, 80, 40)), "image/png") for i in range(2)]
    result = sdk.images.edit(model="flux-kontext-max", prompt="the two characters shake hands", image=images)
    sent = _last(fakes["bfl"], "/flux-kontext-max")
    assert result.model_extra["imagegate"]["provider"] == "bfl"
    assert sent.json.get("input_image") and sent.json.get("input_image_2") and not sent.json.get("input_image_3")
    _transcript("images.edit(model='flux-kontext-max', image=[2 PNGs])", result, sent)


def test_flux_schnell_at_21_9_on_replicate(sdk: openai.OpenAI, fakes: dict[str, Any]) -> None:
    result = sdk.images.generate(
        model="replicate/flux-1-schnell", prompt="a wide canyon", extra_body={"aspect_ratio": "21:9"}
    )
    sent = _last(fakes["replicate"], "/predictions")
    assert result.model_extra["imagegate"]["provider"] == "replicate"
    assert sent.json["input"]["aspect_ratio"] == "21:9"
    width, height = _size(result.data[0].b64_json)
    assert abs(width / height - 21 / 9) < 0.05
    _transcript("images.generate(model='replicate/flux-1-schnell', aspect_ratio='21:9')", result, sent)


def test_seedream_4_5_via_openrouter(sdk: openai.OpenAI, fakes: dict[str, Any]) -> None:
    result = sdk.images.generate(model="seedream-4.5", prompt="a paper crane on a desk")
    sent = _last(fakes["openrouter"], "/chat/completions")
    meta = result.model_extra["imagegate"]
    assert meta["provider"] == "openrouter" and sent.json["modalities"] == ["image"]
    assert meta["cost_usd"] is not None  # OpenRouter's usage.cost, as it reported it
    _transcript("images.generate(model='seedream-4.5')", result, sent)
