"""Animated GIF output: frame timing, encoding, and reading frames back.

OpenAI's ``output_format: "gif"`` takes ``frame_count`` (2-16, default 9) and
``frame_duration_ms`` (default 200). GIF stores delays in hundredths of a second in 16 bits, so
a delay is rounded to the nearest 10 ms and capped at 655,350 ms (:func:`gif_delay_ms`).

The encoder writes every frame whole, with its own FASTOCTREE palette (the fast quantizer
:mod:`imagegate.imaging.convert` uses), through Pillow's GIF writer primitives
(``GifImagePlugin.getheader``/``getdata``) rather than ``save(save_all=True)``: the latter
silently merges identical consecutive frames, and the frame count must be the one asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO

from PIL import GifImagePlugin, Image

from imagegate.core.types import DEFAULT_FRAME_MS, DEFAULT_FRAMES, MAX_FRAME_MS, MAX_FRAMES, MIN_FRAMES
from imagegate.imaging.convert import flatten, to_gif_palette

__all__ = ["DEFAULT_FRAMES", "DEFAULT_FRAME_MS", "MAX_FRAMES", "MAX_FRAME_MS", "MIN_FRAMES", "encode_animated_gif"]
MAX_SCREEN_PIXELS = 40_000_000
MAX_READ_FRAMES = 256

_GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
_KEEP = 1  # disposal: leave the frame in place (every frame covers the whole canvas)
_RESTORE_BACKGROUND = 2  # disposal: clear to transparent before the next frame


def gif_delay_ms(requested: int) -> int:
    """The delay a GIF can store for ``requested`` ms: nearest 10 ms (halves up), 10..655,350."""
    return max(10, min(MAX_FRAME_MS, (requested + 5) // 10 * 10))


def encode_animated_gif(frames: Sequence[Image.Image], frame_ms: int, *, transparent: bool = False) -> bytes:
    """A GIF that loops forever, one image per frame, each shown for ``gif_delay_ms(frame_ms)``.

    Frames must all have the same size; one frame gives a still GIF. With ``transparent``,
    pixels with alpha < 128 become transparent and each frame clears the canvas before the next
    (disposal 2); otherwise alpha is flattened onto white. ValueError on no frames or mixed sizes.
    """
    if not frames:
        raise ValueError("an animated GIF needs at least one frame")
    size = frames[0].size
    for number, frame in enumerate(frames):
        if frame.size != size:
            raise ValueError(f"frame {number} is {frame.width}x{frame.height}, frame 0 is {size[0]}x{size[1]}")
    delay = gif_delay_ms(frame_ms)
    disposal = _RESTORE_BACKGROUND if transparent else _KEEP
    paletted = [_palette_frame(frame, transparent) for frame in frames]
    header, _used = GifImagePlugin.getheader(paletted[0].copy(), info={"loop": 0, "duration": delay})
    buffer = BytesIO()
    for chunk in header:
        buffer.write(chunk)
    for frame in paletted:
        params: dict[str, object] = {"duration": delay, "disposal": disposal, "include_color_table": True}
        if "transparency" in frame.info:
            params["transparency"] = frame.info["transparency"]
        for chunk in GifImagePlugin.getdata(frame, (0, 0), **params):
            buffer.write(chunk)
    buffer.write(b";")
    return buffer.getvalue()


def _palette_frame(frame: Image.Image, transparent: bool) -> Image.Image:
    if transparent:
        rgba = frame if frame.mode == "RGBA" else frame.convert("RGBA")
        return to_gif_palette(rgba)
    flat = flatten(frame if frame.mode in ("RGB", "RGBA") else frame.convert("RGBA"))
    return to_gif_palette(flat)


def gif_frames(
    data: bytes, *, max_pixels: int = MAX_SCREEN_PIXELS, max_frames: int = MAX_READ_FRAMES
) -> tuple[int, list[int]]:
    """(frame count, each frame's delay in ms) of a GIF, read back with Pillow.

    Reading a frame's delay means seeking to it, and Pillow decodes the previous frame on
    every seek, so the work is bounded first: ValueError when the logical screen (read from the
    header bytes) is over ``max_pixels``, when a frame grows Pillow's canvas past it, when there
    are more than ``max_frames`` frames, or when the data is not a readable GIF.
    """
    if data[:6] not in _GIF_SIGNATURES or len(data) < 13:
        raise ValueError("not a GIF file")
    width, height = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if width * height > max_pixels:
        raise ValueError(f"the GIF screen is {width}x{height}, over {max_pixels} pixels")
    durations: list[int] = []
    try:
        with Image.open(BytesIO(data), formats=["GIF"]) as image:
            while True:
                if image.width * image.height > max_pixels:
                    raise ValueError(f"a GIF frame grows the canvas to {image.width}x{image.height}")
                durations.append(int(image.info.get("duration", 0)))
                if len(durations) > max_frames:
                    raise ValueError(f"the GIF has more than {max_frames} frames")
                try:
                    image.seek(image.tell() + 1)
                except EOFError:
                    break
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"unreadable GIF: {exc}") from exc
    return len(durations), durations
