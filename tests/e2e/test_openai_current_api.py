"""End to end with the newest official SDK (openai 3.57): `imagegate serve` in front of the fake OpenAI,
and a second gateway with no provider key (the sandbox), for GPT Image 2.5 / 2.6, SVG, animated GIF and
markup edits. What reached the fake is checked too: the SDK's fields, never `response_format`. Run with
`-s` to print the transcript (the SDK call, what came back, what the fake received)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pybase64
import pytest
from PIL import Image

from imagegate.imaging.animation import gif_frames
from imagegate.imaging.svg import svg_size
from tests.fakes.openai import FakeOpenAI
from tests.gateway_process import gateway_process
from tests.helpers import encoded, png_bytes

OPENAI_KEY = "sk-e2e-current-api"


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeOpenAI, str]]:
    server = FakeOpenAI(key=OPENAI_KEY)
    with server.run_in_thread() as url:
        yield server, url


@pytest.fixture(scope="module")
def upstream(fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    config = f"""
request_timeout_seconds = 30
default_response_format = "b64_json"  # OpenAI's own behaviour for GPT image models (the gateway's default is url)
[providers.openai]
base_url = "{fake[1]}"
api_key_env = "E2E_CURRENT_OPENAI_KEY"
"""
    with gateway_process(tmp_path_factory.mktemp("gw"), config, {"E2E_CURRENT_OPENAI_KEY": OPENAI_KEY}) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="caller-key-unused", max_retries=0)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    config = 'default_response_format = "b64_json"\n'
    with gateway_process(tmp_path_factory.mktemp("sandbox"), config, {}) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="caller-key-unused", max_retries=0)


def _bytes(result: Any) -> bytes:
    return pybase64.b64decode(result.data[0].b64_json)


def _sent(fake: tuple[FakeOpenAI, str]) -> Any:
    return [r for r in fake[0].requests if r.path.startswith("/v1/images")][-1]


def _transcript(call: str, result: Any, got: str, sent: Any = None) -> None:
    meta = result.model_extra["imagegate"]
    print(f"\n$ {call}\n  -> {got}; provider {meta['provider']}, cost {meta['cost_usd']}")
    if sent is not None:
        body = sent.json if sent.json is not None else {"fields": sent.fields, "files": [f[0] for f in sent.files]}
        print(f"  upstream {sent.method} {sent.path}\n  body {json.dumps(body, default=str)[:400]}")


def _markup(width: int, height: int) -> bytes:
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    overlay.paste((255, 0, 0, 255), (8, 8, 24, 24))
    return encoded(overlay, "PNG")


def test_gpt_image_2_5_sunburst_xhigh_at_2560x1440_priced_from_its_usage(upstream, fake):
    raw = upstream.images.with_raw_response.generate(
        model="gpt-image-2.5-sunburst", prompt="a harbour at dawn", size="2560x1440", quality="xhigh"
    )
    result = raw.parse()
    assert Image.open(io.BytesIO(_bytes(result))).size == (2560, 1440)
    assert result.size == "2560x1440" and result.quality == "xhigh"
    usage = result.usage
    assert usage is not None and usage.output_tokens_details is not None
    image_out, text_out = usage.output_tokens_details.image_tokens, usage.output_tokens_details.text_tokens
    details = usage.input_tokens_details
    expected = (
        Decimal(details.text_tokens) * Decimal("5.00")
        + Decimal(details.image_tokens) * Decimal("8.00")
        + Decimal(image_out) * Decimal("30.00")
        + Decimal(text_out) * Decimal("10.00")
    ) / 1_000_000
    meta = result.model_extra["imagegate"]
    assert Decimal(meta["cost_usd"]) == expected.quantize(Decimal("0.000001"))
    sent = _sent(fake).json
    assert sent["model"] == "gpt-image-2.5-sunburst" and sent["quality"] == "xhigh" and sent["size"] == "2560x1440"
    assert "response_format" not in sent
    _transcript(
        'images.generate(model="gpt-image-2.5-sunburst", size="2560x1440", quality="xhigh")',
        result,
        f"{result.size} {result.quality}, usage {usage.model_dump()}",
        _sent(fake),
    )


def test_an_svg_through_openai_with_the_author_model(upstream, fake):
    result = upstream.images.generate(
        model="gpt-image-2.6-sunburst",
        prompt="a flat fox logo",
        output_format="svg",
        svg={"model": "gpt-5.5", "reasoning": {"effort": "low"}},
    )
    data = _bytes(result)
    assert ET.fromstring(data).tag.endswith("svg") and svg_size(data) is not None
    assert result.output_format == "svg"
    assert result.svg_usage is not None and result.svg_usage.model == "gpt-5.5"
    assert result.model_extra["imagegate"]["cost_usd"] is None  # the author model's price is unknown
    sent = _sent(fake).json
    assert sent["output_format"] == "svg" and sent["svg"] == {"model": "gpt-5.5", "reasoning": {"effort": "low"}}
    _transcript(
        'images.generate(model="gpt-image-2.6-sunburst", output_format="svg", svg={model: gpt-5.5, effort: low})',
        result,
        f"{len(data)} bytes of SVG sized {svg_size(data)}, svg_usage {result.svg_usage.model_dump()}",
        _sent(fake),
    )


def test_a_nine_frame_gif_through_openai(upstream, fake):
    result = upstream.images.generate(
        model="gpt-image-2.6-flare", prompt="a waving flag", output_format="gif", size="512x512"
    )
    frames, delays = gif_frames(_bytes(result))
    assert frames == 9 and delays == [200] * 9
    sent = _sent(fake).json
    assert sent["output_format"] == "gif" and sent["frame_count"] == 9
    _transcript(
        'images.generate(model="gpt-image-2.6-flare", output_format="gif", size="512x512")',
        result,
        f"GIF read back: {frames} frames, delays {delays} ms",
        _sent(fake),
    )


def test_a_gif_with_frame_count_and_delay_through_openai(upstream, fake):
    result = upstream.images.generate(
        model="gpt-image-2.6-sunburst",
        prompt="a spinning coin",
        output_format="gif",
        frame_count=4,
        frame_duration_ms=150,
        size="256x256",
    )
    assert gif_frames(_bytes(result)) == (4, [150] * 4)


def test_a_markup_edit_through_openai_sends_the_overlay_part(upstream, fake, tmp_path: Path):
    result = upstream.images.edit(
        model="gpt-image-2.5-flare",
        prompt="turn the marked square gold",
        image=("base.png", png_bytes(256, 256, (30, 90, 160)), "image/png"),
        markup=("markup.png", _markup(256, 256), "image/png"),
    )
    assert Image.open(io.BytesIO(_bytes(result))).size[0] > 0
    files = {name for name, _, _ in _sent(fake).files}
    assert files == {"image", "markup"}
    assert "response_format" not in _sent(fake).fields
    _transcript(
        'images.edit(model="gpt-image-2.5-flare", image=base.png 256x256, markup=markup.png 256x256)',
        result,
        f"image {Image.open(io.BytesIO(_bytes(result))).size}",
        _sent(fake),
    )


def test_an_svg_edit_sends_the_svg_object_as_bracketed_fields(upstream, fake):
    upstream.images.edit(
        model="gpt-image-2.6-flare",
        prompt="vectorise it",
        image=("base.png", png_bytes(128, 128), "image/png"),
        output_format="svg",
        svg={"model": "gpt-5.5"},
    )
    fields = _sent(fake).fields
    assert fields["output_format"] == "svg" and fields["svg[model]"] == "gpt-5.5"


def test_an_upstream_refusal_names_its_param(upstream):
    with pytest.raises(openai.BadRequestError) as caught:
        upstream.images.generate(model="gpt-image-2", prompt="x", quality="max")
    assert caught.value.body["param"] == "quality"


# --- the same calls, offline -------------------------------------------------------------------------


def test_the_sandbox_serves_the_same_calls(sandbox):
    result = sandbox.images.generate(
        model="gpt-image-2.5-sunburst", prompt="a harbour at dawn", size="2560x1440", quality="xhigh"
    )
    assert Image.open(io.BytesIO(_bytes(result))).size == (2560, 1440)
    svg = sandbox.images.generate(model="gpt-image-2.6-sunburst", prompt="fox logo", output_format="svg")
    assert svg_size(_bytes(svg)) is not None
    gif = sandbox.images.generate(model="gpt-image-2.6-flare", prompt="flag", output_format="gif", size="256x256")
    assert gif_frames(_bytes(gif)) == (9, [200] * 9)
    edited = sandbox.images.edit(
        model="gpt-image-2.5-flare",
        prompt="turn the marked square gold",
        image=("base.png", png_bytes(256, 256, (30, 90, 160)), "image/png"),
        markup=("markup.png", _markup(256, 256), "image/png"),
    )
    decisions = {d["param"]: d for d in edited.model_extra["imagegate"]["decisions"]}
    assert decisions["markup"]["handling"] == "passthrough"
    _transcript("sandbox images.generate(gpt-image-2.5-sunburst, 2560x1440, xhigh)", result, f"{result.size}")
    _transcript("sandbox images.generate(gpt-image-2.6-sunburst, svg)", svg, f"SVG sized {svg_size(_bytes(svg))}")
    _transcript(
        "sandbox images.generate(gpt-image-2.6-flare, gif, 256x256)", gif, f"GIF read back {gif_frames(_bytes(gif))}"
    )
    _transcript("sandbox images.edit(gpt-image-2.5-flare, markup)", edited, f"markup decision {decisions['markup']}")
