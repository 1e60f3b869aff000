"""The newer fal offerings (Seedream 4.5, FLUX.2 [pro], Qwen-Image, Recraft V3, Ideogram 3.0) against
the fake fal.ai, with jobs planned from the catalog: one call each, checking what fal was sent."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imagegate.catalog.loader import load_catalog
from imagegate.config import Settings
from imagegate.core.normalize import plan_request
from imagegate.core.types import ProviderJob
from imagegate.errors import InvalidRequestError
from imagegate.imaging.probe import ImageLimits, decode_image
from imagegate.providers import fal
from imagegate.providers.base import CallContext, EditInputs
from imagegate.providers.fal import FalProvider, FalSettings
from imagegate.schemas import EditParams, GenerateParams, parse_params, to_public
from tests.fakes.fal import FakeFal
from tests.fakes.images import make_image

KEY = "fal-key-id:fal-secret"
CATALOG = load_catalog()


@pytest.fixture
async def fake() -> AsyncIterator[FakeFal]:
    server = FakeFal(key=KEY, job_seconds=0.02)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def provider(fake: FakeFal, tmp_path: Path) -> AsyncIterator[FalProvider]:
    section = FalSettings(
        base_url=fake.run_url,
        queue_url=fake.queue_url,
        api_key=KEY,
        api_key_env="IMAGEGATE_TEST_NO_FAL_KEY",
        poll_interval_seconds=0.01,
        poll_max_interval_seconds=0.05,
    )
    settings = Settings(data_dir=tmp_path, providers={"fal": section})
    built = fal.create("fal", settings.provider("fal"), settings)  # type: ignore[arg-type]
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


def _ctx() -> CallContext:
    return CallContext(request_id="t", deadline=asyncio.get_running_loop().time() + 30.0)


def _inputs(count: int) -> EditInputs:
    return EditInputs(
        images=[decode_image(make_image(256, 256, "png", seed=i), "image", ImageLimits()) for i in range(count)]
    )


def _dims(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _submit(fake: FakeFal) -> Any:
    (submit,) = [r for r in fake.requests if r.method == "POST"]
    return submit


async def test_seedream_text_to_image_custom_size(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("seedream-4.5", {"size": "2048x1152", "n": 2, "seed": 7})
    result = await provider.run(job, None, _ctx())
    submit = _submit(fake)
    assert submit.path == "/queue/fal-ai/bytedance/seedream/v4.5/text-to-image"
    assert submit.json == {
        "prompt": "a lighthouse at dusk",
        "image_size": {"width": 2048, "height": 1152},
        "num_images": 2,
        "seed": 7,
    }
    assert [(_dims(i.data), i.format) for i in result.images] == [((2048, 1152), "png")] * 2


async def test_seedream_edit_sends_image_urls(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("seedream-4.5", {"size": "2048x2048"}, mode="image-edit", images=3)
    result = await provider.run(job, _inputs(3), _ctx())
    submit = _submit(fake)
    assert submit.path == "/queue/fal-ai/bytedance/seedream/v4.5/edit"
    urls = submit.json["image_urls"]
    assert len(urls) == 3 and all(url.startswith("data:image/png;base64,") for url in urls)
    assert "output_format" not in submit.json and "image_url" not in submit.json
    assert _dims(result.images[0].data) == (2048, 2048)


async def test_flux_2_pro_preset_without_num_images(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("flux-2-pro", {"size": "1024x576", "output_format": "png", "safety_tolerance": "3"})
    result = await provider.run(job, None, _ctx())
    submit = _submit(fake)
    assert submit.path == "/queue/fal-ai/flux-2-pro"
    assert submit.json == {
        "prompt": "a lighthouse at dusk",
        "image_size": "landscape_16_9",
        "output_format": "png",
        "safety_tolerance": "3",
    }
    assert (_dims(result.images[0].data), result.images[0].format) == ((1024, 576), "png")
    assert any(r.path.startswith("/queue/fal-ai/flux-2-pro/requests/") for r in fake.requests)


async def test_flux_2_pro_edit(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("flux-2-pro", {"size": "1280x720"}, mode="image-edit", images=2)
    result = await provider.run(job, _inputs(2), _ctx())
    submit = _submit(fake)
    assert submit.path == "/queue/fal-ai/flux-2-pro/edit"
    assert submit.json["image_size"] == {"width": 1280, "height": 720}
    assert len(submit.json["image_urls"]) == 2 and "num_images" not in submit.json
    assert (_dims(result.images[0].data), result.images[0].format) == ((1280, 720), "jpeg")


async def test_qwen_image(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("qwen-image", {"size": "1024x768", "n": 3, "negative_prompt": "blurry", "output_format": "jpeg"})
    result = await provider.run(job, None, _ctx())
    submit = _submit(fake)
    assert submit.path == "/queue/fal-ai/qwen-image"
    assert submit.json == {
        "prompt": "a lighthouse at dusk",
        "image_size": "landscape_4_3",
        "num_images": 3,
        "output_format": "jpeg",
        "negative_prompt": "blurry",
    }
    assert [(_dims(i.data), i.format) for i in result.images] == [((1024, 768), "jpeg")] * 3


async def test_recraft_v3_one_image_no_format(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("recraft-v3", {"size": "1024x1024", "style": "digital_illustration"})
    assert job.n == 1
    result = await provider.run(job, None, _ctx())
    submit = _submit(fake)
    assert submit.path == "/queue/fal-ai/recraft/v3/text-to-image"
    assert submit.json == {"prompt": "a lighthouse at dusk", "image_size": "square_hd", "style": "digital_illustration"}
    assert (_dims(result.images[0].data), result.images[0].format) == ((1024, 1024), "webp")


async def test_ideogram_v3(provider: FalProvider, fake: FakeFal) -> None:
    job = _job("ideogram-v3", {"size": "768x1024", "n": 2, "rendering_speed": "TURBO"})
    result = await provider.run(job, None, _ctx())
    submit = _submit(fake)
    assert submit.path == "/queue/fal-ai/ideogram/v3"
    assert submit.json == {
        "prompt": "a lighthouse at dusk",
        "image_size": "portrait_4_3",
        "num_images": 2,
        "rendering_speed": "TURBO",
    }
    assert [(_dims(i.data), i.format) for i in result.images] == [((768, 1024), "png")] * 2


async def test_the_fake_refuses_a_field_the_endpoint_lacks(provider: FalProvider) -> None:
    """Guards the fake itself: were num_images sent to FLUX.2 [pro], fal's 422 names our `n`."""
    job = dataclasses.replace(_job("flux-2-pro", {}), extra={"num_images": 1})
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(job, None, _ctx())
    assert caught.value.param == "n"
