"""POST /v1/images/generations over ASGI, served by the sandbox provider."""

from __future__ import annotations

import pybase64
import pytest

from tests.helpers import open_image

FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF", "avif": "AVIF"}


async def test_default_request_returns_signed_url_to_a_real_png(client):
    response = await client.post("/v1/images/generations", json={"prompt": "a red fox"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-request-id"] == body["imagegate"]["request_id"]
    assert response.headers["x-imagegate-cost-usd"] == "0"
    assert body["imagegate"]["provider"] == "sandbox"
    assert body["imagegate"]["model"] == "gpt-image-1"
    assert body["size"] == "1024x1024" and body["output_format"] == "png"
    url = body["data"][0]["url"]
    assert url.startswith("http://testserver/v1/files/img_")
    fetched = await client.get(url)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    image = open_image(fetched.content)
    assert (image.format, image.size) == ("PNG", (1024, 1024))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
async def test_every_output_format_is_real(client, fmt):
    response = await client.post(
        "/v1/images/generations",
        json={
            "prompt": "a lighthouse",
            "output_format": fmt,
            "response_format": "b64_json",
            "size": "1536x1024",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    image = open_image(pybase64.b64decode(body["data"][0]["b64_json"]))
    assert image.format == FORMATS[fmt]
    assert image.size == (1536, 1024)
    assert body["output_format"] == fmt
    decision = next(d for d in body["imagegate"]["decisions"] if d["param"] == "output_format")
    assert decision["handling"] == ("passthrough" if fmt in ("png", "jpeg", "webp") else "emulated")


async def test_same_prompt_seed_size_gives_same_bytes(client):
    payload = {"prompt": "same", "seed": 7, "size": "1024x1024", "response_format": "b64_json"}
    first = (await client.post("/v1/images/generations", json=payload)).json()["data"][0]["b64_json"]
    second = (await client.post("/v1/images/generations", json=payload)).json()["data"][0]["b64_json"]
    other = (await client.post("/v1/images/generations", json={**payload, "seed": 8})).json()["data"][0]["b64_json"]
    assert first == second
    assert first != other


@pytest.mark.parametrize(
    ("model", "params", "expected"),
    [
        ("gpt-image-1", {"size": "1920x1080"}, (1536, 1024)),
        ("gpt-image-1", {"aspect_ratio": "9:16"}, (1024, 1536)),
        ("gpt-image-2", {"size": "1920x1080"}, (1920, 1088)),
        ("dall-e-3", {"size": "16:9"}, (1792, 1024)),
        ("gemini-3-pro-image-preview", {"aspect_ratio": "16:9", "resolution": "2K"}, (2752, 1536)),
        ("gemini-2.5-flash-image", {"aspect_ratio": "21:9"}, (1536, 672)),
        ("flux-1-schnell", {"size": "1024x576"}, (1024, 576)),
        ("flux-kontext-pro", {"aspect_ratio": "7:1"}, None),
    ],
)
async def test_size_rules_apply_per_model(client, model, params, expected):
    response = await client.post(
        "/v1/images/generations",
        json={"prompt": "sizes", "model": model, "response_format": "b64_json", **params},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    image = open_image(pybase64.b64decode(body["data"][0]["b64_json"]))
    assert body["size"] == f"{image.width}x{image.height}"
    if expected is not None:
        assert image.size == expected
    else:  # 7:1 is not offered: the widest ratio (21:9) is chosen, never a stretched 7:1
        assert abs(image.width / image.height - 21 / 9) < 0.05
    size_decision = next(d for d in body["imagegate"]["decisions"] if d["param"] == "size")
    assert size_decision["handling"] in ("passthrough", "converted")


async def test_n_fans_out_when_the_provider_makes_one_per_call(client):
    response = await client.post(
        "/v1/images/generations",
        json={"prompt": "three", "model": "dall-e-3", "n": "3", "response_format": "b64_json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["data"]) == 3
    payloads = {item["b64_json"] for item in body["data"]}
    assert len(payloads) == 3  # each image is distinct (index drawn on it)
    n_decision = next(d for d in body["imagegate"]["decisions"] if d["param"] == "n")
    assert n_decision["handling"] == "emulated" and n_decision["sent"] == [1, 1, 1]


async def test_transparent_background_keeps_alpha(client):
    response = await client.post(
        "/v1/images/generations",
        json={
            "prompt": "sticker",
            "background": "transparent",
            "output_format": "webp",
            "response_format": "b64_json",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    image = open_image(pybase64.b64decode(body["data"][0]["b64_json"]))
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0))[3] == 0
    assert body["background"] == "transparent"


async def test_compression_is_honoured_for_lossy_formats(client):
    sizes = []
    for compression in (10, 95):
        response = await client.post(
            "/v1/images/generations",
            json={
                "prompt": "compress me",
                "output_format": "jpeg",
                "output_compression": compression,
                "response_format": "b64_json",
            },
        )
        assert response.status_code == 200, response.text
        sizes.append(len(pybase64.b64decode(response.json()["data"][0]["b64_json"])))
    assert sizes[0] < sizes[1]


async def test_unknown_parameters_pass_through_and_are_listed(client):
    response = await client.post(
        "/v1/images/generations",
        json={"prompt": "x", "num_inference_steps": 4, "response_format": "b64_json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["imagegate"]["passthrough"] == {"num_inference_steps": 4}
    decision = next(d for d in body["imagegate"]["decisions"] if d["param"] == "num_inference_steps")
    assert decision["handling"] == "passthrough"


async def test_every_catalog_model_is_served_by_the_sandbox(client):
    models = (await client.get("/v1/models")).json()["data"]
    assert len(models) >= 10
    for model in models:
        response = await client.post(
            "/v1/images/generations",
            json={"prompt": "catalog sweep", "model": model["id"], "response_format": "b64_json"},
        )
        if "text-to-image" not in model["modes"]:
            assert response.status_code == 400
            continue
        assert response.status_code == 200, (model["id"], response.text)
        assert response.json()["imagegate"]["provider"] == "sandbox"
