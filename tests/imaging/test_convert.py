"""Output encoding and transcoding."""

from __future__ import annotations

from io import BytesIO

import pytest
from PIL import Image

from imagegate.imaging.convert import (
    OUTPUT_FORMATS,
    encode_image,
    encode_with_pillow_defaults,
    has_transparency,
    identify,
    quality_for,
    transcode,
)

PILLOW_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF", "avif": "AVIF"}


def photo(size: tuple[int, int] = (256, 192)) -> Image.Image:
    """Smooth colour fields plus grain: compresses like a photo, not like flat colour."""
    width, height = size
    channels = [
        Image.effect_noise((max(2, width // 16), max(2, height // 16)), 60).resize(size, Image.Resampling.BICUBIC)
        for _ in range(3)
    ]
    grain = Image.effect_noise(size, 30).convert("RGB")
    return Image.blend(Image.merge("RGB", channels), grain, 0.2)


def half_transparent(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """Opaque red on the right half, fully transparent on the left half."""
    image = Image.new("RGBA", size, (220, 30, 30, 255))
    image.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    return image


def decode(data: bytes) -> Image.Image:
    image = Image.open(BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_each_format_round_trips(fmt: str, mode: str) -> None:
    image = photo((120, 80)).convert(mode)

    data = encode_image(image, fmt, None)
    decoded = decode(data)

    assert decoded.format == PILLOW_FORMAT[fmt]
    assert decoded.size == (120, 80)
    assert identify(data) == (fmt, 120, 80)


@pytest.mark.parametrize("fmt", ["png", "webp", "avif", "gif"])
def test_transparent_pixels_stay_transparent(fmt: str) -> None:
    data = encode_image(half_transparent(), fmt, None)
    decoded = decode(data).convert("RGBA")

    assert decoded.getpixel((5, 10))[3] == 0
    right = decoded.getpixel((50, 10))
    assert right[3] == 255
    assert right[0] > 180 and right[1] < 80


def test_gif_transparency_uses_a_threshold_for_soft_alpha() -> None:
    image = Image.new("RGBA", (30, 10), (10, 200, 10, 255))
    image.paste((10, 200, 10, 100), (10, 0, 20, 10))  # mostly transparent -> transparent
    image.paste((10, 200, 10, 0), (20, 0, 30, 10))

    decoded = decode(encode_image(image, "gif", None)).convert("RGBA")

    assert [decoded.getpixel((x, 5))[3] for x in (5, 15, 25)] == [255, 0, 0]


def test_jpeg_flattens_alpha_onto_white() -> None:
    decoded = decode(encode_image(half_transparent(), "jpeg", None))

    assert decoded.mode == "RGB"
    assert all(channel > 240 for channel in decoded.getpixel((5, 10)))
    red, green, _blue = decoded.getpixel((50, 10))
    assert red > 180 and green < 80


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif"])
def test_compression_trades_size_for_quality(fmt: str) -> None:
    image = photo()

    small = encode_image(image, fmt, 10)
    large = encode_image(image, fmt, 95)

    assert len(small) < len(large)


def test_quality_mapping_follows_openai_semantics() -> None:
    assert quality_for("jpeg", 100) == 95
    assert quality_for("jpeg", 0) == 1
    assert quality_for("webp", 50) == 50
    assert quality_for("jpeg", None) == 90


def test_png_and_gif_ignore_compression_and_are_lossless_or_paletted() -> None:
    image = photo((64, 64))

    png = decode(encode_image(image, "png", 5))
    gif = decode(encode_image(image, "gif", 5))

    assert png.tobytes() == image.tobytes()
    assert gif.mode == "P"


def test_unknown_output_format_is_value_error() -> None:
    with pytest.raises(ValueError):
        encode_image(photo((8, 8)), "tiff", None)


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_pillow_default_baseline_encodes(fmt: str) -> None:
    data = encode_with_pillow_defaults(half_transparent(), fmt)

    assert identify(data) == (fmt, 64, 48)


@pytest.mark.parametrize("source", OUTPUT_FORMATS)
@pytest.mark.parametrize("target", OUTPUT_FORMATS)
def test_transcode_keeps_dimensions(source: str, target: str) -> None:
    data = encode_image(photo((96, 64)), source, None)

    out, width, height = transcode(data, target, None)

    assert (width, height) == (96, 64)
    assert identify(out) == (target, 96, 64)


def test_transcode_returns_the_same_bytes_when_nothing_changes() -> None:
    data = encode_image(photo((32, 32)), "webp", None)

    assert transcode(data, "webp", None)[0] is data
    assert transcode(data, "webp", 20)[0] != data


def test_transcode_applies_exif_orientation_and_drops_exif() -> None:
    image = Image.new("RGB", (80, 40), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())

    out, width, height = transcode(buffer.getvalue(), "png", None)

    assert (width, height) == (40, 80)
    assert "exif" not in decode(out).info


def test_transcode_rejects_undecodable_and_oversized_data() -> None:
    good = encode_image(photo((64, 64)), "png", None)

    with pytest.raises(ValueError):
        transcode(b"not an image", "png", None)
    with pytest.raises(ValueError):
        transcode(good[: len(good) // 2], "jpeg", None)
    with pytest.raises(ValueError):
        transcode(good, "jpeg", None, max_pixels=1000)


def test_identify_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        identify(b"\x00" * 100)
    with pytest.raises(ValueError):
        identify(b"")


def test_has_transparency_looks_at_pixels() -> None:
    assert has_transparency(half_transparent())
    assert not has_transparency(Image.new("RGBA", (4, 4), (1, 2, 3, 255)))
    assert not has_transparency(Image.new("RGB", (4, 4)))
    paletted = Image.new("P", (4, 4), 0)
    paletted.info["transparency"] = 0
    assert has_transparency(paletted)
    assert has_transparency(Image.new("LA", (4, 4), (0, 0)))
