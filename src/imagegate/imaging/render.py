"""The deterministic picture drawer behind the offline ``sandbox`` provider.

Every picture is a pure function of its arguments: a ``random.Random`` seeded from a SHA-256
of (prompt, seed, width, height, index, model) chooses every colour and shape, so the same
request gives the same pixels (and, through a deterministic encoder, the same bytes). Pictures
carry a large "SANDBOX" mark, the prompt and a footer (model, size, seed, #index) so nobody can
mistake them for a real model's output.

Everything is drawn with Pillow primitives in C (small gradient upscaled, ImageDraw shapes,
FreeType text, alpha compositing); there is no per-pixel Python. The text uses Pillow's
built-in scalable font (``ImageFont.load_default(size=...)``), so no font file is needed.
"""

from __future__ import annotations

import colorsys
import hashlib
import random
import threading
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
RGBA = tuple[int, int, int, int]

_WHITE: RGBA = (255, 255, 255, 255)
_BLACK: RGBA = (0, 0, 0, 255)
_MAX_PROMPT_LINES = 8
_fonts = threading.local()  # a FreeType face must not be used by two threads at once


def render_generation(
    *, prompt: str, seed: int, width: int, height: int, index: int, model: str, transparent: bool
) -> Image.Image:
    """A sandbox text-to-image picture: RGB, or RGBA with a fully transparent background."""
    rng = _rng("generation", prompt, seed, width, height, index, model)
    size = (width, height)
    background = Image.new("RGBA", size, (0, 0, 0, 0)) if transparent else _gradient(rng, size).convert("RGBA")
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    _draw_shapes(draw, rng, size)
    band_bottom = _draw_mark(draw, "SANDBOX", size, top=int(height * 0.22))
    footer_top = _draw_footer(draw, _footer(model, width, height, seed, index), size)
    _draw_prompt(draw, prompt, size, top=band_bottom, bottom=footer_top)
    picture = Image.alpha_composite(background, overlay)
    return picture if transparent else picture.convert("RGB")


def render_edit(
    *,
    prompt: str,
    seed: int,
    width: int,
    height: int,
    index: int,
    model: str,
    base: Image.Image,
    mask: Image.Image | None,
    others: Sequence[Image.Image],
) -> Image.Image:
    """A sandbox edit: ``base`` fitted (cover + centre crop) to the size, edited where the
    fitted mask's alpha is 0 (the whole image without a mask), and exactly ``base`` elsewhere.

    The edited layer is the fitted base with a seeded tint, a "SANDBOX EDIT" mark, the prompt
    and labelled thumbnails of ``others`` (inputs 2, 3, ...). RGBA out if ``base`` has alpha.
    """
    rng = _rng("edit", prompt, seed, width, height, index, model)
    size = (width, height)
    mode = "RGBA" if _has_alpha(base) else "RGB"
    fitted = ImageOps.fit(base if base.mode == mode else base.convert(mode), size, Image.Resampling.BICUBIC)
    tint = (*_colour(rng, 0.8, 0.9), 255)
    edited = Image.blend(fitted, Image.new(mode, size, tint[: len(mode)]), 0.35).convert("RGBA")
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    band_bottom = _draw_mark(draw, "SANDBOX EDIT", size, top=int(height * 0.08))
    footer_top = _draw_footer(draw, _footer(model, width, height, seed, index), size)
    thumbs_top = _draw_thumbnails(overlay, others, size, bottom=footer_top)
    _draw_prompt(draw, prompt, size, top=band_bottom, bottom=thumbs_top)
    result = Image.alpha_composite(edited, overlay).convert(mode)
    if mask is not None:
        result.paste(fitted, (0, 0), _keep_mask(mask, size))
    return result


def render_frames(
    *,
    prompt: str,
    seed: int,
    width: int,
    height: int,
    index: int,
    model: str,
    count: int,
    transparent: bool = False,
) -> list[Image.Image]:
    """``count`` frames of an animated sandbox picture: the :func:`render_generation` picture
    with a seeded marker that travels left to right, a progress bar and "frame i/count".

    The picture is drawn once and each frame only adds its overlay, so frames differ from each
    other and from nothing else. ValueError when ``count`` is below 1.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    picture = render_generation(
        prompt=prompt, seed=seed, width=width, height=height, index=index, model=model, transparent=transparent
    )
    rng = _rng("frames", prompt, seed, width, height, index, model)
    colour = (*_colour(rng, 0.9, 1.0), 255)
    base = picture.convert("RGBA")
    size = (width, height)
    short = min(width, height)
    radius = max(2, short // 16)
    margin = max(3, short // 40)
    track_y = int(height * 0.14)
    label_size = max(8, short // 30)
    frames = []
    for number in range(count):
        share = number / (count - 1) if count > 1 else 0.0
        overlay = Image.new("RGBA", size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        x = margin + radius + share * max(0, width - 2 * (margin + radius))
        draw.ellipse((x - radius, track_y - radius, x + radius, track_y + radius), fill=colour, outline=_BLACK)
        bar_height = max(2, short // 100)
        draw.rectangle((0, 0, width * (number + 1) / count, bar_height), fill=colour)
        draw.text(
            (width - margin, margin + bar_height),
            f"frame {number + 1}/{count}",
            font=_font(label_size),
            fill=_WHITE,
            anchor="ra",
            stroke_width=max(1, label_size // 12),
            stroke_fill=_BLACK,
        )
        frame = Image.alpha_composite(base, overlay)
        frames.append(frame if transparent else frame.convert("RGB"))
    return frames


def apply_markup(base: Image.Image, markup: Image.Image) -> Image.Image:
    """``markup`` (a transparent drawing, same size) composited over ``base``.

    OpenAI's edit ``markup`` guides the edit with strokes drawn over the first input image.
    The result is RGBA when ``base`` has alpha and RGB otherwise. ValueError on a size mismatch.
    """
    if markup.size != base.size:
        raise ValueError(
            f"markup is {markup.width}x{markup.height} but the image is {base.width}x{base.height}; "
            "they must be the same size"
        )
    mode = "RGBA" if _has_alpha(base) else "RGB"
    layer = markup if markup.mode == "RGBA" else markup.convert("RGBA")
    combined = Image.alpha_composite(base.convert("RGBA"), layer)
    return combined if mode == "RGBA" else combined.convert("RGB")


# --- pieces ----------------------------------------------------------------------------------


def _rng(kind: str, prompt: str, seed: int, width: int, height: int, index: int, model: str) -> random.Random:
    key = repr((kind, prompt, seed, width, height, index, model)).encode("utf-8", "surrogatepass")
    return random.Random(int.from_bytes(hashlib.sha256(key).digest(), "big"))


def _colour(rng: random.Random, saturation: float, value: float) -> tuple[int, int, int]:
    red, green, blue = colorsys.hsv_to_rgb(rng.random(), saturation, value)
    return round(red * 255), round(green * 255), round(blue * 255)


def _gradient(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A smooth multi-colour background: a 4x4 grid of seeded colours upscaled bicubically."""
    grid = Image.new("RGB", (4, 4))
    grid.putdata([_colour(rng, rng.uniform(0.45, 0.9), rng.uniform(0.55, 1.0)) for _ in range(16)])
    return grid.resize(size, Image.Resampling.BICUBIC, box=(0.5, 0.5, 3.5, 3.5))


def _draw_shapes(draw: ImageDraw.ImageDraw, rng: random.Random, size: tuple[int, int]) -> None:
    """Seeded ellipses, rectangles and triangles, kept off the 4% border (corners stay clear)."""
    width, height = size
    left, top, right, bottom = width * 0.04, height * 0.04, width * 0.96, height * 0.96
    for _ in range(rng.randint(6, 10)):
        fill = (*_colour(rng, 0.75, 0.95), rng.randint(150, 230))
        w = rng.uniform(0.08, 0.4) * width
        h = rng.uniform(0.08, 0.4) * height
        x = rng.uniform(left, right - w)
        y = rng.uniform(top, bottom - h)
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse((x, y, x + w, y + h), fill=fill)
        elif kind == 1:
            draw.rounded_rectangle((x, y, x + w, y + h), radius=min(w, h) * 0.15, fill=fill)
        else:
            draw.polygon([(x + w / 2, y), (x + w, y + h), (x, y + h)], fill=fill)


def _draw_mark(draw: ImageDraw.ImageDraw, text: str, size: tuple[int, int], top: int) -> int:
    """A dark full-width band with ``text`` large and centred; returns the band's bottom edge."""
    width, height = size
    font_size = max(10, int(min(width, height) * 0.14))
    length = _font(font_size).getlength(text)
    if length > width * 0.86:
        font_size = max(8, int(font_size * width * 0.86 / length))
    band_height = int(font_size * 1.5)
    draw.rectangle((0, top, width, top + band_height), fill=(0, 0, 0, 150))
    draw.text((width / 2, top + band_height / 2), text, font=_font(font_size), fill=_WHITE, anchor="mm")
    return top + band_height


def _draw_prompt(draw: ImageDraw.ImageDraw, prompt: str, size: tuple[int, int], top: int, bottom: int) -> None:
    """The prompt, word-wrapped to the width, between ``top`` and ``bottom`` (truncated with …)."""
    width, height = size
    font_size = max(10, min(width, height) // 26)
    font = _font(font_size)
    margin = max(4, width // 20)
    line_height = int(font_size * 1.25)
    gap = max(2, font_size // 2)
    max_lines = min(_MAX_PROMPT_LINES, (bottom - top - gap) // line_height)
    lines = _wrap(prompt, font, width - 2 * margin, max_lines)
    stroke = max(1, font_size // 12)
    for number, line in enumerate(lines):
        y = top + gap + number * line_height
        draw.text((margin, y), line, font=font, fill=_WHITE, stroke_width=stroke, stroke_fill=_BLACK)


def _footer(model: str, width: int, height: int, seed: int, index: int) -> str:
    return f"{model} · {width}x{height} · seed {seed} · #{index}"


def _draw_footer(draw: ImageDraw.ImageDraw, text: str, size: tuple[int, int]) -> int:
    """Small text at the bottom left, inside the margin; returns its top edge."""
    width, height = size
    font_size = max(8, min(width, height) // 40)
    margin = max(3, min(width, height) // 40)
    y = height - margin - font_size
    draw.text(
        (margin, y),
        text,
        font=_font(font_size),
        fill=_WHITE,
        stroke_width=max(1, font_size // 10),
        stroke_fill=_BLACK,
    )
    return y - font_size // 2


def _draw_thumbnails(overlay: Image.Image, others: Sequence[Image.Image], size: tuple[int, int], bottom: int) -> int:
    """Labelled thumbnails of the other inputs in one row above ``bottom``; returns the row top."""
    if not others:
        return bottom
    width, height = size
    margin = max(4, width // 40)
    label_size = max(8, min(width, height) // 45)
    thumb = max(16, min(min(width, height) // 6, (width - margin) // len(others) - margin))
    top = bottom - thumb - label_size - 2 * margin
    draw = ImageDraw.Draw(overlay)
    for number, other in enumerate(others):
        x = margin + number * (thumb + margin)
        if x + thumb > width:
            break
        small = ImageOps.contain(other.convert("RGBA"), (thumb, thumb), Image.Resampling.BILINEAR)
        sx, sy = x + (thumb - small.width) // 2, top + (thumb - small.height) // 2
        draw.rectangle((sx - 2, sy - 2, sx + small.width + 1, sy + small.height + 1), fill=_WHITE)
        overlay.paste(small, (sx, sy))
        draw.text(
            (x, top + thumb + 3),
            f"input {number + 2}",
            font=_font(label_size),
            fill=_WHITE,
            stroke_width=1,
            stroke_fill=_BLACK,
        )
    return top - 2


def _wrap(text: str, font: Font, max_width: float, max_lines: int) -> list[str]:
    """Greedy word wrap; over-long words are split; stops (with …) at ``max_lines``."""
    if max_lines <= 0:
        return []
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while len(lines) < max_lines and len(current) > 1 and font.getlength(current) > max_width:
            cut = _fitting_prefix(current, font, max_width)
            lines.append(current[:cut])
            current = current[cut:]
        if len(lines) >= max_lines:
            return _ellipsize(lines[:max_lines], font, max_width)
    if current:
        lines.append(current)
    return lines if len(lines) <= max_lines else _ellipsize(lines[:max_lines], font, max_width)


def _fitting_prefix(word: str, font: Font, max_width: float) -> int:
    """The longest prefix length (at least 1) of ``word`` that fits in ``max_width``."""
    low, high = 1, min(len(word), 1024)
    while low < high:
        middle = (low + high + 1) // 2
        if font.getlength(word[:middle]) <= max_width:
            low = middle
        else:
            high = middle - 1
    return low


def _ellipsize(lines: list[str], font: Font, max_width: float) -> list[str]:
    last = lines[-1]
    while last and font.getlength(last + " …") > max_width:
        last = last[:-1]
    lines[-1] = last + " …"
    return lines


def _keep_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Mode "1": set where the fitted mask's alpha is non-zero (those pixels keep the base)."""
    alpha = mask.getchannel("A") if "A" in mask.getbands() else mask.convert("RGBA").getchannel("A")
    fitted = ImageOps.fit(alpha, size, Image.Resampling.BILINEAR)
    return fitted.point(lambda value: 255 if value else 0, "1")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _font(size: int) -> Font:
    """Pillow's built-in scalable font at ``size`` px, cached per thread."""
    cache: dict[int, Font] | None = getattr(_fonts, "cache", None)
    if cache is None:
        cache = _fonts.cache = {}
    font = cache.get(size)
    if font is None:
        font = cache[size] = ImageFont.load_default(size=size)
    return font
