"""POST /v1/images/edits: multipart (image / image[]) and JSON with data URLs."""

from __future__ import annotations

import pybase64
from PIL import Image, ImageChops

from tests.helpers import encoded, mask_bytes, open_image, png_bytes


def _b64_image(response) -> Image.Image:
    return open_image(pybase64.b64decode(response.json()["data"][0]["b64_json"]))


async def test_single_image_edit_without_mask_changes_the_image(client):
    base = png_bytes(1024, 1024, (10, 120, 200))
    response = await client.post(
        "/v1/images/edits",
        data={"prompt": "add a moon", "response_format": "b64_json", "size": "1024x1024"},
        files={"image": ("base.png", base, "image/png")},
    )
    assert response.status_code == 200, response.text
    out = _b64_image(response).convert("RGB")
    assert out.size == (1024, 1024)
    assert ImageChops.difference(out, open_image(base).convert("RGB")).getbbox() is not None
    assert response.json()["imagegate"]["mode"] == "image-edit"


async def test_masked_edit_changes_only_the_transparent_area(client):
    base = png_bytes(1024, 1024, (40, 160, 40))
    mask = mask_bytes(1024, 1024, (0, 0, 512, 1024))  # left half editable
    second = png_bytes(300, 200, (250, 250, 0))
    response = await client.post(
        "/v1/images/edits",
        data={"prompt": "paint the left", "response_format": "b64_json", "size": "1024x1024"},
        files=[
            ("image[]", ("a.png", base, "image/png")),
            ("image[]", ("b.png", second, "image/png")),
            ("mask", ("m.png", mask, "image/png")),
        ],
    )
    assert response.status_code == 200, response.text
    out = _b64_image(response).convert("RGB")
    original = open_image(base).convert("RGB")
    right = (512, 0, 1024, 1024)
    assert ImageChops.difference(out.crop(right), original.crop(right)).getbbox() is None
    left = (0, 0, 512, 1024)
    assert ImageChops.difference(out.crop(left), original.crop(left)).getbbox() is not None


async def test_ten_images_accepted_eleven_refused(client):
    parts = [("image[]", (f"{i}.png", png_bytes(64, 64, (i * 20, 0, 0)), "image/png")) for i in range(10)]
    ok = await client.post("/v1/images/edits", data={"prompt": "ten", "response_format": "b64_json"}, files=parts)
    assert ok.status_code == 200, ok.text
    parts.append(("image[]", ("10.png", png_bytes(), "image/png")))
    refused = await client.post("/v1/images/edits", data={"prompt": "eleven"}, files=parts)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "image"


async def test_json_edit_with_data_urls(client):
    def data_url(raw: bytes) -> str:
        return "data:image/png;base64," + pybase64.b64encode(raw).decode()

    base = png_bytes(256, 256, (0, 0, 255))
    mask = mask_bytes(256, 256, (0, 0, 128, 256))
    response = await client.post(
        "/v1/images/edits",
        json={
            "prompt": "json edit",
            "response_format": "b64_json",
            "size": "1024x1024",
            "images": [{"image_url": data_url(base)}, {"image_url": data_url(png_bytes(32, 32))}],
            "mask": {"image_url": data_url(mask)},
        },
    )
    assert response.status_code == 200, response.text
    assert _b64_image(response).size == (1024, 1024)


async def test_jpeg_and_webp_inputs_are_accepted(client):
    photo = Image.new("RGB", (320, 240), (90, 60, 30))
    for fmt in ("JPEG", "WEBP"):
        response = await client.post(
            "/v1/images/edits",
            data={"prompt": "fmt", "response_format": "b64_json"},
            files={"image": (f"x.{fmt.lower()}", encoded(photo, fmt), f"image/{fmt.lower()}")},
        )
        assert response.status_code == 200, (fmt, response.text)


async def test_edit_served_as_url(client):
    response = await client.post(
        "/v1/images/edits",
        data={"prompt": "url please"},
        files={"image": ("a.png", png_bytes(), "image/png")},
    )
    assert response.status_code == 200, response.text
    fetched = await client.get(response.json()["data"][0]["url"])
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
