"""End to end: `imagegate serve` as a real process, driven by the official `openai` SDK."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pybase64
import pytest
from PIL import Image, ImageChops

from tests.gateway_process import gateway_process
from tests.helpers import mask_bytes, png_bytes

PIL_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF", "avif": "AVIF"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gateway_process(tmp_path_factory.mktemp("gateway-data")) as base:
        yield base


@pytest.fixture(scope="module")
def sdk(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="not-needed-for-sandbox", max_retries=0)


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("fmt", sorted(PIL_NAMES))
@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_generate_every_format_both_response_formats(sdk: openai.OpenAI, fmt: str, response_format: str) -> None:
    result = sdk.images.generate(
        model="gpt-image-1",
        prompt=f"a {fmt} lighthouse",
        size="1536x1024",
        output_format=fmt,  # type: ignore[arg-type]  # avif is our extension
        response_format=response_format,  # type: ignore[arg-type]
    )
    item = result.data[0]
    if response_format == "b64_json":
        assert item.url is None
        data = pybase64.b64decode(item.b64_json)
    else:
        assert item.b64_json is None and item.url
        fetched = httpx.get(item.url, timeout=10)
        assert fetched.status_code == 200
        assert fetched.headers["content-type"] == f"image/{fmt}"
        data = fetched.content
    image = _open(data)
    assert image.format == PIL_NAMES[fmt]
    assert image.size == (1536, 1024)
    assert result.size == "1536x1024" and result.output_format == fmt
    extension = result.model_extra["imagegate"]
    assert extension["provider"] == "sandbox" and extension["cost_usd"] == "0"


def test_generate_n_and_headers(sdk: openai.OpenAI) -> None:
    raw = sdk.images.with_raw_response.generate(model="dall-e-3", prompt="two of them", n=2, response_format="b64_json")
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-imagegate-provider"] == "sandbox"
    result = raw.parse()
    assert len(result.data) == 2
    assert result.model_extra["imagegate"]["request_id"] == raw.headers["x-request-id"]


def test_edit_with_ten_images_and_a_mask(sdk: openai.OpenAI, tmp_path: Path) -> None:
    base = png_bytes(1024, 1024, (20, 90, 160))
    images = [("base.png", base, "image/png")]
    images += [(f"ref{i}.png", png_bytes(128, 96, (i * 25, 200, 50)), "image/png") for i in range(9)]
    mask = mask_bytes(1024, 1024, (0, 0, 1024, 512))  # top half editable
    result = sdk.images.edit(
        model="gpt-image-1",
        prompt="a sunset in the top half",
        image=images,
        mask=("mask.png", mask, "image/png"),
        size="1024x1024",
        response_format="b64_json",  # type: ignore[arg-type]
    )
    out = _open(pybase64.b64decode(result.data[0].b64_json)).convert("RGB")
    original = _open(base).convert("RGB")
    bottom = (0, 512, 1024, 1024)
    top = (0, 0, 1024, 512)
    assert ImageChops.difference(out.crop(bottom), original.crop(bottom)).getbbox() is None
    assert ImageChops.difference(out.crop(top), original.crop(top)).getbbox() is not None
    assert result.model_extra["imagegate"]["mode"] == "image-edit"


def test_eleven_image_edit_is_refused(sdk: openai.OpenAI) -> None:
    images = [(f"{i}.png", png_bytes(32, 32), "image/png") for i in range(11)]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.edit(model="gpt-image-1", prompt="too many", image=images)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "image"


def test_unknown_model_is_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.images.generate(model="no-such-model", prompt="x")
    assert caught.value.body["param"] == "model"


def test_models_through_the_sdk(sdk: openai.OpenAI) -> None:
    ids = {model.id for model in sdk.models.list()}
    assert "gpt-image-1" in ids and "flux-1-schnell" in ids
    model = sdk.models.retrieve("gpt-image-2")
    assert model.model_extra["max_resolution"] == "3840x2160"


def test_streaming_with_the_sdk_iterator(sdk: openai.OpenAI) -> None:
    stream = sdk.images.generate(model="gpt-image-1", prompt="streamed lighthouse", stream=True, partial_images=2)
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds == ["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    final = _open(pybase64.b64decode(events[-1].b64_json))
    assert final.size == (1024, 1024)


def test_dry_run_through_the_sdk(sdk: openai.OpenAI) -> None:
    raw = sdk.images.with_raw_response.generate(model="gpt-image-1", prompt="x", extra_body={"dry_run": True})
    body = raw.http_response.json()
    assert body["dry_run"] is True and body["candidates"][0]["provider"] == "sandbox"
