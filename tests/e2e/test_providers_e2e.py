"""End to end: `imagegate serve` in front of the fake OpenAI and fal servers, driven by the `openai` SDK.

gpt-image-1 is retired at OpenAI (per the SDK), so the gateway's config forces the OpenAI offering
back to active, as an operator would; OpenAI is priority 0 and fal priority 1.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import httpx
import openai
import pybase64
import pytest
from PIL import Image

from tests.fakes.fal import FakeFal
from tests.fakes.faults import Fault
from tests.fakes.openai import FakeOpenAI
from tests.gateway_process import gateway_process
from tests.helpers import mask_bytes, png_bytes

OPENAI_KEY = "sk-e2e-openai-secret"
FAL_KEY = "e2e-fal-id:e2e-fal-secret"


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOpenAI, FakeFal, str, str, str]]:
    openai_fake = FakeOpenAI(key=OPENAI_KEY)
    fal_fake = FakeFal(key=FAL_KEY, job_seconds=0.05)
    with openai_fake.run_in_thread() as openai_url, fal_fake.run_in_thread() as (run_url, queue_url):
        yield openai_fake, fal_fake, openai_url, run_url, queue_url


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _, _, openai_url, run_url, queue_url = fakes
    data_dir = tmp_path_factory.mktemp("gw")
    config = f"""
request_timeout_seconds = 20
[providers.openai]
base_url = "{openai_url}"
api_key_env = "E2E_OPENAI_KEY"
[providers.fal]
base_url = "{run_url}"
queue_url = "{queue_url}"
api_key_env = "E2E_FAL_KEY"
poll_interval_seconds = 0.02
[catalog.status."gpt-image-1"]
openai = "active"
[routing]
backoff_base_seconds = 0.01
breaker_failures = 50
[routing.models."gpt-image-1"]
providers = [{{provider = "openai", priority = 0}}, {{provider = "fal", priority = 1}}]
"""
    env = {"E2E_OPENAI_KEY": OPENAI_KEY, "E2E_FAL_KEY": FAL_KEY}
    with gateway_process(data_dir, config, env) as base:
        yield base


@pytest.fixture
def sdk(gateway: str, fakes) -> Iterator[openai.OpenAI]:
    openai_fake, fal_fake = fakes[0], fakes[1]
    for fake in (openai_fake, fal_fake):
        fake.script.clear()
        fake.requests.clear()
    yield openai.OpenAI(base_url=f"{gateway}/v1", api_key="caller-key-unused", max_retries=0)


def _image(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(pybase64.b64decode(b64)))
    image.load()
    return image


def _ten_images() -> list[tuple[str, bytes, str]]:
    return [(f"in{i}.png", png_bytes(512, 512, (i * 20, 100, 200)), "image/png") for i in range(10)]


def _paths(fake) -> list[str]:
    return [r.path for r in fake.requests if not r.path.startswith("/_fake")]


def test_generate_served_by_openai_with_token_cost(sdk, fakes):
    openai_fake = fakes[0]
    raw = sdk.images.with_raw_response.generate(
        model="gpt-image-1", prompt="a fox", quality="low", size="1536x1024", response_format="b64_json"
    )
    result = raw.parse()
    meta = result.model_extra["imagegate"]
    assert meta["provider"] == "openai" and _image(result.data[0].b64_json).size == (1536, 1024)
    assert result.usage.output_tokens > 0
    assert raw.headers["x-imagegate-cost-usd"] == meta["cost_usd"] != "0"
    assert openai_fake.requests[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_edit_ten_images_and_mask_served_by_openai(sdk, fakes):
    openai_fake = fakes[0]
    result = sdk.images.edit(
        model="gpt-image-1",
        prompt="merge",
        image=_ten_images(),
        mask=("m.png", mask_bytes(512, 512, (0, 0, 256, 512)), "image/png"),
    )
    assert result.model_extra["imagegate"]["provider"] == "openai"
    sent = openai_fake.requests[-1]
    assert [name for name, _, _ in sent.files].count("image[]") == 10
    assert "mask" in [name for name, _, _ in sent.files]


def test_generate_fails_over_to_fal(sdk, fakes):
    openai_fake, fal_fake = fakes[0], fakes[1]
    openai_fake.script.push(Fault("status", status=500), times=2)
    result = sdk.images.generate(model="gpt-image-1", prompt="fail over", quality="medium")
    meta = result.model_extra["imagegate"]
    assert meta["provider"] == "fal"
    assert [(a["provider"], a["status"]) for a in meta["attempts"]] == [
        ("openai", "error"),
        ("openai", "error"),
        ("fal", "ok"),
    ]
    assert meta["cost_usd"] == "0.042"  # fal passes through OpenAI's per-image rate
    assert any("/queue/fal-ai/gpt-image-1/text-to-image" in p for p in _paths(fal_fake))


def test_edit_ten_images_fails_over_to_fal(sdk, fakes):
    openai_fake, fal_fake = fakes[0], fakes[1]
    openai_fake.script.push(Fault("status", status=503), times=2)
    result = sdk.images.edit(model="gpt-image-1", prompt="merge", image=_ten_images())
    assert result.model_extra["imagegate"]["provider"] == "fal"
    submit = next(r for r in fal_fake.requests if r.path.endswith("/edit-image"))
    assert len(submit.json["image_urls"]) == 10


def test_masked_edit_is_never_sent_to_fal(sdk, fakes):
    openai_fake, fal_fake = fakes[0], fakes[1]
    openai_fake.script.push(Fault("status", status=500), times=2)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.images.edit(
            model="gpt-image-1",
            prompt="masked",
            image=_ten_images()[:2],
            mask=("m.png", mask_bytes(512, 512, (0, 0, 10, 10)), "image/png"),
        )
    assert caught.value.status_code == 502
    assert _paths(fal_fake) == []


def test_provider_prefix_forces_fal(sdk, fakes):
    openai_fake = fakes[0]
    result = sdk.images.generate(model="fal/gpt-image-1", prompt="forced")
    assert result.model_extra["imagegate"]["provider"] == "fal"
    assert _paths(openai_fake) == []


def test_streaming_two_partials_from_openai(sdk, fakes):
    events = list(sdk.images.generate(model="gpt-image-1", prompt="stream", stream=True, partial_images=2))
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert events[-1].usage.output_tokens > 0
    assert fakes[0].requests[-1].json["stream"] is True


def test_upstream_bad_parameter_is_our_400_without_failover(sdk, fakes):
    openai_fake, fal_fake = fakes[0], fakes[1]
    openai_fake.script.push(
        Fault(
            "status",
            status=400,
            body={
                "error": {
                    "message": "Invalid value: 'x'.",
                    "type": "invalid_request_error",
                    "param": "quality",
                    "code": "invalid_value",
                }
            },
        )
    )
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(model="gpt-image-1", prompt="bad")
    assert caught.value.body["param"] == "quality"
    assert _paths(fal_fake) == []


def test_moderation_refusal_is_not_failed_over(sdk, fakes):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(model="gpt-image-1", prompt="BLOCKED_BY_SAFETY please")
    assert caught.value.body["code"] == "moderation_blocked"
    assert _paths(fakes[1]) == []


def test_client_disconnect_cancels_the_fal_job(gateway, fakes):
    fal_fake = fakes[1]
    fal_fake.script.clear()
    fal_fake.script.push(Fault("stall"))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway}/v1/images/generations", json={"model": "fal/gpt-image-1", "prompt": "slow"}, timeout=1.0)
    deadline = time.monotonic() + 5
    while not fal_fake.cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fal_fake.cancelled
