"""Test helpers: build image bytes in memory."""

from __future__ import annotations

import io

from PIL import Image


def png_bytes(width: int = 64, height: int = 64, color: tuple[int, ...] = (200, 30, 30), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def mask_bytes(width: int, height: int, transparent_box: tuple[int, int, int, int]) -> bytes:
    """An RGBA PNG mask: opaque everywhere except `transparent_box` (the area to edit)."""
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), transparent_box)
    return encoded(mask, "PNG")


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
