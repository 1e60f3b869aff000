"""Validating input images: untrusted bytes from clients.

The order of checks is the security boundary, so it is fixed:

1. byte size (413) and emptiness, before anything looks at the content;
2. the format, sniffed from magic bytes only (file names and client content types are never
   trusted); only PNG, JPEG and WebP are accepted and Pillow is only ever asked to open the
   sniffed format, so no other decoder is reachable;
3. width and height, read by our own header parser *before* Pillow sees the bytes, checked
   against :attr:`ImageLimits.max_pixels` (a decompression bomb is rejected without Pillow
   allocating anything: libwebp, for one, allocates its canvas when the file is opened);
4. Pillow opens the header (its size is checked again), and only then decodes pixels.

Decoding holds at most one full-resolution copy of an image, and only while it is decoded: an
image over the caller's ``max_pixels`` is reduced on load (JPEG through ``Image.draft``, which
lets libjpeg decode at 1/2, 1/4 or 1/8 scale; other formats with ``Image.reduce`` right after
the load) by the smallest integer factor that brings it under, and the full-size pixels are
released before orientation and mode conversion run on the smaller copy.

Every foreign exception (Pillow, OSError, SyntaxError, ValueError, ...) becomes an
:class:`~imagegate.errors.InvalidImageError`; no exception other than imagegate's own leaves
this module. ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched: a truncated file is an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

from PIL import ExifTags, Image, ImageFile

from imagegate.errors import (
    ImagegateError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)

ACCEPTED_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp")
_ACCEPTED_TEXT = "accepted formats are PNG, JPEG and WebP"
_PILLOW_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_LABELS = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP"}
_DISPLAY_NAMES = {
    "png": "a PNG",
    "jpeg": "a JPEG",
    "webp": "a WebP",
    "gif": "a GIF",
    "tiff": "a TIFF",
    "bmp": "a BMP",
    "svg": "an SVG",
    "heic": "a HEIC",
    "avif": "an AVIF",
}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _mask_rule(param: str) -> str:
    """The rule a mask (or a markup overlay, which follows the same one) broke."""
    return f"{param.split('.')[0]} must be a PNG with an alpha channel"


_SWAPS = frozenset(
    {Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270}
)
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "I", "F", "CMYK", "PA"})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
# JPEG start-of-frame markers (C4 DHT, C8 JPG and CC DAC share the range but are not frames).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})


@dataclass(frozen=True)
class ImageLimits:
    """Caps on client images (DESIGN.md section 9); all configurable."""

    max_pixels: int = 40_000_000
    max_request_pixels: int = 160_000_000
    max_file_bytes: int = 20 * 1024 * 1024


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: the sniffed format and the stored (pre-EXIF-rotation) size."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass
class DecodedImage:
    """A fully decoded image: mode RGB or RGBA, EXIF orientation applied, no metadata.

    `source_size` is the oriented size of the file (larger than width x height when the image was
    reduced on load); None means the same as the decoded size.
    """

    image: Image.Image
    source_format: str
    width: int
    height: int
    source_size: tuple[int, int] | None = None


# --- sniffing --------------------------------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """The image format named by the magic bytes, or None when they name no image format."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] in _TIFF_SIGNATURES:
        return "tiff"
    if _is_bmp(data):
        return "bmp"
    return _sniff_isobmff(data) or _sniff_svg(data)


def _is_bmp(data: bytes) -> bool:
    return data[:2] == b"BM" and len(data) >= 18 and int.from_bytes(data[14:18], "little") in _BMP_DIB_SIZES


def _sniff_isobmff(data: bytes) -> str | None:
    """HEIF family: an ISO-BMFF ``ftyp`` box whose major or compatible brands name an image."""
    if data[4:8] != b"ftyp":
        return None
    box_size = int.from_bytes(data[0:4], "big")
    end = min(max(box_size, 16), len(data), 4096)
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _HEIC_BRANDS:
        return "heic"
    return None


def _sniff_svg(data: bytes) -> str | None:
    head = data[:1024]
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    head = head.lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<") and b"<svg" in head):
        return "svg"
    return None


# --- header sizes (our own parser, before Pillow) -------------------------------------------


def header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG or WebP file; None when unreadable."""
    if fmt == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if fmt == "jpeg":
        return _jpeg_size(data)
    if fmt == "webp":
        return _webp_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the marker segments to the first start-of-frame; junk between segments is skipped."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            pos += 1
            continue
        marker = data[pos + 1]
        if marker == 0xFF or marker in _JPEG_STANDALONE:
            pos += 1 if marker == 0xFF else 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return None
        if marker in _JPEG_SOF:
            if pos + 9 > end:
                return None
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            return int.from_bytes(data[pos + 7 : pos + 9], "big"), height
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L":  # lossless: 14-bit width-1 and height-1 after the 0x2f signature
        if data[20] != 0x2F:
            return None
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":  # lossy: key frame start code, then 14-bit width and height
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


# --- probing ---------------------------------------------------------------------------------


def _check_format(data: bytes, param: str, limits: ImageLimits) -> str:
    """Size cap, emptiness, then the sniffed format; returns one of :data:`ACCEPTED_FORMATS`."""
    if len(data) > limits.max_file_bytes:
        raise PayloadTooLargeError(
            f"{param} is {_mib(len(data))}; the limit is {_mib(limits.max_file_bytes)} per file",
            param=param,
        )
    if not data:
        raise InvalidImageError(f"{param} is empty", param=param)
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaTypeError(f"{param} is not an image; {_ACCEPTED_TEXT}", param=param)
    if fmt not in ACCEPTED_FORMATS:
        message = f"{param} is {_DISPLAY_NAMES[fmt]} file; {_ACCEPTED_TEXT}"
        raise UnsupportedMediaTypeError(message, param=param)
    return fmt


def _check_pixels(width: int, height: int, param: str, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"{param} is {width}x{height} ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {limits.max_pixels / 1e6:g} megapixels per image",
            param=param,
        )


def _open(data: bytes, param: str, limits: ImageLimits) -> tuple[ImageInfo, ImageFile.ImageFile]:
    """Checks 1-4 of the module docstring; returns the info and the opened (not decoded) image."""
    fmt = _check_format(data, param, limits)
    invalid = f"{param} is not a valid {_LABELS[fmt]} file: its header cannot be read"
    size = header_size(data, fmt)
    if size is None or size[0] <= 0 or size[1] <= 0:
        raise InvalidImageError(invalid, param=param)
    _check_pixels(size[0], size[1], param, limits)
    try:
        image = Image.open(BytesIO(data), formats=[_PILLOW_NAMES[fmt]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Only reachable when max_pixels is configured above Pillow's MAX_IMAGE_PIXELS (and the
        # warning only when warnings are errors): our own check above is the guard.
        raise ImageTooLargeError(f"{param} has too many pixels", param=param) from exc
    except Exception as exc:
        raise InvalidImageError(invalid, param=param) from exc
    try:
        _check_pixels(image.width, image.height, param, limits)
    except ImageTooLargeError:
        image.close()
        raise
    return ImageInfo(fmt, image.width, image.height), image


def probe_image(data: bytes, param: str, limits: ImageLimits) -> ImageInfo:
    """Validate an input image from its header alone (no pixel is decoded)."""
    info, image = _open(data, param, limits)
    image.close()
    return info


def check_request_pixels(infos: Sequence[ImageInfo], limits: ImageLimits) -> None:
    """Reject a request whose input images together exceed ``max_request_pixels``."""
    total = sum(info.pixels for info in infos)
    if total > limits.max_request_pixels:
        raise ImageTooLargeError(
            f"the input images total {total / 1e6:.1f} megapixels; "
            f"the limit is {limits.max_request_pixels / 1e6:g} megapixels per request",
            param="image",
        )


# --- decoding --------------------------------------------------------------------------------


def reduce_factor(width: int, height: int, max_pixels: int | None) -> int:
    """The smallest integer factor that brings width x height (each edge rounded up) to ``max_pixels``."""
    if max_pixels is None or width * height <= max_pixels:
        return 1
    factor = max(2, math.isqrt(width * height // max_pixels))
    while math.ceil(width / factor) * math.ceil(height / factor) > max_pixels:
        factor += 1
    return factor


def decode_image(data: bytes, param: str, limits: ImageLimits, max_pixels: int | None = None) -> DecodedImage:
    """Probe, then decode frame 0, apply EXIF orientation, convert to RGB/RGBA, drop metadata.

    With ``max_pixels``, a larger image is reduced on load (see the module docstring).
    """
    info, opened = _open(data, param, limits)
    return _decode(opened, info.format, param, max_pixels)


def decode_mask(
    data: bytes, param: str, expected: tuple[int, int], limits: ImageLimits, fit: tuple[int, int] | None = None
) -> DecodedImage:
    """Decode an edit mask: a PNG with alpha whose oriented size equals ``expected``; RGBA out.

    ``fit``: the size the first image was decoded at when it was reduced on load; the mask is
    scaled to it (box filter) so they still line up.
    """
    fmt = _check_format(data, param, limits)
    if fmt != "png":
        raise InvalidRequestError(f"{_mask_rule(param)}; got {_DISPLAY_NAMES[fmt]} file", param=param)
    info, opened = _open(data, param, limits)
    if not _has_alpha(opened):
        opened.close()
        raise InvalidRequestError(f"{_mask_rule(param)}; this PNG has none (mode {opened.mode})", param=param)
    decoded = _decode(opened, info.format, param)
    if (decoded.width, decoded.height) != tuple(expected):
        raise InvalidRequestError(
            f"{param} is {decoded.width}x{decoded.height} but the image is {expected[0]}x{expected[1]}; "
            "they must be the same size",
            param=param,
        )
    if decoded.image.mode != "RGBA":
        decoded.image = decoded.image.convert("RGBA")
    if fit is not None and decoded.image.size != tuple(fit):
        decoded.image = decoded.image.resize(fit, Image.Resampling.BOX)
        decoded.source_size, (decoded.width, decoded.height) = (decoded.width, decoded.height), fit
    return decoded


def _decode(opened: ImageFile.ImageFile, fmt: str, param: str, max_pixels: int | None = None) -> DecodedImage:
    try:
        with opened:
            method = _orientation(opened)  # before the load: a PNG's eXIf chunk may follow its pixels
            source_size = opened.size[::-1] if method in _SWAPS else opened.size
            image = _load_reduced(opened, max_pixels)
        # The full-size pixels are gone here (closing the file frees them); the rest works on `image`.
        if method is not None:
            image = image.transpose(method)
        image = to_rgb_or_rgba(image)
    except ImagegateError:
        raise
    except Exception as exc:
        raise InvalidImageError(
            f"{param} is not a valid {_LABELS[fmt]} file: it is truncated or corrupt", param=param
        ) from exc
    image.info = {}
    size = source_size if source_size != image.size else None
    return DecodedImage(image=image, source_format=fmt, width=image.width, height=image.height, source_size=size)


def _load_reduced(opened: ImageFile.ImageFile, max_pixels: int | None) -> Image.Image:
    """Frame 0 decoded, at most ``max_pixels``; always a new image that outlives ``opened``."""
    full = opened.size
    factor = reduce_factor(*full, max_pixels)
    target = (math.ceil(full[0] / factor), math.ceil(full[1] / factor))
    if factor > 1 and opened.format == "JPEG":
        opened.draft(opened.mode, target)  # libjpeg decodes at 1/2, 1/4 or 1/8 scale, never below target
    opened.load()
    image: Image.Image = opened
    if image.size != target and image.mode not in _REDUCIBLE_MODES:
        image = to_rgb_or_rgba(image)  # palette, 1-bit and 16-bit modes cannot be reduced as they are
    if image.size == full and factor > 1:
        image = image.reduce(factor)
    elif image.size != target:  # a JPEG scaled part of the way by the draft
        image = image.resize(target, Image.Resampling.BOX)
    return opened.copy() if image is opened else image


def _orientation(image: Image.Image) -> Image.Transpose | None:
    return _ORIENTATIONS.get(image.getexif().get(ExifTags.Base.Orientation, 1))


def apply_orientation(image: Image.Image) -> Image.Image:
    """Apply the EXIF (or XMP) orientation; returns ``image`` itself when there is none.

    The mapping is ``ImageOps.exif_transpose``'s, but done with a bare ``transpose`` so the
    result carries no EXIF at all (``exif_transpose`` keeps every other tag, GPS included).
    """
    method = _orientation(image)
    return image if method is None else image.transpose(method)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def to_rgb_or_rgba(image: Image.Image) -> Image.Image:
    """RGB or RGBA; alpha (including palette or colour-key transparency) is kept."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode.startswith("I"):  # 16/32-bit grey: scale to 8 bits instead of clipping
        image = image.point(lambda value: value * (1 / 257)).convert("L")
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"
