"""Output encoding: PNG, JPEG, WebP, GIF and AVIF with settings chosen for latency.

``output_compression`` is read the way OpenAI defines it: 0-100, where 100 is the best quality
and lower values compress harder. For the lossy formats the encoder quality is
``max(1, min(95, compression))`` (Pillow advises against JPEG quality above 95: the file grows
a lot for no visible gain); ``None`` means the per-format default in :data:`DEFAULT_QUALITY`.
PNG and GIF are lossless/palette formats and ignore the compression value.

Fast settings (see ``bench/encode.py`` for the measurements behind them):

- PNG: zlib level 1, no optimize pass (Pillow's default level 6 costs ~3.5x the time for
  files ~10% smaller);
- JPEG: no optimize pass, no progressive, default 4:2:0 subsampling;
- WebP: lossy, ``method=0`` (the fastest encoder effort; 2-3x faster than the default 4, for
  files ~5-10% larger at the same quality); alpha is kept (lossy RGB + lossless alpha);
- AVIF: ``speed=10`` (the fastest libaom preset; ~5x faster than the default 6);
- GIF: FASTOCTREE quantization to 256 colours (Pillow's default median cut is much slower);
  RGBA keeps binary transparency: pixels with alpha < 128 become the transparent index.

JPEG has no alpha channel: RGBA is flattened onto white.
"""

from __future__ import annotations

from io import BytesIO

from PIL import Image

from imagegate.imaging.header import HEAD_BYTES, TAIL_BYTES, identify_header
from imagegate.imaging.probe import apply_orientation, header_size, sniff_format, to_rgb_or_rgba

OUTPUT_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp", "gif", "avif")
DEFAULT_QUALITY = {"jpeg": 90, "webp": 90, "avif": 75}
PNG_COMPRESS_LEVEL = 1
WEBP_METHOD = 0
AVIF_SPEED = 10

_PILLOW_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF", "avif": "AVIF"}
_FROM_PILLOW = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp", "GIF": "gif", "AVIF": "avif"}
_OPEN_FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "AVIF"]
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_GIF_TRANSPARENT_INDEX = 255


def quality_for(fmt: str, compression: int | None) -> int:
    """Encoder quality for a lossy format from OpenAI's ``output_compression`` (100 = best)."""
    if compression is None:
        return DEFAULT_QUALITY[fmt]
    return max(1, min(95, compression))


def encode_image(image: Image.Image, fmt: str, compression: int | None) -> bytes:
    """Encode ``image`` (any mode; RGB/RGBA expected) as ``fmt`` with the fast settings."""
    fmt = _output_format(fmt)
    image = to_rgb_or_rgba(image)
    buffer = BytesIO()
    if fmt == "png":
        image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    elif fmt == "jpeg":
        flat = flatten(image)
        flat.save(buffer, "JPEG", quality=quality_for(fmt, compression), optimize=False, progressive=False)
    elif fmt == "webp":
        image.save(buffer, "WEBP", quality=quality_for(fmt, compression), method=WEBP_METHOD)
    elif fmt == "avif":
        image.save(buffer, "AVIF", quality=quality_for(fmt, compression), speed=AVIF_SPEED)
    else:
        paletted = to_gif_palette(image)
        transparency = paletted.info.get("transparency")
        if transparency is None:
            paletted.save(buffer, "GIF", optimize=False)
        else:
            paletted.save(buffer, "GIF", optimize=False, transparency=transparency)
    return buffer.getvalue()


def encode_with_pillow_defaults(image: Image.Image, fmt: str) -> bytes:
    """Baseline for the benchmark: ``image.save`` with Pillow's defaults (RGBA->RGB for JPEG)."""
    fmt = _output_format(fmt)
    if fmt == "jpeg" and image.mode != "RGB":
        image = image.convert("RGB")
    buffer = BytesIO()
    image.save(buffer, format=_PILLOW_NAMES[fmt])
    return buffer.getvalue()


def has_transparency(image: Image.Image) -> bool:
    """Whether any pixel is not fully opaque (not merely whether an alpha channel exists)."""
    if image.mode in _ALPHA_MODES:
        alpha = image.getchannel("A")
    elif "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
    else:
        return False
    low, _high = alpha.getextrema()
    return bool(low < 255)


def flatten(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """RGB: an RGBA image composited over ``background`` (RGB images are returned as they are)."""
    if image.mode == "RGB":
        return image
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, background)
    flat.paste(rgba, (0, 0), rgba)
    return flat


def to_gif_palette(image: Image.Image) -> Image.Image:
    """Mode P for GIF: FASTOCTREE quantization; transparent pixels (alpha < 128) -> index 255."""
    if image.mode != "RGBA" or not has_transparency(image):
        return image.convert("RGB").quantize(256, Image.Quantize.FASTOCTREE)
    paletted = image.convert("RGB").quantize(_GIF_TRANSPARENT_INDEX, Image.Quantize.FASTOCTREE)
    palette = (paletted.getpalette() or [])[: 3 * _GIF_TRANSPARENT_INDEX]
    palette += [0] * (3 * 256 - len(palette))
    paletted.putpalette(palette)
    transparent = image.getchannel("A").point(lambda value: 255 if value < 128 else 0, "1")
    paletted.paste(_GIF_TRANSPARENT_INDEX, (0, 0, *image.size), transparent)
    paletted.info["transparency"] = _GIF_TRANSPARENT_INDEX
    return paletted


def identify(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of provider output from its header; ValueError if unreadable or truncated.

    Our own header parser first (no Pillow object, no copy); Pillow opens what it cannot read.
    """
    found = identify_header(data[:HEAD_BYTES], len(data), data[-TAIL_BYTES:])
    return found if found is not None else identify_with_pillow(data)


def identify_with_pillow(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from Pillow's header parse; ValueError if unreadable."""
    try:
        with Image.open(BytesIO(data), formats=_OPEN_FORMATS) as image:
            return _format_of(image), image.width, image.height
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"unreadable image data: {exc}") from exc


def transcode(data: bytes, fmt: str, compression: int | None, max_pixels: int = 100_000_000) -> tuple[bytes, int, int]:
    """Re-encode provider output (any of the five formats) as ``fmt``; returns bytes and size.

    The original bytes come back untouched when they already are ``fmt`` and no compression is
    asked for. Otherwise frame 0 is decoded, EXIF orientation applied, metadata dropped (the
    ICC profile is kept so colours stay right). ValueError on undecodable or oversized data.
    """
    fmt = _output_format(fmt)
    _check_header_pixels(data, max_pixels)
    try:
        with Image.open(BytesIO(data), formats=_OPEN_FORMATS) as opened:
            source = _format_of(opened)
            if source == fmt and compression is None:
                return data, opened.width, opened.height
            if opened.width * opened.height > max_pixels:
                raise ValueError(f"image is {opened.width}x{opened.height}, over {max_pixels} pixels")
            opened.load()
            icc_profile = opened.info.get("icc_profile")
            image = to_rgb_or_rgba(apply_orientation(opened))
            if image is opened:
                image = opened.copy()
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"undecodable image data: {exc}") from exc
    image.info = {"icc_profile": icc_profile} if icc_profile else {}
    return encode_image(image, fmt, compression), image.width, image.height


def _check_header_pixels(data: bytes, max_pixels: int) -> None:
    """Reject oversized PNG/JPEG/WebP from our own header parse, before Pillow allocates."""
    sniffed = sniff_format(data)
    size = header_size(data, sniffed) if sniffed else None
    if size is not None and size[0] * size[1] > max_pixels:
        raise ValueError(f"image is {size[0]}x{size[1]}, over {max_pixels} pixels")


def _format_of(image: Image.Image) -> str:
    fmt = _FROM_PILLOW.get(image.format or "")
    if fmt is None:
        raise ValueError(f"unsupported image format {image.format!r}")
    return fmt


def _output_format(fmt: str) -> str:
    fmt = fmt.lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unsupported output format {fmt!r}; expected one of {', '.join(OUTPUT_FORMATS)}")
    return fmt
