"""Every bad-input class: a clear 4xx in OpenAI's error shape naming the param, nothing left behind."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from tests.helpers import encoded, mask_bytes, png_bytes

GEN = "/v1/images/generations"
EDIT = "/v1/images/edits"


def assert_error(response, status: int, param: str | None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert response.headers.get("x-request-id", "").startswith("req_")
    return error


@pytest.fixture
def files_dir(settings):
    return settings.data_dir / "files"


@pytest.fixture(autouse=True)
def nothing_left_behind(files_dir):
    yield
    leftovers = list(files_dir.iterdir()) if files_dir.exists() else []
    assert leftovers == [], f"failed requests left files behind: {leftovers}"


@pytest.mark.parametrize(
    ("payload", "status", "param", "code"),
    [
        ({}, 400, "prompt", "missing_required_parameter"),
        ({"prompt": ""}, 400, "prompt", "missing_required_parameter"),
        ({"prompt": 5}, 400, "prompt", None),
        ({"prompt": "x", "model": "no-such-model"}, 404, "model", "model_not_found"),
        ({"prompt": "x", "model": "nobody/gpt-image-1"}, 400, "model", None),
        ({"prompt": "x", "n": 0}, 400, "n", None),
        ({"prompt": "x", "n": 11}, 400, "n", None),
        ({"prompt": "x", "n": "many"}, 400, "n", None),
        ({"prompt": "x", "n": 1.5}, 400, "n", None),
        ({"prompt": "x", "size": "abc"}, 400, "size", None),
        ({"prompt": "x", "size": "0x1024"}, 400, "size", None),
        ({"prompt": "x", "size": "99999x10"}, 400, "size", None),
        ({"prompt": "x", "aspect_ratio": "16-9"}, 400, "aspect_ratio", None),
        ({"prompt": "x", "aspect_ratio": "0:1"}, 400, "aspect_ratio", None),
        ({"prompt": "x", "resolution": "8Q"}, 400, "resolution", None),
        ({"prompt": "x", "output_format": "tiff"}, 400, "output_format", None),
        ({"prompt": "x", "output_compression": 101}, 400, "output_compression", None),
        ({"prompt": "x", "response_format": "bytes"}, 400, "response_format", None),
        ({"prompt": "x", "background": "plaid"}, 400, "background", None),
        ({"prompt": "x", "background": "transparent", "output_format": "jpeg"}, 400, "background", None),
        ({"prompt": "x", "quality": "ultra"}, 400, "quality", None),
        ({"prompt": "x", "moderation": "none"}, 400, "moderation", None),
        ({"prompt": "x", "webhook_url": "http://10.0.0.1/"}, 400, "webhook_url", None),
        ({"prompt": "x", "api_key": "sk-steal"}, 400, "api_key", None),
        ({"prompt": "x", "stream": True, "n": 2}, 400, "n", None),
        ({"prompt": "x", "stream": True, "partial_images": 4}, 400, "partial_images", None),
        ({"prompt": "x", "stream": "maybe"}, 400, "stream", None),
        ({"prompt": "x", "model": "dall-e-3", "background": "transparent"}, 400, "background", None),
        ({"prompt": "x" * 4001, "model": "dall-e-3"}, 400, "prompt", None),
    ],
)
async def test_bad_generation_parameters(client, payload, status, param, code):
    assert_error(await client.post(GEN, json=payload), status, param, code)


async def test_edit_only_model_mode_mismatch(client):
    response = await client.post(
        EDIT, data={"prompt": "x", "model": "dall-e-3"}, files={"image": ("a.png", png_bytes(), "image/png")}
    )
    assert_error(response, 400, "model")


async def test_bad_json_bodies(client):
    assert_error(
        await client.post(GEN, content=b"{not json", headers={"content-type": "application/json"}),
        400,
        None,
        "invalid_json",
    )
    assert_error(
        await client.post(GEN, content=b"[1, 2]", headers={"content-type": "application/json"}),
        400,
        None,
        "invalid_json",
    )
    assert_error(await client.post(GEN, content=b"prompt=x", headers={"content-type": "text/plain"}), 415, None)


async def test_oversize_json_body_is_413(client):
    response = await client.post(GEN, json={"prompt": "x" * (1024 * 1024 + 10)})
    assert_error(response, 413, None, "payload_too_large")
    assert response.headers["connection"] == "close"  # refused unread: the client must not trickle on


async def test_oversize_multipart_body_is_413(tmp_path):
    from httpx import ASGITransport, AsyncClient

    from imagegate.config import Limits, Settings
    from imagegate.web.app import create_app

    settings = Settings(
        data_dir=tmp_path / "d",
        signing_key="k",
        limits=Limits(max_multipart_bytes=200_000, max_file_bytes=100_000),
    )
    async with AsyncClient(transport=ASGITransport(app=create_app(settings)), base_url="http://t") as http:
        big = png_bytes(16, 16) + b"\0" * 300_000
        response = await http.post(EDIT, data={"prompt": "x"}, files={"image": ("a.png", big, "image/png")})
        assert_error(response, 413, None)
        file_too_big = png_bytes(16, 16) + b"\0" * 150_000
        response = await http.post(EDIT, data={"prompt": "x"}, files={"image": ("a.png", file_too_big, "image/png")})
        assert_error(response, 413, "image")


def _edit(client, image: bytes, name: str = "in.png", extra_files=(), data=None):
    files = [("image", (name, image, "image/png")), *extra_files]
    return client.post(EDIT, data=data or {"prompt": "edit"}, files=files)


def _tiff() -> bytes:
    return encoded(Image.new("RGB", (8, 8)), "TIFF")


def _bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _real_big_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("image", "status", "code"),
    [
        (b"this is not an image at all", 415, None),
        (b"\0" * 512, 415, None),
        (png_bytes(200, 200)[:300], 400, "invalid_image"),
        (encoded(Image.new("RGB", (300, 300), (9, 9, 9)), "JPEG")[:400], 400, "invalid_image"),
        (_tiff(), 415, None),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', 415, None),
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, 415, None),
        (encoded(Image.new("RGB", (8, 8)), "GIF"), 415, None),
        (_bomb_png(100_000, 100_000), 400, "image_too_large"),
    ],
    ids=["text", "zeros", "truncated-png", "truncated-jpeg", "tiff", "svg", "heic", "gif", "bomb-header"],
)
async def test_bad_input_images(client, image, status, code):
    assert_error(await _edit(client, image), status, "image", code)


async def test_real_10000_square_png_is_refused_before_decoding(client):
    data = _real_big_png()
    assert len(data) < 2 * 1024 * 1024
    assert_error(await _edit(client, data), 400, "image", "image_too_large")


async def test_bad_image_among_several_names_its_index(client):
    files = [("image[]", ("a.png", png_bytes(), "image/png")), ("image[]", ("b.png", _tiff(), "image/png"))]
    response = await client.post(EDIT, data={"prompt": "x"}, files=files)
    assert_error(response, 415, "image[1]")


async def test_mask_problems(client):
    base = png_bytes(256, 256)
    wrong_size = mask_bytes(128, 128, (0, 0, 64, 64))
    response = await _edit(client, base, extra_files=[("mask", ("m.png", wrong_size, "image/png"))])
    error = assert_error(response, 400, "mask")
    assert "256x256" in error["message"] and "128x128" in error["message"]
    no_alpha = png_bytes(256, 256)
    assert_error(await _edit(client, base, extra_files=[("mask", ("m.png", no_alpha, "image/png"))]), 400, "mask")
    jpeg_mask = encoded(Image.new("RGB", (256, 256)), "JPEG")
    response = await _edit(client, base, extra_files=[("mask", ("m.png", jpeg_mask, "image/png"))])
    assert response.status_code in (400, 415)
    assert response.json()["error"]["param"] == "mask"


async def test_mask_refused_where_no_provider_can_apply_it(client):
    base = png_bytes(256, 256)
    mask = mask_bytes(256, 256, (0, 0, 10, 10))
    response = await _edit(
        client,
        base,
        extra_files=[("mask", ("m.png", mask, "image/png"))],
        data={"prompt": "x", "model": "fal/gpt-image-1"},
    )
    assert response.status_code in (400, 503)


async def test_edit_form_problems(client):
    assert_error(
        await client.post(EDIT, data={"prompt": "x"}, files={"other": ("a", b"x", "text/plain")}),
        400,
        "other",
    )
    no_image = await client.post(EDIT, data={"prompt": "x"}, files={"mask": ("m.png", png_bytes(), "image/png")})
    assert_error(no_image, 400, "image")
    assert_error(
        await client.post(
            EDIT,
            data={"prompt": "x", "image": "not-a-file"},
            files={"mask": ("m.png", png_bytes(), "image/png")},
        ),
        400,
        "image",
    )
    missing_prompt = await client.post(EDIT, files={"image": ("a.png", png_bytes(), "image/png")})
    assert_error(missing_prompt, 400, "prompt", "missing_required_parameter")


async def test_json_edit_problems(client):
    assert_error(await client.post(EDIT, json={"prompt": "x"}), 400, "images")
    assert_error(
        await client.post(EDIT, json={"prompt": "x", "images": [{"image_url": "https://example.com/a.png"}]}),
        400,
        "images[0].image_url",
    )
    assert_error(
        await client.post(EDIT, json={"prompt": "x", "images": [{"file_id": "file-1"}]}),
        400,
        "images[0].file_id",
    )
    assert_error(
        await client.post(EDIT, json={"prompt": "x", "images": [{"image_url": "data:image/png;base64,@@@"}]}),
        400,
        "images[0].image_url",
    )
    assert_error(await client.post(EDIT, json={"prompt": "x", "images": "nope"}), 400, "images")


async def test_unknown_route_and_method(client):
    assert_error(await client.get("/v1/nothing"), 404, None)
    assert_error(await client.get(GEN), 405, None)
