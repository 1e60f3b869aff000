"""Image bytes held as raw bytes, as validated base64 text, or both; each form derived once, on demand.

A provider that answers in base64 (OpenAI's `b64_json`) hands over the text it received; when the
caller also wants `b64_json` in the same format, that text is spliced into the response as it came,
and the image is never decoded to bytes and re-encoded. Only the header (and the last few bytes,
for the truncation check) are decoded to identify it.
"""

from __future__ import annotations

import binascii

import pybase64

Buffer = bytes | memoryview
_CHUNK = 48 * 1024  # base64 characters validated at a time (a multiple of 4): small, reused allocations
_PAD = ord("=")


class InvalidBase64Error(ValueError):
    """The text is not strict, padded standard base64 (or is empty)."""


class ImageBytes:
    """One image's bytes: `raw` and `b64` are computed from each other on first use, then kept."""

    __slots__ = ("_b64", "_raw")

    def __init__(self, raw: bytes | None = None, b64: Buffer | None = None) -> None:
        if raw is None and b64 is None:
            raise ValueError("ImageBytes needs raw bytes or base64 text")
        self._raw = raw
        self._b64 = b64

    @classmethod
    def from_b64(cls, text: Buffer) -> ImageBytes:
        """Validated base64 (strict alphabet and padding, non-empty); InvalidBase64Error otherwise.

        `text` may be a memoryview into a larger reply (no copy is made). The validation decodes it
        chunk by chunk into small buffers that are dropped at once (pybase64's SIMD decoder is the
        fastest strict check there is); the raw bytes are decoded only if someone asks for them.
        """
        size = len(text)
        if not size or size % 4:
            raise InvalidBase64Error("base64 text is empty or not padded to a multiple of 4")
        view = memoryview(text)
        try:
            for start in range(0, size, _CHUNK):
                chunk = view[start : start + _CHUNK]
                if start + _CHUNK < size and chunk[-1] == _PAD:
                    raise InvalidBase64Error("padding inside base64 text")
                pybase64.b64decode(chunk, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidBase64Error("not valid base64") from None
        return cls(b64=text)

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            assert self._b64 is not None
            self._raw = pybase64.b64decode(self._b64, validate=True)
        return self._raw

    @property
    def b64(self) -> Buffer:
        if self._b64 is None:
            assert self._raw is not None
            self._b64 = pybase64.b64encode(self._raw)
        return self._b64

    @property
    def has_raw(self) -> bool:
        return self._raw is not None

    def __len__(self) -> int:
        """The decoded length, without decoding."""
        if self._raw is not None:
            return len(self._raw)
        assert self._b64 is not None
        return len(self._b64) // 4 * 3 - bytes(self._b64[-2:]).count(b"=")

    def head(self, size: int) -> bytes:
        """The first `size` decoded bytes (fewer when the image is shorter)."""
        if self._raw is not None:
            return self._raw[:size]
        assert self._b64 is not None
        chars = -(-size // 3) * 4
        return pybase64.b64decode(self._b64[:chars], validate=True)[:size]

    def tail(self, size: int) -> bytes:
        """The last `size` decoded bytes (fewer when the image is shorter)."""
        if self._raw is not None:
            return self._raw[-size:] if size else b""
        assert self._b64 is not None
        chars = (-(-size // 3) + 1) * 4
        start = max(0, len(self._b64) - chars)
        return pybase64.b64decode(self._b64[start:], validate=True)[-size:] if size else b""
