"""Input image validation: every input is built here, in memory."""

from __future__ import annotations

import contextlib
import random
import struct
import time
import zlib
from io import BytesIO

import pytest
from PIL import Image, ImageFile, ImageOps, PngImagePlugin

from imagegate.errors import (
    ImagegateError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from imagegate.imaging.probe import (
    ImageInfo,
    ImageLimits,
    check_request_pixels,
    decode_image,
    decode_mask,
    header_size,
    probe_image,
    sniff_format,
)

LIMITS = ImageLimits()


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    base = Image.linear_gradient("L").resize(size)
    image = Image.merge("RGB", (base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT), base.rotate(90)))
    return image.convert(mode)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def fake_png(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` RGB pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# --- accepted formats ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_valid_images_decode(fmt: str, mode: str) -> None:
    image = gradient((64, 48), "RGBA" if mode == "RGBA" else "RGB")
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize((64, 48)))
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    source = image.convert("RGB") if fmt == "jpeg" else image
    data = encode(source, fmt.upper())

    info = probe_image(data, "image", LIMITS)
    decoded = decode_image(data, "image", LIMITS)

    assert info == ImageInfo(fmt, 64, 48)
    assert (decoded.width, decoded.height, decoded.source_format) == (64, 48, fmt)
    assert decoded.image.size == (64, 48)
    expect_alpha = mode == "RGBA" and fmt != "jpeg"
    assert decoded.image.mode == ("RGBA" if expect_alpha else "RGB")
    assert decoded.image.info == {}


def test_palette_with_transparency_becomes_rgba() -> None:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([255, 0, 0, 0, 255, 0])
    image.paste(1, (0, 0, 8, 16))
    data = encode(image, "PNG", transparency=0)

    decoded = decode_image(data, "image", LIMITS)

    assert decoded.image.mode == "RGBA"
    assert decoded.image.getpixel((12, 4))[3] == 0
    assert decoded.image.getpixel((2, 4)) == (0, 255, 0, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    data = encode(Image.new("I;16", (8, 8), 32768), "PNG")

    decoded = decode_image(data, "image", LIMITS)

    assert decoded.image.mode == "RGB"
    assert 120 <= decoded.image.getpixel((0, 0))[0] <= 135


def test_animated_webp_uses_frame_zero() -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True, duration=100)
    assert Image.open(BytesIO(data)).n_frames == 2

    decoded = decode_image(data, "image", LIMITS)

    assert decoded.image.getpixel((16, 16))[:3] == (255, 0, 0)


def test_jpeg_exif_orientation_is_applied_and_metadata_dropped() -> None:
    image = Image.new("RGB", (80, 40), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 20, 40))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "SecretCam"  # Make: must not survive
    data = encode(image, "JPEG", exif=exif.tobytes(), quality=95)

    info = probe_image(data, "image", LIMITS)
    decoded = decode_image(data, "image", LIMITS)

    assert (info.width, info.height) == (80, 40)  # the stored size
    assert decoded.image.size == (40, 80) and (decoded.width, decoded.height) == (40, 80)
    red, green, _blue = decoded.image.getpixel((20, 5))  # the left strip is now on top
    assert red > 200 and green < 60
    assert decoded.image.info == {}
    assert "exif" not in decoded.image.info and len(decoded.image.getexif()) == 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillows_exif_transpose(orientation: int) -> None:
    image = Image.effect_noise((30, 20), 80).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x8298] = "Copyright someone"
    data = encode(image, "PNG", exif=exif.tobytes())

    decoded = decode_image(data, "image", LIMITS).image
    reference = ImageOps.exif_transpose(Image.open(BytesIO(data)))

    assert decoded.size == reference.size
    assert decoded.tobytes() == reference.tobytes()
    assert len(decoded.getexif()) == 0


def test_png_text_and_icc_metadata_are_dropped() -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "secret location")
    data = encode(gradient(), "PNG", pnginfo=text, icc_profile=b"not really a profile")
    assert Image.open(BytesIO(data)).info.get("icc_profile")

    decoded = decode_image(data, "image", LIMITS)

    assert decoded.image.info == {}


# --- rejected formats ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"hello, this is plain text and not an image at all", b"\x00" * 4096, b"%PDF-1.7\n", b"\x01"],
    ids=["text", "zeros", "pdf", "one-byte"],
)
def test_non_images_are_415(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as caught:
        probe_image(data, "image[1]", LIMITS)

    assert caught.value.status == 415
    assert caught.value.param == "image[1]"
    assert "not an image" in caught.value.message


def _svg(prefix: bytes) -> bytes:
    return prefix + b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (encode(gradient(), "TIFF"), "TIFF"),
        (encode(gradient(), "BMP"), "BMP"),
        (encode(gradient(), "GIF"), "GIF"),
        (_svg(b""), "SVG"),
        (_svg(b'\xef\xbb\xbf  <?xml version="1.0"?>\n<!-- drawn -->\n'), "SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64, "AVIF"),
    ],
    ids=["tiff", "bmp", "gif", "svg", "svg-xml-prolog", "heic", "avif"],
)
def test_recognized_but_unaccepted_formats_are_415_naming_the_format(data: bytes, name: str) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as caught:
        probe_image(data, "image[2]", LIMITS)

    assert caught.value.status == 415
    assert caught.value.param == "image[2]"
    assert caught.value.code == "unsupported_media_type"
    assert f"image[2] is a {name} file" in caught.value.message or f"image[2] is an {name} file" in (
        caught.value.message
    )
    assert "accepted formats are PNG, JPEG and WebP" in caught.value.message


def test_real_avif_is_recognized_as_avif() -> None:
    assert sniff_format(encode(gradient(), "AVIF")) == "avif"


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"), ("GIF", "gif"), ("TIFF", "tiff"), ("BMP", "bmp")],
)
def test_sniff_format_from_magic_bytes(fmt: str, expected: str) -> None:
    assert sniff_format(encode(gradient(), fmt)) == expected


def test_sniff_ignores_everything_but_the_bytes() -> None:
    assert sniff_format(b"<html><body>no svg here</body></html>") is None
    assert sniff_format(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42") is None  # a video
    assert sniff_format(b"BMW is a car") is None
    assert sniff_format(b"") is None


# --- corrupt and oversized input -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_are_invalid_image(fmt: str) -> None:
    noise = Image.effect_noise((256, 256), 64).convert("RGB")
    data = encode(noise, fmt)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False

    with pytest.raises(InvalidImageError) as caught:
        decode_image(data[: len(data) // 2], "image", LIMITS)

    assert caught.value.status == 400
    assert caught.value.code == "invalid_image"
    assert caught.value.param == "image"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("cut", [8, 20, 30])
def test_header_only_fragments_are_invalid_image(cut: int) -> None:
    data = encode(gradient(), "PNG")[:cut]

    with pytest.raises(InvalidImageError) as caught:
        probe_image(data, "image", LIMITS)

    assert caught.value.param == "image"


def test_empty_file_is_invalid_image() -> None:
    with pytest.raises(InvalidImageError) as caught:
        probe_image(b"", "image", LIMITS)
    assert caught.value.param == "image" and caught.value.status == 400


def test_decompression_bomb_is_rejected_from_the_header() -> None:
    data = fake_png(100_000, 100_000)
    assert len(data) < 200
    assert header_size(data, "png") == (100_000, 100_000)

    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(data, "image", LIMITS)
    elapsed = time.perf_counter() - started

    assert type(caught.value) is ImageTooLargeError  # ours, not Pillow's DecompressionBombError
    assert not isinstance(caught.value.__cause__, Image.DecompressionBombError)
    assert caught.value.status == 400 and caught.value.code == "image_too_large"
    assert caught.value.param == "image"
    assert "100000x100000" in caught.value.message
    assert elapsed < 0.1


def test_real_large_png_is_rejected_without_decoding() -> None:
    data = encode(Image.new("1", (10_000, 10_000), 0), "PNG")
    assert len(data) < 1_000_000

    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(data, "image[0]", LIMITS)

    assert time.perf_counter() - started < 0.1
    assert caught.value.param == "image[0]"


def test_pixel_cap_is_configurable() -> None:
    data = encode(gradient((100, 100)), "JPEG")
    small = ImageLimits(max_pixels=9_999)

    with pytest.raises(ImageTooLargeError):
        probe_image(data, "image", small)
    assert probe_image(data, "image", ImageLimits(max_pixels=10_000)).width == 100


@pytest.mark.parametrize("fmt", ["WEBP", "JPEG"])
def test_pixel_cap_applies_to_webp_and_jpeg_headers(fmt: str) -> None:
    data = encode(gradient((300, 200)), fmt)
    assert header_size(data, fmt.lower()) == (300, 200)

    with pytest.raises(ImageTooLargeError):
        probe_image(data, "image", ImageLimits(max_pixels=50_000))


def test_lossless_and_extended_webp_headers_are_read() -> None:
    lossless = encode(gradient((300, 200)), "WEBP", lossless=True)
    with_alpha = encode(gradient((301, 199), "RGBA"), "WEBP")

    assert header_size(lossless, "webp") == (300, 200)
    assert header_size(with_alpha, "webp") == (301, 199)


def test_oversized_file_is_413_before_anything_else() -> None:
    limits = ImageLimits(max_file_bytes=1024)
    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2048

    with pytest.raises(PayloadTooLargeError) as caught:
        probe_image(data, "image[3]", limits)

    assert caught.value.status == 413
    assert caught.value.param == "image[3]"


def test_request_pixel_total_is_capped() -> None:
    limits = ImageLimits(max_request_pixels=1_000_000)
    check_request_pixels([ImageInfo("png", 500, 1000), ImageInfo("png", 500, 1000)], limits)

    with pytest.raises(ImageTooLargeError) as caught:
        check_request_pixels(
            [ImageInfo("png", 500, 1000), ImageInfo("png", 500, 1000), ImageInfo("jpeg", 1, 1)], limits
        )

    assert caught.value.param == "image"
    assert caught.value.status == 400


# --- masks -----------------------------------------------------------------------------------


def rgba_mask(size: tuple[int, int]) -> Image.Image:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    return mask


def test_good_mask_decodes_as_rgba() -> None:
    decoded = decode_mask(encode(rgba_mask((64, 48)), "PNG"), "mask", (64, 48), LIMITS)

    assert decoded.image.mode == "RGBA"
    assert decoded.image.size == (64, 48)
    assert decoded.image.getpixel((0, 0))[3] == 0
    assert decoded.image.getpixel((63, 0))[3] == 255


@pytest.mark.parametrize("mode", ["LA", "P"])
def test_mask_alpha_may_come_from_la_or_palette(mode: str) -> None:
    mask = rgba_mask((32, 32))
    if mode == "LA":
        data = encode(mask.convert("LA"), "PNG")
    else:
        paletted = Image.new("P", (32, 32), 1)
        paletted.putpalette([0, 0, 0, 255, 255, 255])
        paletted.paste(0, (0, 0, 16, 32))
        data = encode(paletted, "PNG", transparency=0)

    decoded = decode_mask(data, "mask", (32, 32), LIMITS)

    assert decoded.image.mode == "RGBA"
    assert decoded.image.getpixel((0, 0))[3] == 0


def test_mask_of_wrong_size_is_400_stating_both_sizes() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decode_mask(encode(rgba_mask((64, 64)), "PNG"), "mask", (128, 96), LIMITS)

    assert caught.value.status == 400
    assert caught.value.param == "mask"
    assert "64x64" in caught.value.message and "128x96" in caught.value.message


def test_mask_without_alpha_is_400() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decode_mask(encode(gradient((32, 32)), "PNG"), "mask", (32, 32), LIMITS)

    assert caught.value.status == 400
    assert caught.value.param == "mask"
    assert "alpha" in caught.value.message


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_mask_that_is_not_png_is_400(fmt: str) -> None:
    source = gradient((32, 32), "RGB" if fmt == "JPEG" else "RGBA")

    with pytest.raises(InvalidRequestError) as caught:
        decode_mask(encode(source, fmt), "mask", (32, 32), LIMITS)

    assert caught.value.status == 400
    assert caught.value.param == "mask"
    assert "mask must be a PNG with an alpha channel" in caught.value.message


def test_mask_in_unaccepted_format_is_415() -> None:
    with pytest.raises(UnsupportedMediaTypeError) as caught:
        decode_mask(encode(rgba_mask((32, 32)), "TIFF"), "mask", (32, 32), LIMITS)

    assert caught.value.param == "mask"


def test_mask_orientation_is_applied_before_the_size_check() -> None:
    mask = rgba_mask((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(mask, "PNG", exif=exif.tobytes())

    decoded = decode_mask(data, "mask", (20, 40), LIMITS)

    assert decoded.image.size == (20, 40)
    with pytest.raises(InvalidRequestError):
        decode_mask(data, "mask", (40, 20), LIMITS)


def test_mask_bomb_is_too_large_with_param_mask() -> None:
    with pytest.raises(ImageTooLargeError) as caught:
        decode_mask(fake_png(50_000, 50_000), "mask", (64, 64), LIMITS)
    assert caught.value.param == "mask"


def test_mutated_files_never_raise_foreign_exceptions() -> None:
    """A seeded mini-fuzz: flipped, deleted and inserted bytes give only imagegate errors."""
    image = gradient((48, 32))
    sources = [
        encode(image, "PNG"),
        encode(image.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        encode(image, "JPEG"),
        encode(image, "WEBP"),
        encode(image, "WEBP", lossless=True),
        encode(gradient((48, 32), "RGBA"), "WEBP"),
    ]
    rng = random.Random(20240601)
    for _ in range(600):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            roll = rng.random()
            if roll < 0.6:
                data[at] = rng.randrange(256)
            elif roll < 0.8:
                del data[at : at + rng.randint(1, 16)]
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 16))
        with contextlib.suppress(ImagegateError):  # anything else fails the test
            decode_image(bytes(data), "image", LIMITS)
