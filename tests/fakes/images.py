"""Real (decodable) images for the fake upstream servers.

`make_image` draws a gradient plus a few seeded shapes at exactly the requested size and encodes
it as png/jpeg/webp; results are cached on the arguments so a benchmark that asks for the same
image a thousand times encodes it once. `make_gif` (animated, looping) and `make_svg` serve the
GPT Image 2.6 output formats.
"""

from __future__ import annotations

import base64
import io
import random
from functools import lru_cache
from xml.sax.saxutils import escape

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


def gif_delay_ms(duration_ms: int) -> int:
    """The per-frame delay a GIF actually carries: nearest 10 ms (GIF counts centiseconds), capped at 655350."""
    return min(655350, round(duration_ms / 10) * 10)


@lru_cache(maxsize=64)
def make_gif(width: int, height: int, frames: int, duration_ms: int, *, seed: int = 0) -> bytes:
    """A looping animated GIF of exactly `frames` visibly different frames, each shown `gif_delay_ms(duration_ms)`.

    Every frame is the seeded gradient with a block that moves across it and changes colour, so no two
    frames are equal and no encoder can merge them.
    """
    if frames < 1 or width < 1 or height < 1:
        raise ValueError("frames, width and height must be positive")
    base = _gradient(width, height, seed)
    block_w, block_h = max(1, width // 4), max(1, height // 4)
    rng = random.Random(seed * 104729 + 3)
    pictures: list[Image.Image] = []
    for index in range(frames):
        frame = base.copy()
        x0 = (width - block_w) * index // max(1, frames - 1)
        colour = ((index * 53 + rng.randrange(8)) % 256, 255 - index * 15, (index * 97) % 256)
        ImageDraw.Draw(frame).rectangle((x0, 0, x0 + block_w - 1, block_h - 1), fill=colour)
        pictures.append(frame.quantize(colors=64, method=Image.Quantize.FASTOCTREE))
    out = io.BytesIO()
    pictures[0].save(
        out, "GIF", save_all=True, append_images=pictures[1:], duration=gif_delay_ms(duration_ms), loop=0, disposal=1
    )
    return out.getvalue()


def make_svg(width: int, height: int, title: str = "", *, seed: int = 0) -> bytes:
    """A small well-formed SVG document: `width`/`height` attributes, a matching viewBox, a few seeded shapes."""
    rng = random.Random(seed * 7919 + 5)

    def colour() -> str:
        return f"#{rng.randrange(1 << 24):06x}"

    shapes = [f'<rect width="{width}" height="{height}" fill="{colour()}"/>']
    for _ in range(3):
        cx, cy = rng.randrange(max(1, width)), rng.randrange(max(1, height))
        radius = max(1, min(width, height) // rng.randrange(3, 8))
        shapes.append(f'<circle cx="{cx}" cy="{cy}" r="{radius}" fill="{colour()}"/>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f"<title>{escape(title[:120])}</title>{''.join(shapes)}</svg>"
    ).encode()
