"""OpenAI's newest image options through the gateway (sandbox): SVG, animated GIF, markup, complexity,
xhigh/max quality, free sizes on GPT Image 2.5, per-model input_fidelity, and each bad input as a 400
naming its `param` (openai SDK 3.57's image_generate_params.py / image_edit_params.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pybase64
import pytest
from PIL import Image

from imagegate.imaging.animation import gif_frames
from imagegate.imaging.svg import svg_size, unsafe_svg_reason
from tests.helpers import encoded, mask_bytes, open_image, png_bytes

GEN = "/v1/images/generations"
EDIT = "/v1/images/edits"


def _decision(body: dict[str, Any], param: str) -> dict[str, Any]:
    return next(d for d in body["imagegate"]["decisions"] if d["param"] == param)


def _bytes(body: dict[str, Any]) -> bytes:
    return pybase64.b64decode(body["data"][0]["b64_json"])


async def _refused(response: Any, param: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    return str(error["message"])


def _markup(width: int, height: int, transparent: bool = True) -> bytes:
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0) if transparent else (255, 0, 0, 255))
    overlay.paste((255, 0, 0, 255), (10, 10, 30, 30))  # the circled area
    return encoded(overlay, "PNG")


# --- SVG -----------------------------------------------------------------------------------------


async def test_svg_generation_returns_a_safe_vector_image_of_the_asked_size(client):
    body = {
        "model": "gpt-image-2.6-sunburst",
        "prompt": "a lighthouse icon",
        "output_format": "svg",
        "size": "1536x1024",
        "response_format": "b64_json",
        "svg": {"model": "gpt-5.5", "reasoning": {"effort": "low"}},
    }
    response = await client.post(GEN, json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    data = _bytes(result)
    assert svg_size(data) == (1536, 1024)
    assert ET.fromstring(data).tag.endswith("svg")
    assert unsafe_svg_reason(data) is None
    assert result["output_format"] == "svg" and result["size"] == "1536x1024"
    assert _decision(result, "svg")["sent"] == {"model": "gpt-5.5", "reasoning": {"effort": "low"}}
    assert _decision(result, "output_format")["handling"] == "passthrough"


async def test_an_svg_link_is_served_as_svg_under_a_policy_that_runs_nothing(client):
    body = {"model": "gpt-image-2.6-flare", "prompt": "logo", "output_format": "svg", "response_format": "url"}
    response = await client.post(GEN, json=body)
    assert response.status_code == 200, response.text
    url = response.json()["data"][0]["url"]
    served = await client.get(url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/svg+xml"
    policy = served.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "sandbox" in policy
    assert served.headers["x-content-type-options"] == "nosniff"
    assert svg_size(served.content) is not None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"output_format": "svg", "n": 2}, "n"),
        ({"output_format": "svg", "stream": True}, "stream"),
        ({"svg": {"model": "gpt-5.5"}}, "svg"),
        ({"output_format": "png", "svg": {"model": "gpt-5.5"}}, "svg"),
        (
            {"output_format": "svg", "svg": {"model": "gpt-5.5", "reasoning": {"effort": "huge"}}},
            "svg.reasoning.effort",
        ),
        ({"output_format": "svg", "svg": {"author": "x"}}, "svg.model"),
    ],
)
async def test_bad_svg_requests_are_refused_naming_the_param(client, body, param):
    response = await client.post(GEN, json={"model": "gpt-image-2.6-sunburst", "prompt": "x", **body})
    await _refused(response, param)


async def test_svg_from_a_model_that_cannot_make_it_is_refused_not_converted(client):
    response = await client.post(GEN, json={"model": "gpt-image-2", "prompt": "x", "output_format": "svg"})
    message = await _refused(response, "output_format")
    assert "SVG" in message


# --- animated GIF ---------------------------------------------------------------------------------


async def test_an_animated_gif_has_the_asked_frames_and_delays(client):
    body = {
        "model": "gpt-image-2.6-sunburst",
        "prompt": "a bouncing ball",
        "output_format": "gif",
        "frame_count": 5,
        "frame_duration_ms": 120,
        "size": "512x512",
        "response_format": "b64_json",
    }
    response = await client.post(GEN, json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    frames, delays = gif_frames(_bytes(result))
    assert (frames, delays) == (5, [120] * 5)
    assert open_image(_bytes(result)).size == (512, 512)
    assert result["output_format"] == "gif"
    assert _decision(result, "frame_count")["sent"] == 5


async def test_a_gif_without_frame_count_on_an_animating_model_has_nine_frames_of_200_ms(client):
    body = {"model": "gpt-image-2.6-flare", "prompt": "waves", "output_format": "gif", "size": "256x256"}
    response = await client.post(GEN, json={**body, "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    assert gif_frames(_bytes(response.json())) == (9, [200] * 9)


async def test_a_gif_from_a_model_that_cannot_animate_is_a_one_frame_gif(client):
    body = {"model": "gpt-image-1.5", "prompt": "still", "output_format": "gif", "response_format": "b64_json"}
    response = await client.post(GEN, json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert gif_frames(_bytes(result))[0] == 1
    decision = _decision(result, "output_format")
    assert decision["handling"] == "emulated" and "one-frame" in decision["note"]


async def test_a_long_frame_duration_is_capped_and_the_decision_says_so(client):
    body = {
        "model": "gpt-image-2.6-flare",
        "prompt": "slow",
        "output_format": "gif",
        "frame_count": 2,
        "frame_duration_ms": 700_000,
        "size": "64x64",
        "response_format": "b64_json",
    }
    response = await client.post(GEN, json=body)
    assert response.status_code == 200, response.text
    assert gif_frames(_bytes(response.json())) == (2, [655_350, 655_350])
    assert _decision(response.json(), "frame_duration_ms")["handling"] == "converted"


@pytest.mark.parametrize(
    ("model", "body", "param"),
    [
        ("gpt-image-2.6-sunburst", {"output_format": "gif", "frame_count": 1}, "frame_count"),
        ("gpt-image-2.6-sunburst", {"output_format": "gif", "frame_count": 17}, "frame_count"),
        ("gpt-image-2.6-sunburst", {"frame_count": 4}, "frame_count"),
        ("gpt-image-2.6-sunburst", {"output_format": "png", "frame_duration_ms": 100}, "frame_duration_ms"),
        ("gpt-image-2.6-sunburst", {"output_format": "gif", "frame_duration_ms": 0}, "frame_duration_ms"),
        ("gpt-image-2.6-sunburst", {"output_format": "gif", "stream": True}, "stream"),
        ("gpt-image-1.5", {"output_format": "gif", "frame_count": 4}, "frame_count"),
    ],
)
async def test_bad_gif_requests_are_refused_naming_the_param(client, model, body, param):
    response = await client.post(GEN, json={"model": model, "prompt": "x", **body})
    await _refused(response, param)


async def test_an_animated_gif_cannot_be_a_masked_edit(client):
    base = png_bytes(64, 64)
    response = await client.post(
        EDIT,
        data={"model": "gpt-image-2.6-sunburst", "prompt": "x", "output_format": "gif"},
        files=[
            ("image", ("a.png", base, "image/png")),
            ("mask", ("m.png", mask_bytes(64, 64, (0, 0, 8, 8)), "image/png")),
        ],
    )
    await _refused(response, "mask")


# --- markup edits ---------------------------------------------------------------------------------


async def test_a_markup_edit_is_served_and_recorded(client):
    base = png_bytes(64, 64, (20, 80, 200))
    response = await client.post(
        EDIT,
        data={"model": "gpt-image-2.5-sunburst", "prompt": "make the circled area gold", "response_format": "b64_json"},
        files=[("image", ("a.png", base, "image/png")), ("markup", ("k.png", _markup(64, 64), "image/png"))],
    )
    assert response.status_code == 200, response.text
    assert _decision(response.json(), "markup")["handling"] == "passthrough"


async def test_a_markup_edit_in_json_form(client):
    def url(data: bytes) -> str:
        return "data:image/png;base64," + pybase64.b64encode(data).decode()

    body = {
        "model": "gpt-image-2.6-flare",
        "prompt": "x",
        "images": [{"image_url": url(png_bytes(32, 32))}],
        "markup": {"image_url": url(_markup(32, 32))},
    }
    response = await client.post(EDIT, json=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("model", "markup", "with_mask"),
    [
        ("gpt-image-2.5-sunburst", _markup(64, 64), True),  # not with a mask
        ("gpt-image-2.5-sunburst", _markup(32, 64), False),  # not the first image's size
        ("gpt-image-2.5-sunburst", _markup(64, 64, transparent=False), False),  # nothing transparent
        ("gpt-image-2.5-sunburst", png_bytes(64, 64), False),  # no alpha channel at all
        ("gpt-image-1.5", _markup(64, 64), False),  # a model that takes no markup
    ],
)
async def test_bad_markup_is_refused_naming_markup(client, model, markup, with_mask):
    files = [("image", ("a.png", png_bytes(64, 64), "image/png")), ("markup", ("k.png", markup, "image/png"))]
    if with_mask:
        files.append(("mask", ("m.png", mask_bytes(64, 64, (0, 0, 8, 8)), "image/png")))
    response = await client.post(EDIT, data={"model": model, "prompt": "x"}, files=files)
    await _refused(response, "markup")


async def test_markup_on_a_generation_is_refused(client):
    response = await client.post(GEN, json={"model": "gpt-image-2.5-sunburst", "prompt": "x", "markup": "y"})
    await _refused(response, "markup")


# --- quality, complexity, sizes, input_fidelity ----------------------------------------------------


async def test_xhigh_on_gpt_image_2_5_at_2560x1440(client):
    body = {"model": "gpt-image-2.5-sunburst", "prompt": "city", "quality": "xhigh", "size": "2560x1440"}
    response = await client.post(GEN, json={**body, "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["size"] == "2560x1440" and result["quality"] == "xhigh"
    assert open_image(_bytes(result)).size == (2560, 1440)


async def test_max_quality_on_a_model_without_it_is_refused(client):
    response = await client.post(GEN, json={"model": "gpt-image-2", "prompt": "x", "quality": "max"})
    await _refused(response, "quality")


@pytest.mark.parametrize(
    ("asked", "produced"),
    [
        ("3856x2160", "3840x2144"),  # over the 3840 edge: scaled into the limits, edges to multiples of 16
        ("4000x1000", "3456x1152"),  # 4:1 is beyond 3:1: clamped to 3:1 at about the same area
    ],
)
async def test_sizes_outside_gpt_image_2_5_rules_are_converted_and_recorded(client, asked, produced):
    response = await client.post(GEN, json={"model": "gpt-image-2.5-flare", "prompt": "x", "size": asked})
    assert response.status_code == 200, response.text
    result = response.json()
    decision = _decision(result, "size")
    assert decision["asked"] == asked and decision["handling"] == "converted"
    assert result["size"] == produced == decision["sent"]
    width, height = (int(v) for v in produced.split("x"))
    assert width % 16 == 0 and height % 16 == 0 and width * height <= 3840 * 2160
    assert 1 / 3 <= width / height <= 3


async def test_complexity_is_passed_where_supported_and_dropped_with_a_warning_elsewhere(client):
    response = await client.post(GEN, json={"model": "gpt-image-2.6-flare", "prompt": "x", "complexity": "low"})
    assert response.status_code == 200, response.text
    assert _decision(response.json(), "complexity")["handling"] == "passthrough"
    response = await client.post(GEN, json={"model": "gpt-image-1.5", "prompt": "x", "complexity": "low"})
    assert response.status_code == 200, response.text
    assert _decision(response.json(), "complexity")["handling"] == "dropped"
    assert any("complexity" in w for w in response.json()["imagegate"]["warnings"])
    await _refused(
        await client.post(GEN, json={"model": "gpt-image-2.6-flare", "prompt": "x", "complexity": "x"}), "complexity"
    )


@pytest.mark.parametrize(("model", "value"), [("gpt-image-1-mini", "high"), ("gpt-image-2", "low")])
async def test_input_fidelity_follows_each_model(client, model, value):
    files = [("image", ("a.png", png_bytes(32, 32), "image/png"))]
    response = await client.post(EDIT, data={"model": model, "prompt": "x", "input_fidelity": value}, files=files)
    await _refused(response, "input_fidelity")


async def test_input_fidelity_low_on_gpt_image_1_mini_is_passed(client):
    files = [("image", ("a.png", png_bytes(32, 32), "image/png"))]
    data = {"model": "gpt-image-1-mini", "prompt": "x", "input_fidelity": "low"}
    response = await client.post(EDIT, data=data, files=files)
    assert response.status_code == 200, response.text
    assert _decision(response.json(), "input_fidelity")["sent"] == "low"


async def test_safety_identifier_is_passed_to_openai_models(client):
    body = {"model": "gpt-image-2.5-flare", "prompt": "x", "safety_identifier": "user-hash-1"}
    response = await client.post(GEN, json=body)
    assert response.status_code == 200, response.text
    assert _decision(response.json(), "safety_identifier")["handling"] == "passthrough"


async def test_snapshot_names_resolve_to_their_model(client):
    for name, model in (
        ("gpt-image-2.5-sunburst-2026-09-08", "gpt-image-2.5-sunburst"),
        ("gpt-image-2-2026-04-21", "gpt-image-2"),
    ):
        response = await client.post(GEN, json={"model": name, "prompt": "x"})
        assert response.status_code == 200, response.text
        assert response.json()["imagegate"]["model"] == model
