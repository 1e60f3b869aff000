"""Decoding no more than needed: inputs over the pixel target are reduced while they are decoded."""

from __future__ import annotations

from io import BytesIO

import pytest
from PIL import Image, ImageOps

from imagegate.config import Limits
from imagegate.errors import InvalidRequestError
from imagegate.imaging.probe import ImageLimits, decode_image, decode_mask, reduce_factor
from imagegate.inputs import DECODE_BYTES_PER_PIXEL, HELD_BYTES_PER_PIXEL, RawInput, decode_inputs, probe_inputs

LIMITS = ImageLimits()


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def halves(size: tuple[int, int]) -> Image.Image:
    """Left half red, right half blue: survives any box reduction recognisably."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return image


@pytest.mark.parametrize(
    ("width", "height", "target", "factor"),
    [(100, 100, 10_000, 1), (101, 100, 10_000, 2), (3000, 2000, 1_000_000, 3), (4000, 3000, 1_000_000, 4)],
)
def test_reduce_factor_is_the_smallest_that_fits(width: int, height: int, target: int, factor: int) -> None:
    assert reduce_factor(width, height, target) == factor
    assert -(-width // factor) * -(-height // factor) <= target
    if factor > 1:
        assert -(-width // (factor - 1)) * -(-height // (factor - 1)) > target


def test_no_target_or_small_image_is_not_reduced() -> None:
    data = encode(halves((300, 200)), "PNG")
    for target in (None, 60_000):
        decoded = decode_image(data, "image", LIMITS, target)
        assert decoded.image.size == (300, 200) and decoded.source_size is None


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_large_image_is_reduced_and_keeps_its_content(fmt: str) -> None:
    data = encode(halves((3000, 2000)), fmt)
    decoded = decode_image(data, "image", LIMITS, 1_000_000)
    assert decoded.image.size == (1000, 667) and (decoded.width, decoded.height) == (1000, 667)
    assert decoded.source_size == (3000, 2000)
    assert decoded.image.mode == "RGB" and decoded.image.info == {}
    left, right = decoded.image.getpixel((100, 300)), decoded.image.getpixel((900, 300))
    assert left[0] > 200 and left[2] < 60 and right[2] > 200 and right[0] < 60


def test_jpeg_uses_a_scaled_decode() -> None:
    data = encode(halves((4000, 3000)), "JPEG")
    decoded = decode_image(data, "image", LIMITS, 1_000_000)
    assert decoded.image.size == (1000, 750)  # libjpeg's 1/4 scale exactly; no further reduce needed


def test_palette_with_transparency_is_reduced_to_rgba() -> None:
    image = Image.new("RGBA", (2000, 1000), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 1000, 1000))
    data = encode(image.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0)
    decoded = decode_image(data, "image", LIMITS, 400_000)
    assert decoded.image.mode == "RGBA" and decoded.image.size == (667, 334)
    assert decoded.image.getpixel((10, 10)) == (255, 0, 0, 255) and decoded.image.getpixel((600, 10))[3] == 0


def test_orientation_applies_to_the_reduced_image() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(halves((4000, 3000)), "JPEG", exif=exif.tobytes())
    decoded = decode_image(data, "image", LIMITS, 1_000_000)
    reference = ImageOps.exif_transpose(Image.open(BytesIO(data)))
    assert decoded.image.size == (750, 1000) and decoded.source_size == reference.size == (3000, 4000)
    assert len(decoded.image.getexif()) == 0


def test_mask_is_checked_at_full_size_then_fitted_to_the_reduced_image() -> None:
    mask = Image.new("RGBA", (2000, 1000), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 1000, 1000))
    decoded = decode_mask(encode(mask, "PNG"), "mask", (2000, 1000), LIMITS, fit=(1000, 500))
    assert decoded.image.size == (1000, 500) and decoded.source_size == (2000, 1000)
    assert decoded.image.getpixel((10, 10))[3] == 0 and decoded.image.getpixel((990, 10))[3] == 255
    with pytest.raises(InvalidRequestError) as caught:
        decode_mask(encode(mask, "PNG"), "mask", (1000, 500), LIMITS, fit=(1000, 500))
    assert caught.value.param == "mask"


async def test_probe_reports_what_decoding_holds() -> None:
    limits = Limits(max_decoded_input_pixels=1_000_000)
    images = [
        RawInput("image[0]", encode(halves((3000, 2000)), "PNG")),
        RawInput("image[1]", encode(halves((500, 500)), "PNG")),
    ]
    probed = probe_inputs(images, None, limits)
    held_pixels = 1000 * 667 + 500 * 500
    assert probed.held_bytes == held_pixels * HELD_BYTES_PER_PIXEL
    assert probed.decode_bytes == 3000 * 2000 * DECODE_BYTES_PER_PIXEL + probed.held_bytes
    assert probed.upload_bytes == sum(len(item.data) for item in images)
    decoded = await decode_inputs(probed, limits)
    assert [item.image.size for item in decoded.images] == [(1000, 667), (500, 500)]
