"""Real (decodable) images for the fake upstream servers.

`make_image` draws a gradient plus a few seeded shapes at exactly the requested size and encodes
it as png/jpeg/webp; results are cached on the arguments so a benchmark that asks for the same
image a thousand times encodes it once.
"""

from __future__ import annotations

import base64
import io
import random
from functools import lru_cache

from PIL import Image, ImageDraw

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}


def _gradient(width: int, height: int, seed: int) -> Image.Image:
    """A two-axis colour gradient, built from two small linear ramps (fast at any size)."""
    rng = random.Random(seed)
    tint = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    horizontal = Image.linear_gradient("L").rotate(90).resize((width, height))
    vertical = Image.linear_gradient("L").resize((width, height))
    blue = Image.new("L", (width, height), tint[2])
    red = horizontal.point(lambda v: (v + tint[0]) % 256)
    green = vertical.point(lambda v: (v + tint[1]) % 256)
    return Image.merge("RGB", (red, green, blue))


def _shapes(image: Image.Image, seed: int) -> None:
    rng = random.Random(seed * 7919 + 1)
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for _ in range(4):
        x0, y0 = rng.randrange(max(1, width)), rng.randrange(max(1, height))
        x1 = min(width - 1, x0 + rng.randrange(1, max(2, width // 3)))
        y1 = min(height - 1, y0 + rng.randrange(1, max(2, height // 3)))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256), 255)
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, max(x0, x1), max(y0, y1)), fill=colour)
        else:
            draw.ellipse((x0, y0, max(x0, x1), max(y0, y1)), fill=colour)


@lru_cache(maxsize=256)
def make_image(width: int, height: int, fmt: str = "png", *, seed: int = 0, transparent: bool = False) -> bytes:
    """Encoded image bytes of exactly `width` x `height` in `fmt` (png, jpeg or webp)."""
    fmt = fmt.lower()
    if fmt not in _PIL_FORMATS:
        raise ValueError(f"unsupported format {fmt!r}")
    if width < 1 or height < 1:
        raise ValueError("width and height must be positive")
    image = _gradient(width, height, seed).convert("RGBA")
    if transparent and fmt not in ("jpeg", "jpg"):
        alpha = Image.linear_gradient("L").resize((width, height))
        image.putalpha(alpha)
    _shapes(image, seed)
    if fmt in ("jpeg", "jpg") or not transparent:
        image = image.convert("RGB")
    out = io.BytesIO()
    options: dict[str, int | bool] = {}
    if fmt in ("jpeg", "jpg", "webp"):
        options["quality"] = 80
    if fmt == "png":
        options["compress_level"] = 1
    image.save(out, _PIL_FORMATS[fmt], **options)
    return out.getvalue()


def data_uri(data: bytes, fmt: str) -> str:
    """`data:image/<fmt>;base64,...` for `data`."""
    mime = _MIME.get(fmt.lower(), f"image/{fmt.lower()}")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
