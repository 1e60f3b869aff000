"""Identify provider output from its first and last bytes: format, width, height, and completeness.

Cheaper than opening the image with Pillow, and it needs only the header: a base64 image is
identified without decoding it. Covers the five output formats (PNG, JPEG, WebP, GIF, AVIF);
anything it cannot read returns None and the caller falls back to Pillow.

The tail check catches images cut short (a body truncated on a base64 quantum boundary still
decodes): PNG must end with its IEND chunk, GIF with the trailer byte, JPEG with the EOI marker,
and a WebP's RIFF size must match its length. AVIF has no fixed trailer and is not tail-checked.
"""

from __future__ import annotations

from imagegate.imaging.probe import header_size, sniff_format

HEAD_BYTES = 64 * 1024  # JPEG frame headers can sit behind large EXIF/ICC segments
TAIL_BYTES = 16
MIN_BYTES = 26  # the shortest header any of the five formats can be identified from

_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_EOI = b"\xff\xd9"
_GIF_TRAILER = b";"
_IDENTIFIED = frozenset({"png", "jpeg", "webp", "gif", "avif"})


class TruncatedImageError(ValueError):
    """The header reads, but the image is cut short."""


def identify_header(head: bytes, size: int, tail: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from the first bytes, after the tail check; None when unreadable.

    `head` is the start of the image (up to HEAD_BYTES), `size` its whole length, `tail` its last
    bytes (up to TAIL_BYTES). Raises TruncatedImageError when the header reads but the tail does not
    end the image.
    """
    if size < MIN_BYTES or len(head) < MIN_BYTES:
        return None
    fmt = sniff_format(head)
    if fmt not in _IDENTIFIED:
        return None
    dims = _dims(head, fmt)
    if dims is None or dims[0] <= 0 or dims[1] <= 0:
        return None
    if not _complete(fmt, head, size, tail):
        raise TruncatedImageError(f"the {fmt} image is truncated ({size} bytes)")
    assert fmt is not None
    return fmt, dims[0], dims[1]


def _dims(head: bytes, fmt: str | None) -> tuple[int, int] | None:
    if fmt == "gif":
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if fmt == "avif":
        return _avif_size(head)
    if fmt is None:
        return None
    return header_size(head, fmt)


def _complete(fmt: str | None, head: bytes, size: int, tail: bytes) -> bool:
    if fmt == "png":
        return tail.endswith(_PNG_IEND)
    if fmt == "jpeg":
        return tail.endswith(_JPEG_EOI)
    if fmt == "gif":
        return tail.endswith(_GIF_TRAILER)
    if fmt == "webp":
        declared = int.from_bytes(head[4:8], "little") + 8
        return declared == size or declared + 1 == size  # odd-sized chunks may carry one pad byte
    return True


def _avif_size(head: bytes) -> tuple[int, int] | None:
    """The primary item's `ispe` (image spatial extents) property: version/flags, width, height."""
    at = head.find(b"ispe")
    if at < 4 or at + 16 > len(head):
        return None
    box = int.from_bytes(head[at - 4 : at], "big")
    if box != 20:
        return None
    return int.from_bytes(head[at + 8 : at + 12], "big"), int.from_bytes(head[at + 12 : at + 16], "big")
