"""Upstream images for the request-path benchmark, generated once (seeded) and cached in bench/.cache/.

`large`: a 1024x1024 RGB noise PNG of about 2.6 MB, the size of a real gpt-image-1 1024x1024 PNG
(real output is photo-like and barely compresses; this noise is 6-7 bits per channel so it lands in
2.5-2.7 MB). `small`: a 1024x1024 flat PNG with a 40x40 noise patch, about 10 KB. Both are plain
random bytes from `random.Random(seed)` (no numpy), so every machine builds the same files.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image

CACHE = Path(__file__).resolve().parent / ".cache"
SIDE = 1024
_SEED = 8
_SIX_BITS = bytes(b & 0xFC for b in range(256))
_SEVEN_BITS = bytes(b & 0xFE for b in range(256))
PAYLOADS = ("large", "small")


def _large() -> bytes:
    row = SIDE * 3
    noise = random.Random(_SEED).randbytes(row * SIDE)
    rows = (noise[i * row : (i + 1) * row].translate(_SEVEN_BITS if i % 4 == 0 else _SIX_BITS) for i in range(SIDE))
    out = io.BytesIO()
    Image.frombytes("RGB", (SIDE, SIDE), b"".join(rows)).save(out, "PNG", compress_level=9)
    return out.getvalue()


def _small() -> bytes:
    patch = 40
    image = Image.new("RGB", (SIDE, SIDE), (40, 90, 160))
    noise = random.Random(_SEED).randbytes(patch * patch * 3)
    image.paste(Image.frombytes("RGB", (patch, patch), noise), (100, 100))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=9)
    return out.getvalue()


def payload_file(name: str) -> Path:
    """The cached PNG for `name` ("large" or "small"), built on first use."""
    builders = {"large": _large, "small": _small}
    if name not in builders:
        raise ValueError(f"unknown payload {name!r}; choose from {', '.join(PAYLOADS)}")
    path = CACHE / f"{name}-{SIDE}-seed{_SEED}.png"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_bytes(builders[name]())
        partial.replace(path)
    return path
