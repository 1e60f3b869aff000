"""The header identifier (format, size, truncation) and base64-held image bytes."""

from __future__ import annotations

import os

import pybase64
import pytest
from PIL import Image

from imagegate.imaging.convert import OUTPUT_FORMATS, encode_image, identify
from imagegate.imaging.encoded import ImageBytes, InvalidBase64Error
from imagegate.imaging.header import HEAD_BYTES, TAIL_BYTES, TruncatedImageError, identify_header


def noise(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    return image.convert(mode)


def encoded(fmt: str, size: tuple[int, int] = (120, 80), mode: str = "RGB") -> bytes:
    return encode_image(noise(size, mode), fmt, None)


def parts(data: bytes) -> tuple[bytes, int, bytes]:
    return data[:HEAD_BYTES], len(data), data[-TAIL_BYTES:]


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
@pytest.mark.parametrize(("size", "mode"), [((120, 80), "RGB"), ((33, 257), "RGBA"), ((1, 1), "RGB")])
def test_each_format_is_identified_from_its_header(fmt: str, size: tuple[int, int], mode: str) -> None:
    data = encoded(fmt, size, mode)
    assert identify_header(*parts(data)) == (fmt, *size)
    assert identify(data) == (fmt, *size)


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
@pytest.mark.parametrize("keep", [0, 1, 8, 12, 20, 25])
def test_a_truncated_header_is_not_identified(fmt: str, keep: int) -> None:
    data = encoded(fmt)
    head = data[:keep]
    assert identify_header(head, len(data), data[-TAIL_BYTES:]) is None
    assert identify_header(head, len(head), head[-TAIL_BYTES:]) is None


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "gif"])
@pytest.mark.parametrize("cut", [1, 4, 12, 200])
def test_an_image_cut_short_is_truncated(fmt: str, cut: int) -> None:
    data = encoded(fmt)[:-cut]
    with pytest.raises(TruncatedImageError):
        identify_header(*parts(data))
    with pytest.raises(ValueError, match="truncated"):
        identify(data)


def test_avif_has_no_trailer_to_check() -> None:
    data = encoded("avif")
    assert identify_header(*parts(data[:-4])) == ("avif", 120, 80)


def test_a_jpeg_whose_frame_header_is_past_the_head_falls_back_to_pillow() -> None:
    image = noise((40, 30))
    big_exif = Image.Exif()
    big_exif[0x010E] = "x" * (HEAD_BYTES // 2)  # ImageDescription
    from io import BytesIO

    buffer = BytesIO()
    image.save(buffer, "JPEG", exif=big_exif.tobytes(), icc_profile=b"\0" * HEAD_BYTES)
    data = buffer.getvalue()
    assert identify_header(*parts(data)) is None
    assert identify(data) == ("jpeg", 40, 30)


@pytest.mark.parametrize("junk", [b"", b"\x00" * 100, b"GIF87a", b"RIFF\x00\x00\x00\x00WEBPVP8Z" + b"\x00" * 20])
def test_junk_is_not_identified(junk: bytes) -> None:
    assert identify_header(junk, len(junk), junk[-TAIL_BYTES:]) is None
    with pytest.raises(ValueError):
        identify(junk)


# --- ImageBytes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 47, 48, 49, 36 * 1024 + 1, 200_000])
def test_base64_held_bytes_match_the_raw_bytes(size: int) -> None:
    raw = os.urandom(size)
    held = ImageBytes.from_b64(pybase64.b64encode(raw))
    assert len(held) == size
    for n in (0, 1, 3, 16, 100, size):
        assert held.head(n) == raw[:n]
        assert held.tail(n) == (raw[-n:] if n else b"")
    assert not held.has_raw
    assert held.raw == raw and held.has_raw


def test_a_view_into_a_larger_buffer_is_used_without_a_copy() -> None:
    raw = os.urandom(5000)
    text = pybase64.b64encode(raw)
    buffer = b'{"b64_json":"' + text + b'"}'
    view = memoryview(buffer)[13 : 13 + len(text)]
    held = ImageBytes.from_b64(view)
    assert held.b64 is view and held.raw == raw and held.tail(7) == raw[-7:]


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"QUJD\n",
        b"QUJ",
        b"QU!D",
        b"QUJD QUJD",
        b"QQ==QUJD",
        b"=QUJ",
        b"\\/AB",
    ],
)
def test_invalid_base64_is_refused(text: bytes) -> None:
    with pytest.raises(InvalidBase64Error):
        ImageBytes.from_b64(text)


def test_padding_at_a_validation_chunk_boundary_is_refused() -> None:
    chunk = pybase64.b64encode(os.urandom(36 * 1024 - 1))  # 48 KiB characters ending in "="
    assert chunk.endswith(b"=") and len(chunk) == 48 * 1024
    with pytest.raises(InvalidBase64Error):
        ImageBytes.from_b64(chunk + pybase64.b64encode(b"more"))


def test_raw_bytes_are_encoded_once_on_demand() -> None:
    raw = os.urandom(100)
    held = ImageBytes(raw=raw)
    assert held.b64 == pybase64.b64encode(raw) and held.b64 is held.b64
    assert held.head(10) == raw[:10] and len(held) == 100
