"""Encoder benchmark: imagegate's fast settings against Pillow's defaults.

Run: ``.venv/bin/python bench/encode.py [--repeat N]``. Prints a markdown table; figures, not
pass/fail. Both encoders run in the same process on the same image, one warm-up each, then the
median of N timed runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable

import PIL
from PIL import Image

from imagegate.imaging.convert import (
    AVIF_SPEED,
    DEFAULT_QUALITY,
    OUTPUT_FORMATS,
    PNG_COMPRESS_LEVEL,
    WEBP_METHOD,
    encode_image,
    encode_with_pillow_defaults,
)
from imagegate.imaging.render import render_generation

SIZES = (1024, 1536)
PILLOW_DEFAULTS_NOTE = (
    "Pillow defaults: png compress_level 6; jpeg quality 75; webp quality 80 method 4; avif quality 75 "
    "speed 6; gif median-cut palette. Ours encode jpeg and webp at quality 90 (the gateway default), "
    "so those rows compare speed at a higher quality, not equal quality; png and gif are lossless "
    "and palette formats where only speed and size differ."
)
IMAGE_DESCRIPTION = (
    "a sandbox picture (render_generation, transparent background) composited over smooth RGB "
    "noise (seeded uniform noise per channel, upscaled 64x bicubic) with 15% grain (2x upscaled): "
    "photo-like, not trivially compressible; RGB"
)


def photo_like(side: int) -> Image.Image:
    """The deterministic test picture described by :data:`IMAGE_DESCRIPTION`."""
    background = Image.merge("RGB", [_smooth_noise(side, channel, max(4, side // 64)) for channel in range(3)])
    grain = _smooth_noise(side, 3, side // 2)
    background = Image.blend(background, Image.merge("RGB", (grain, grain, grain)), 0.15)
    drawing = render_generation(
        prompt="a red fox in fresh snow at dawn, soft golden light, 35mm photograph",
        seed=2024,
        width=side,
        height=side,
        index=0,
        model="bench",
        transparent=True,
    )
    return Image.alpha_composite(background.convert("RGBA"), drawing).convert("RGB")


def _smooth_noise(side: int, seed: int, cells: int) -> Image.Image:
    """Grey noise from a seeded byte stream (``cells`` x ``cells``) upscaled bicubically."""
    rng = random.Random(1000 + seed)
    small = Image.frombytes("L", (cells, cells), rng.randbytes(cells * cells))
    return small.resize((side, side), Image.Resampling.BICUBIC)


def median_ms(fn: Callable[[], bytes], repeat: int) -> tuple[float, int]:
    """Median wall time in ms over ``repeat`` runs after one warm-up, and the output size."""
    data = fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        data = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), len(data)


def machine() -> str:
    return (
        f"machine: {platform.platform()}, {platform.machine()}, cpu_count={os.cpu_count()}, "
        f"python {sys.version.split()[0]}, Pillow {PIL.__version__}"
    )


def settings() -> str:
    return (
        f"ours: png compress_level={PNG_COMPRESS_LEVEL}; jpeg quality={DEFAULT_QUALITY['jpeg']}; "
        f"webp quality={DEFAULT_QUALITY['webp']} method={WEBP_METHOD}; "
        f"avif quality={DEFAULT_QUALITY['avif']} speed={AVIF_SPEED}; gif FASTOCTREE 256 colours"
    )


def run(repeat: int) -> list[str]:
    lines = [
        "| size | format | ours ms | Pillow default ms | ratio (ours/default) | ours KiB | default KiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for side in SIZES:
        image = photo_like(side)
        for fmt in OUTPUT_FORMATS:
            ours_ms, ours_bytes = median_ms(lambda image=image, fmt=fmt: encode_image(image, fmt, None), repeat)
            base_ms, base_bytes = median_ms(
                lambda image=image, fmt=fmt: encode_with_pillow_defaults(image, fmt), repeat
            )
            lines.append(
                f"| {side}x{side} | {fmt} | {ours_ms:.1f} | {base_ms:.1f} | {ours_ms / base_ms:.2f} "
                f"| {ours_bytes / 1024:.0f} | {base_bytes / 1024:.0f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per cell (median reported)")
    args = parser.parse_args()
    print(f"# encode benchmark (median of {args.repeat} after 1 warm-up)\n")
    print(machine())
    print(f"image: {IMAGE_DESCRIPTION}")
    print(settings())
    print()
    print("\n".join(run(max(1, args.repeat))))
    print()
    print(PILLOW_DEFAULTS_NOTE)


if __name__ == "__main__":
    main()
