"""Quoting client-supplied values in error messages, bounded (a 1 MB value never comes back whole)."""

from __future__ import annotations

QUOTE_LIMIT = 100
ELLIPSIS = "\u2026"


def clip(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` itself when it is at most `limit` characters, else its first `limit` and an ellipsis."""
    return text if len(text) <= limit else text[:limit] + ELLIPSIS


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """A value for an error message: repr-quoted, at most `limit` characters of it, saying how long it was.

    >>> quote("1024x")
    "'1024x'"
    >>> quote("x" * 500, limit=3)
    "'xxx\u2026' (500 characters)"
    """
    if isinstance(value, int) and value.bit_length() > 256:  # str() of a huge int is slow, refused past 4300 digits
        return f"<an integer of {value.bit_length()} bits>"
    if not isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else f"{clip(text, limit)} ({len(text)} characters)"
    if len(value) <= limit:
        return repr(value)
    return f"{clip(value, limit)!r} ({len(value)} characters)"
