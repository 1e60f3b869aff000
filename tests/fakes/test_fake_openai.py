"""The fake OpenAI Images API's own tests: it must accept and refuse what OpenAI does (openai-python 3.57).

Each rule gets an accepted and a refused case, sent over real HTTP as JSON or multipart.
"""

from __future__ import annotations

import base64
import io
import itertools
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image, ImageChops, ImageSequence

from tests.fakes.images import data_uri, make_image
from tests.fakes.openai import FakeOpenAI

KEY = "sk-fake-own"
GPT_2_5 = ("gpt-image-2.5-sunburst", "gpt-image-2.5-flare", "gpt-image-2.5-sunburst-2026-09-08")
GPT_2_6 = ("gpt-image-2.6-sunburst", "gpt-image-2.6-flare")
SVG_NS = "{http://www.w3.org/2000/svg}"

Reply = tuple[int, dict[str, Any]]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    fake = FakeOpenAI(key=KEY)
    await fake.start()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        yield Api(fake, session)
    await fake.stop()


class Api:
    """Posts to the fake: `gen` sends JSON generations, `edit` sends multipart (or JSON with `as_json`)."""

    def __init__(self, fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
        self.fake, self.session = fake, session

    async def gen(self, **body: Any) -> Reply:
        body.setdefault("prompt", "a lighthouse at dawn")
        async with self.session.post(f"{self.fake.base_url}/images/generations", json=body) as reply:
            return reply.status, await reply.json()

    async def edit(self, files: dict[str, bytes | list[bytes]], fields: dict[str, str]) -> Reply:
        form = aiohttp.FormData()
        form.add_field("prompt", fields.pop("prompt", "add a moon"))
        for name, value in fields.items():
            form.add_field(name, value)
        for name, data in files.items():
            for one in data if isinstance(data, list) else [data]:
                form.add_field(name, one, filename=f"{name}.png", content_type="image/png")
        async with self.session.post(f"{self.fake.base_url}/images/edits", data=form) as reply:
            return reply.status, await reply.json()

    async def edit_json(self, **body: Any) -> Reply:
        body.setdefault("prompt", "add a moon")
        async with self.session.post(f"{self.fake.base_url}/images/edits", json=body) as reply:
            return reply.status, await reply.json()


def refused(reply: Reply, param: str) -> str:
    """Asserts an OpenAI-shaped 400 naming `param`; returns the message."""
    status, body = reply
    assert status == 400, body
    error = body["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert isinstance(error["message"], str) and error["message"]
    return str(error["message"])


def ok(reply: Reply) -> dict[str, Any]:
    status, body = reply
    assert status == 200, body
    return body


def decoded(body: dict[str, Any], index: int = 0) -> bytes:
    return base64.b64decode(body["data"][index]["b64_json"])


def png(width: int, height: int, alpha: tuple[int, int] | None = None) -> bytes:
    """An RGB PNG, or RGBA whose left half has alpha alpha[0] and right half alpha[1]."""
    image = Image.new("RGBA" if alpha else "RGB", (width, height), (200, 30, 30))
    if alpha:
        mask = Image.new("L", (width, height), alpha[1])
        mask.paste(alpha[0], (0, 0, width // 2, height))
        image.putalpha(mask)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


MARKUP = png(64, 64, alpha=(0, 255))  # half transparent: a valid markup for a 64x64 image
PHOTO = png(64, 64)


# --- models and sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "gpt-image-1",
        "gpt-image-1-mini",
        "gpt-image-1.5",
        "chatgpt-image-latest",
        "gpt-image-2",
        "gpt-image-2-2026-04-21",
        "gpt-image-2.5-sunburst",
        "gpt-image-2.5-flare",
        "gpt-image-2.5-sunburst-2026-09-08",
        "gpt-image-2.5-flare-2026-09-08",
        "gpt-image-2.6-sunburst",
        "gpt-image-2.6-flare",
        "dall-e-2",
        "dall-e-3",
    ],
)
async def test_every_sdk_model_is_served(api: Api, model: str) -> None:
    gpt = model.startswith(("gpt", "chatgpt"))
    body = ok(await api.gen(model=model, size="1024x1024", **({} if gpt else {"response_format": "b64_json"})))
    assert Image.open(io.BytesIO(decoded(body))).size == (1024, 1024)
    assert ("usage" in body) is gpt


@pytest.mark.parametrize("model", ["gpt-image-2.7-flare", "gpt-image-2.5-sunburst-2025-01-01", "gpt-image-2.6"])
async def test_unknown_models_are_refused(api: Api, model: str) -> None:
    refused(await api.gen(model=model), "model")


@pytest.mark.parametrize("model", [*GPT_2_5, *GPT_2_6, "gpt-image-2"])
async def test_free_sizes(api: Api, model: str) -> None:
    body = ok(await api.gen(model=model, size="1536x864", quality="low"))
    assert body["size"] == "1536x864" and Image.open(io.BytesIO(decoded(body))).size == (1536, 864)
    refused(await api.gen(model=model, size="1000x1000"), "size")  # not multiples of 16
    refused(await api.gen(model=model, size="3200x1024"), "size")  # wider than 3:1
    refused(await api.gen(model=model, size="3840x2176"), "size")  # more than 3840x2160 pixels


async def test_discrete_sizes_stay_discrete(api: Api) -> None:
    assert ok(await api.gen(model="gpt-image-1.5", size="1024x1536"))["size"] == "1024x1536"
    refused(await api.gen(model="gpt-image-1.5", size="1536x864"), "size")


# --- quality, complexity, formats --------------------------------------------------------------------


@pytest.mark.parametrize("model", [*GPT_2_5, *GPT_2_6])
async def test_xhigh_and_max_on_2_5_and_2_6(api: Api, model: str) -> None:
    tokens = {}
    for quality in ("high", "xhigh", "max"):
        body = ok(await api.gen(model=model, quality=quality, size="1024x1024"))
        assert body["quality"] == quality
        tokens[quality] = body["usage"]["output_tokens_details"]["image_tokens"]
    assert tokens["high"] < tokens["xhigh"] < tokens["max"]


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-1.5", "gpt-image-2", "chatgpt-image-latest", "dall-e-3"])
@pytest.mark.parametrize("quality", ["xhigh", "max"])
async def test_xhigh_and_max_refused_elsewhere(api: Api, model: str, quality: str) -> None:
    refused(await api.gen(model=model, quality=quality), "quality")


async def test_complexity_only_on_2_6(api: Api) -> None:
    low = ok(await api.gen(model="gpt-image-2.6-flare", complexity="low"))
    high = ok(await api.gen(model="gpt-image-2.6-flare", complexity="high"))
    assert low["usage"]["output_tokens_details"]["text_tokens"] < high["usage"]["output_tokens_details"]["text_tokens"]
    for model in ("gpt-image-2.5-flare", "gpt-image-2", "gpt-image-1", "dall-e-3"):
        refused(await api.gen(model=model, complexity="low"), "complexity")
    refused(await api.gen(model="gpt-image-2.6-flare", complexity="extreme"), "complexity")
    ok(await api.edit({"image": PHOTO}, {"model": "gpt-image-2.6-sunburst", "complexity": "medium"}))
    refused(await api.edit({"image": PHOTO}, {"model": "gpt-image-2.5-sunburst", "complexity": "medium"}), "complexity")


@pytest.mark.parametrize("fmt", ["gif", "svg"])
async def test_gif_and_svg_only_on_2_6(api: Api, fmt: str) -> None:
    assert ok(await api.gen(model="gpt-image-2.6-sunburst", output_format=fmt, size="256x256"))["output_format"] == fmt
    for model in ("gpt-image-2.5-sunburst", "gpt-image-2", "gpt-image-1"):
        refused(await api.gen(model=model, output_format=fmt), "output_format")
    refused(await api.gen(model="gpt-image-2.6-sunburst", output_format="bmp"), "output_format")


@pytest.mark.parametrize("fmt", ["gif", "svg", "jpeg"])
async def test_transparent_background_needs_png_or_webp(api: Api, fmt: str) -> None:
    assert ok(await api.gen(model="gpt-image-2.6-flare", background="transparent"))["background"] == "transparent"
    refused(await api.gen(model="gpt-image-2.6-flare", background="transparent", output_format=fmt), "background")


# --- GIF ---------------------------------------------------------------------------------------------


async def test_gif_is_a_real_looping_animation(api: Api) -> None:
    body = ok(await api.gen(model="gpt-image-2.6-flare", output_format="gif", size="320x192", frame_count=5))
    gif = Image.open(io.BytesIO(decoded(body)))
    assert (gif.format, gif.size, gif.n_frames, gif.info["loop"]) == ("GIF", (320, 192), 5, 0)
    frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(gif)]
    assert [frame.info.get("duration") for frame in ImageSequence.Iterator(gif)] == [200] * 5
    assert all(ImageChops.difference(a, b).getbbox() for a, b in itertools.pairwise(frames))
    assert body["size"] == "320x192" and body["output_format"] == "gif"


@pytest.mark.parametrize(("asked", "delay"), [(None, 200), (1234, 1230), (15, 20), (10**7, 655350)])
async def test_gif_frame_delays(api: Api, asked: int | None, delay: int) -> None:
    extra = {} if asked is None else {"frame_duration_ms": asked}
    body = ok(await api.gen(model="gpt-image-2.6-sunburst", output_format="gif", size="64x64", **extra))
    gif = Image.open(io.BytesIO(decoded(body)))
    assert gif.n_frames == 9  # the default frame_count
    assert {frame.info.get("duration") for frame in ImageSequence.Iterator(gif)} == {delay}


async def test_gif_auto_size_is_square(api: Api) -> None:
    body = ok(await api.gen(model="gpt-image-2.6-sunburst", output_format="gif", frame_count=2))
    assert body["size"] == "1024x1024" and Image.open(io.BytesIO(decoded(body))).size == (1024, 1024)


@pytest.mark.parametrize(("name", "value"), [("frame_count", 1), ("frame_count", 17), ("frame_duration_ms", 0)])
async def test_gif_ranges(api: Api, name: str, value: int) -> None:
    refused(await api.gen(model="gpt-image-2.6-sunburst", output_format="gif", **{name: value}), name)


@pytest.mark.parametrize(("name", "value"), [("frame_count", 4), ("frame_duration_ms", 100)])
async def test_gif_fields_need_gif_output(api: Api, name: str, value: int) -> None:
    refused(await api.gen(model="gpt-image-2.6-sunburst", **{name: value}), name)
    refused(await api.gen(model="gpt-image-2.6-sunburst", output_format="svg", **{name: value}), name)
    fields = {"model": "gpt-image-2.6-sunburst", "output_format": "gif", name: str(value)}
    body = ok(await api.edit({"image": PHOTO}, dict(fields)))
    assert Image.open(io.BytesIO(decoded(body))).n_frames == (value if name == "frame_count" else 9)
    refused(await api.edit({"image": PHOTO}, {**fields, "output_format": "png"}), name)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stream": True}, "stream"),
        ({"partial_images": 1}, "partial_images"),
        ({"output_compression": 80}, "output_compression"),
    ],
)
async def test_gif_refuses_streaming_partials_and_compression(api: Api, extra: dict[str, Any], param: str) -> None:
    refused(await api.gen(model="gpt-image-2.6-flare", output_format="gif", **extra), param)


async def test_gif_edit_refuses_a_mask(api: Api) -> None:
    fields = {"model": "gpt-image-2.6-flare", "output_format": "gif", "size": "64x64"}
    assert ok(await api.edit({"image": PHOTO}, dict(fields)))["output_format"] == "gif"
    refused(await api.edit({"image": PHOTO, "mask": MARKUP}, dict(fields)), "mask")


# --- SVG ---------------------------------------------------------------------------------------------


async def test_svg_document_and_svg_usage(api: Api) -> None:
    prompt = "a fox & a <hound>"
    body = ok(await api.gen(model="gpt-image-2.6-flare", output_format="svg", size="512x288", prompt=prompt))
    root = ET.fromstring(decoded(body))
    assert root.tag == f"{SVG_NS}svg"
    assert (root.get("width"), root.get("height"), root.get("viewBox")) == ("512", "288", "0 0 512 288")
    assert root.findtext(f"{SVG_NS}title") == prompt
    usage = body["svg_usage"]
    assert usage["model"] == "gpt-5.5" and usage["reasoning_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > usage["reasoning_tokens"]
    assert body["usage"]["output_tokens"] > 0 and body["output_format"] == "svg" and body["size"] == "512x288"


async def test_svg_object_in_json(api: Api) -> None:
    svg = {"model": "gpt-5.5-mini", "reasoning": {"effort": "high"}}
    high = ok(await api.gen(model="gpt-image-2.6-sunburst", output_format="svg", svg=svg))
    low = ok(
        await api.gen(
            model="gpt-image-2.6-sunburst", output_format="svg", svg={"model": "a", "reasoning": {"effort": "low"}}
        )
    )
    assert high["svg_usage"]["model"] == "gpt-5.5-mini" and low["svg_usage"]["model"] == "a"
    assert high["svg_usage"]["reasoning_tokens"] > low["svg_usage"]["reasoning_tokens"]
    refused(
        await api.gen(model="gpt-image-2.6-sunburst", output_format="svg", svg={"reasoning": {"effort": "low"}}),
        "svg.model",
    )
    refused(
        await api.gen(
            model="gpt-image-2.6-sunburst", output_format="svg", svg={"model": "a", "reasoning": {"effort": "huge"}}
        ),
        "svg.reasoning.effort",
    )
    refused(await api.gen(model="gpt-image-2.6-sunburst", output_format="svg", svg="gpt-5.5"), "svg")
    refused(await api.gen(model="gpt-image-2.6-sunburst", output_format="png", svg=svg), "svg")


async def test_svg_fields_in_multipart(api: Api) -> None:
    fields = {
        "model": "gpt-image-2.6-flare",
        "output_format": "svg",
        "svg[model]": "author-x",
        "svg[reasoning][effort]": "minimal",
    }
    body = ok(await api.edit({"image": PHOTO}, dict(fields)))
    assert body["svg_usage"]["model"] == "author-x" and body["svg_usage"]["reasoning_tokens"] > 0
    assert ET.fromstring(decoded(body)).get("viewBox") == "0 0 1024 1024"
    refused(await api.edit({"image": PHOTO}, {**fields, "svg[reasoning][effort]": "lots"}), "svg.reasoning.effort")
    refused(await api.edit({"image": PHOTO}, {**fields, "output_format": "webp"}), "svg")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"stream": True}, "stream"),
        ({"partial_images": 2}, "partial_images"),
        ({"output_compression": 50}, "output_compression"),
    ],
)
async def test_svg_refusals(api: Api, extra: dict[str, Any], param: str) -> None:
    refused(await api.gen(model="gpt-image-2.6-flare", output_format="svg", **extra), param)


# --- markup ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [*GPT_2_5, *GPT_2_6])
async def test_markup_accepted_on_2_5_and_2_6(api: Api, model: str) -> None:
    plain = ok(await api.edit({"image": PHOTO}, {"model": model}))
    marked = ok(await api.edit({"image": PHOTO, "markup": MARKUP}, {"model": model}))
    assert (
        marked["usage"]["input_tokens_details"]["image_tokens"] > plain["usage"]["input_tokens_details"]["image_tokens"]
    )
    assert api.fake.requests[-1].files == [("image", "image/png", len(PHOTO)), ("markup", "image/png", len(MARKUP))]


@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-1.5", "gpt-image-1"])
async def test_markup_refused_on_older_models(api: Api, model: str) -> None:
    refused(await api.edit({"image": PHOTO, "markup": MARKUP}, {"model": model}), "markup")


@pytest.mark.parametrize(
    "markup",
    [
        make_image(64, 64, "webp", transparent=True),  # not a PNG
        PHOTO,  # no alpha channel
        png(64, 64, alpha=(255, 255)),  # alpha, but nothing transparent
        png(64, 32, alpha=(0, 255)),  # not the first image's size
        b"not an image",
    ],
)
async def test_markup_must_be_a_transparent_png_of_the_first_image(api: Api, markup: bytes) -> None:
    refused(
        await api.edit({"image[]": [PHOTO, png(32, 32)], "markup": markup}, {"model": "gpt-image-2.5-flare"}), "markup"
    )


async def test_markup_is_not_combined_with_a_mask(api: Api) -> None:
    refused(
        await api.edit({"image": PHOTO, "mask": MARKUP, "markup": MARKUP}, {"model": "gpt-image-2.5-flare"}), "markup"
    )


async def test_markup_in_json_edits_and_not_in_generations(api: Api) -> None:
    body = {"model": "gpt-image-2.6-sunburst", "images": [{"image_url": data_uri(PHOTO, "png")}]}
    ok(await api.edit_json(**body, markup={"image_url": data_uri(MARKUP, "png")}))
    refused(await api.edit_json(**body, markup={"image_url": data_uri(PHOTO, "png")}), "markup")
    refused(await api.edit_json(**body, markup={"image_url": "https://example.com/m.png"}), "markup")
    refused(await api.gen(model="gpt-image-2.6-sunburst", markup={"image_url": data_uri(MARKUP, "png")}), "markup")


# --- input_fidelity, response_format, moderation, safety_identifier ------------------------------------


@pytest.mark.parametrize(
    ("model", "fidelity", "accepted"),
    [
        ("gpt-image-1", "high", True),
        ("gpt-image-1.5", "high", True),
        ("gpt-image-1.5", "low", True),
        ("gpt-image-1-mini", "low", True),
        ("gpt-image-1-mini", "high", False),
        ("gpt-image-2", "low", False),
        ("gpt-image-2-2026-04-21", "high", False),
        ("gpt-image-2.5-sunburst", "low", False),
        ("gpt-image-2.6-flare", "high", False),
        ("gpt-image-1.5", "medium", False),
    ],
)
async def test_input_fidelity(api: Api, model: str, fidelity: str, accepted: bool) -> None:
    reply = await api.edit({"image": PHOTO}, {"model": model, "input_fidelity": fidelity})
    if accepted:
        ok(reply)
    else:
        refused(reply, "input_fidelity")


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-2", "gpt-image-2.5-flare", "gpt-image-2.6-flare"])
async def test_response_format_is_unsupported_for_gpt_models(api: Api, model: str) -> None:
    assert "Unsupported for GPT image models" in refused(
        await api.gen(model=model, response_format="b64_json"), "response_format"
    )
    refused(await api.edit({"image": PHOTO}, {"model": model, "response_format": "url"}), "response_format")


async def test_dalle_response_format_unchanged(api: Api) -> None:
    url = ok(await api.gen(model="dall-e-3", response_format="url"))["data"][0]["url"]
    async with api.session.get(url) as reply:
        assert reply.status == 200 and Image.open(io.BytesIO(await reply.read())).size == (1024, 1024)
    assert "b64_json" in ok(await api.gen(model="dall-e-2", response_format="b64_json"))["data"][0]
    refused(await api.gen(model="dall-e-2", response_format="bytes"), "response_format")


async def test_moderation_generations_only(api: Api) -> None:
    ok(await api.gen(model="gpt-image-2.5-flare", moderation="low"))
    ok(await api.gen(model="gpt-image-1", moderation="auto"))
    refused(await api.gen(model="gpt-image-2.5-flare", moderation="strict"), "moderation")
    refused(await api.edit({"image": PHOTO}, {"model": "gpt-image-2.5-flare", "moderation": "low"}), "moderation")


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [
        ({"safety_identifier": "hash-1", "user": "u-1"}, "hash-1"),
        ({"safety_identifier": "", "user": "u-1"}, "u-1"),
        ({"user": "u-2"}, "u-2"),
        ({}, None),
    ],
)
async def test_safety_identifier_is_echoed(api: Api, sent: dict[str, str], echoed: str | None) -> None:
    for model in ("gpt-image-2.6-sunburst", "dall-e-3"):
        extra = {"response_format": "b64_json"} if model == "dall-e-3" else {}
        assert ok(await api.gen(model=model, **sent, **extra)).get("safety_identifier") == echoed
    assert ok(await api.edit({"image": PHOTO}, {"model": "gpt-image-1.5", **sent})).get("safety_identifier") == echoed


async def test_safety_identifier_must_be_a_string(api: Api) -> None:
    refused(await api.gen(model="gpt-image-2.6-sunburst", safety_identifier=42), "safety_identifier")


# --- the reply ---------------------------------------------------------------------------------------


async def test_reply_shape_and_usage(api: Api) -> None:
    old = ok(await api.gen(model="gpt-image-1", quality="low", size="1024x1024", n=2))
    assert old["usage"]["output_tokens"] == 2 * 272 and old["usage"]["output_tokens_details"]["text_tokens"] == 0
    for model in (*GPT_2_5, *GPT_2_6):
        body = ok(await api.gen(model=model, size="auto", background="opaque"))
        assert (body["quality"], body["size"], body["background"], body["output_format"]) == (
            "medium",
            "1024x1024",
            "opaque",
            "png",
        )
        usage = body["usage"]
        details = usage["output_tokens_details"]
        assert details["text_tokens"] > 0 and usage["output_tokens"] == details["image_tokens"] + details["text_tokens"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert usage["input_tokens"] == sum(usage["input_tokens_details"].values())
    small = ok(await api.gen(model="gpt-image-2.5-flare", quality="high", size="512x512"))
    large = ok(await api.gen(model="gpt-image-2.5-flare", quality="high", size="2048x1152"))
    assert (
        small["usage"]["output_tokens_details"]["image_tokens"]
        < large["usage"]["output_tokens_details"]["image_tokens"]
    )


async def test_raster_streaming_unchanged_on_2_6(api: Api) -> None:
    body = {"model": "gpt-image-2.6-flare", "prompt": "x", "stream": True, "partial_images": 2, "output_format": "webp"}
    async with api.session.post(f"{api.fake.base_url}/images/generations", json=body) as reply:
        assert reply.status == 200 and reply.content_type == "text/event-stream"
        text = await reply.text()
    events = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert events == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]


async def test_json_edit_with_images_still_works(api: Api) -> None:
    image = data_uri(make_image(320, 240, "jpeg"), "jpeg")
    body = ok(await api.edit_json(model="gpt-image-2.5-sunburst", images=[{"image_url": image}], quality="max"))
    assert body["quality"] == "max" and body["usage"]["input_tokens_details"]["image_tokens"] > 0
