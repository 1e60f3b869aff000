"""Image storage on local disk, addressed by random ids (client file names are never used)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "avif": "image/avif",
}
_ID = re.compile(r"^img_[A-Za-z0-9_-]{22}$")


@dataclass(frozen=True)
class StoredFile:
    id: str
    path: Path
    format: str

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


class LocalBlobStore:
    """Files under ``<data_dir>/files/<id>.<ext>``; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def valid_id(file_id: str) -> bool:
        return bool(_ID.match(file_id))

    async def put(self, data: bytes, fmt: str) -> StoredFile:
        if fmt not in CONTENT_TYPES:
            raise ValueError(f"unknown format {fmt}")
        file_id = "img_" + secrets.token_urlsafe(16)
        path = self.root / f"{file_id}.{fmt}"
        await asyncio.to_thread(_write_atomic, path, data)
        return StoredFile(file_id, path, fmt)

    def find(self, file_id: str) -> StoredFile | None:
        if not self.valid_id(file_id):
            return None
        for fmt in CONTENT_TYPES:
            path = self.root / f"{file_id}.{fmt}"
            if path.is_file():
                return StoredFile(file_id, path, fmt)
        return None

    async def delete(self, file_id: str) -> None:
        found = self.find(file_id)
        if found is not None:
            await asyncio.to_thread(found.path.unlink, missing_ok=True)

    def purge_older_than(self, seconds: float) -> int:
        """Delete files whose links have all expired; returns how many were removed."""
        cutoff = time.time() - seconds
        removed = 0
        for path in self.root.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def count(self) -> int:
        return sum(1 for path in self.root.iterdir() if not path.name.startswith("."))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
