"""HMAC-signed, expiring links to stored files."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import urlencode


class LinkError(Exception):
    """The link is tampered with (`expired` False) or past its expiry (`expired` True)."""

    def __init__(self, message: str, *, expired: bool) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class LinkSigner:
    key: bytes
    ttl_seconds: int

    def _mac(self, file_id: str, expires: int) -> str:
        message = f"{file_id}\n{expires}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def query(self, file_id: str, now: float | None = None) -> tuple[str, int]:
        expires = int((time.time() if now is None else now) + self.ttl_seconds)
        return urlencode({"expires": expires, "signature": self._mac(file_id, expires)}), expires

    def verify(self, file_id: str, expires: str | None, signature: str | None, now: float | None = None) -> int:
        """Return the expiry time, or raise LinkError."""
        if not expires or not signature or not _is_decimal(expires) or not _is_hex64(signature):
            raise LinkError("the link is missing or has a malformed signature", expired=False)
        expected = self._mac(file_id, int(expires))
        if not hmac.compare_digest(expected, signature):
            raise LinkError("the link signature does not match", expired=False)
        if int(expires) < (time.time() if now is None else now):
            raise LinkError("the link has expired", expired=True)
        return int(expires)


def _is_decimal(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 12


def _is_hex64(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
