"""Result image storage, addressed by random ids (client file names are never used).

`BlobStore` is what the gateway needs from a backend; `open_store` picks one from `[storage] url`:
``file://<dir>`` is `LocalBlobStore` (this module), ``s3://bucket/prefix`` is `ObjectBlobStore`
(storage/objects.py, imported only then, so a file-only install needs no object-store client).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imagegate.config import StorageSettings

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "avif": "image/avif",
    "svg": "image/svg+xml",
}
_ID = re.compile(r"^img_[A-Za-z0-9_-]{22}$")
_EXTS = "|".join(CONTENT_TYPES)
_FILE_NAME = re.compile(rf"^img_[A-Za-z0-9_-]{{22}}\.({_EXTS})$")
# `_write_atomic` writes `.<name>.tmp` and renames it; such a file is never purged while it may
# still be being written, only once it is older than this (an orphan of a crash).
_TEMP_NAME = re.compile(rf"^\.img_[A-Za-z0-9_-]{{22}}\.({_EXTS})\.tmp$")
TEMP_GRACE_SECONDS = 600.0
_READ_CHUNK = 256 * 1024


class StorageError(OSError):
    """The storage backend is unreachable, refused or misconfigured; the message says which store and why."""


@dataclass(frozen=True)
class StoredFile:
    """A stored image. `path` is its local file (None in an object store); `size` when known."""

    id: str
    path: Path | None
    format: str
    size: int | None = None

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


@dataclass(frozen=True)
class OpenedFile:
    """A stored image being read: `chunks` streams its bytes (nothing is read until iterated)."""

    file: StoredFile
    chunks: AsyncIterator[bytes]


class BlobStore(Protocol):
    """What the gateway needs from a result-image backend.

    `max_bytes`, `bytes_estimate`, `bytes_written` and `on_over_cap` are the retention task's
    hooks (see `LocalBlobStore`). `presigns`: file links should redirect to `presign` URLs.
    Failures of the backend itself raise `StorageError`; a missing file is None, never an error.
    """

    description: str
    presigns: bool
    max_bytes: int | None
    bytes_estimate: int
    bytes_written: int
    on_over_cap: Callable[[], None] | None

    def valid_id(self, file_id: str) -> bool: ...

    async def check(self) -> None:
        """Raise `StorageError` if the store cannot be used (checked once at start-up)."""
        ...

    async def put(self, data: bytes, fmt: str) -> StoredFile: ...

    async def lookup(self, file_id: str) -> StoredFile | None: ...

    async def open(self, file_id: str) -> OpenedFile | None: ...

    async def read(self, file_id: str) -> bytes | None: ...

    async def presign(self, file: StoredFile, expires_in: int) -> str | None:
        """A URL that fetches the file directly from the backend for `expires_in` seconds, or None."""
        ...

    async def delete(self, file_id: str) -> None: ...

    def purge(self, ttl_seconds: float, max_bytes: int | None = None, now: float | None = None) -> PurgeReport:
        """Blocking: run it in a thread."""
        ...


def new_file_id() -> str:
    return "img_" + secrets.token_urlsafe(16)


def valid_file_id(file_id: str) -> bool:
    return bool(_ID.match(file_id))


def open_store(storage: StorageSettings, data_dir: Path, max_bytes: int | None = None) -> BlobStore:
    """The backend `[storage] url` names; raises `StorageError` for a URL or option it cannot use.

    Builds the client only (no I/O beyond creating a local directory): call `check()` at start-up.
    """
    url = storage.url
    if url is None or url.startswith("file://"):
        if storage.presign:
            raise StorageError("[storage] presign needs an object store (s3://...), not local files")
        root = data_dir / "files" if url is None else Path(url.removeprefix("file://"))
        if url is not None and not str(root):
            raise StorageError(f"[storage] url {url!r} names no directory")
        return LocalBlobStore(root, max_bytes)
    if url.startswith(("s3://", "az://")):
        try:
            from imagegate.storage.objects import open_bucket
        except ImportError as exc:
            raise StorageError(f"[storage] url {url!r} needs the obstore package: {exc}") from exc
        return open_bucket(storage, max_bytes)
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise StorageError(
        f"[storage] url {url!r}: unsupported scheme {scheme!r} (use file://, s3:// or az://; "
        "Google Cloud Storage through s3:// and its S3 interoperability endpoint)"
    )


@dataclass(frozen=True)
class PurgeReport:
    """What one purge deleted, by reason, and what is left (files and bytes, temp files included)."""

    expired: int = 0
    disk_cap: int = 0
    stale_temp: int = 0
    files_stored: int = 0
    bytes_stored: int = 0

    def purged(self) -> dict[str, int]:
        return {"expired": self.expired, "disk_cap": self.disk_cap, "stale_temp": self.stale_temp}


@dataclass(frozen=True)
class _Entry:
    path: Path
    mtime: float
    size: int


class LocalBlobStore:
    """Files under ``<data_dir>/files/<id>.<ext>``; writes are atomic (temp file + rename).

    With `max_bytes`, `put` calls `on_over_cap` (set by the retention task) once the running
    size estimate goes over the cap, so a purge need not wait for its next interval.
    """

    presigns = False

    def __init__(self, root: Path, max_bytes: int | None = None) -> None:
        self.root = root
        self.description = f"file://{root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.description}: cannot create the directory: {exc}") from exc
        self.max_bytes = max_bytes
        self.bytes_estimate = 0  # stored bytes as of the last purge plus what was written since
        self.bytes_written = 0  # total written by this process (monotonic)
        self.on_over_cap: Callable[[], None] | None = None

    @staticmethod
    def valid_id(file_id: str) -> bool:
        return valid_file_id(file_id)

    async def check(self) -> None:
        if not await asyncio.to_thread(os.access, self.root, os.W_OK | os.X_OK):
            raise StorageError(f"{self.description}: the directory is not writable")

    async def put(self, data: bytes, fmt: str) -> StoredFile:
        if fmt not in CONTENT_TYPES:
            raise ValueError(f"unknown format {fmt}")
        file_id = new_file_id()
        path = self.root / f"{file_id}.{fmt}"
        await asyncio.to_thread(_write_atomic, path, data)
        self.bytes_written += len(data)
        self.bytes_estimate += len(data)
        if self.max_bytes is not None and self.bytes_estimate > self.max_bytes and self.on_over_cap is not None:
            self.on_over_cap()
        return StoredFile(file_id, path, fmt, len(data))

    def find(self, file_id: str) -> StoredFile | None:
        if not self.valid_id(file_id):
            return None
        for fmt in CONTENT_TYPES:
            path = self.root / f"{file_id}.{fmt}"
            if path.is_file():
                return StoredFile(file_id, path, fmt)
        return None

    async def lookup(self, file_id: str) -> StoredFile | None:
        return await asyncio.to_thread(self.find, file_id)

    async def open(self, file_id: str) -> OpenedFile | None:
        found = await self.lookup(file_id)
        if found is None or found.path is None:
            return None
        return OpenedFile(found, _read_chunks(found.path))

    async def read(self, file_id: str) -> bytes | None:
        found = await self.lookup(file_id)
        if found is None or found.path is None:
            return None
        try:
            return await asyncio.to_thread(found.path.read_bytes)
        except FileNotFoundError:
            return None  # purged since the lookup

    async def presign(self, file: StoredFile, expires_in: int) -> str | None:
        return None  # local files are only ever served by the gateway

    async def delete(self, file_id: str) -> None:
        found = self.find(file_id)
        if found is not None and found.path is not None:
            await asyncio.to_thread(found.path.unlink, missing_ok=True)

    def purge(self, ttl_seconds: float, max_bytes: int | None = None, now: float | None = None) -> PurgeReport:
        """Delete files whose links have all expired, then, while over `max_bytes`, the oldest ones.

        Blocking (directory scan and unlinks): run it in a thread. Temp files of writes in progress
        are counted but never deleted unless older than max(ttl, TEMP_GRACE_SECONDS).
        """
        now = time.time() if now is None else now
        expired = stale = 0
        kept: list[_Entry] = []
        temp_bytes = temp_files = 0
        for entry in self._scan():
            if _TEMP_NAME.match(entry.path.name):
                if entry.mtime < now - max(ttl_seconds, TEMP_GRACE_SECONDS) and _unlink(entry.path):
                    stale += 1
                else:
                    temp_bytes += entry.size
                    temp_files += 1
            elif entry.mtime < now - ttl_seconds:
                expired += _unlink(entry.path)
            else:
                kept.append(entry)
        total = temp_bytes + sum(entry.size for entry in kept)
        capped = 0
        if max_bytes is not None and total > max_bytes:
            kept.sort(key=lambda entry: entry.mtime)
            while kept and total > max_bytes:
                oldest = kept.pop(0)
                total -= oldest.size
                capped += _unlink(oldest.path)
        return PurgeReport(expired, capped, stale, len(kept) + temp_files, total)

    def purge_older_than(self, seconds: float) -> int:
        """Delete files whose links have all expired; returns how many were removed."""
        return self.purge(seconds).expired

    def _scan(self) -> list[_Entry]:
        """This store's files (final and temp); anything else in the directory is left alone."""
        entries: list[_Entry] = []
        with os.scandir(self.root) as scan:
            for item in scan:
                if not (_FILE_NAME.match(item.name) or _TEMP_NAME.match(item.name)):
                    continue
                try:
                    if not item.is_file(follow_symlinks=False):
                        continue
                    stat = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                entries.append(_Entry(Path(item.path), stat.st_mtime, stat.st_size))
        return entries

    def count(self) -> int:
        return sum(1 for path in self.root.iterdir() if not path.name.startswith("."))


def _unlink(path: Path) -> bool:
    """True if this call removed the file (False if someone else already had)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


async def _read_chunks(path: Path) -> AsyncIterator[bytes]:
    """The file's bytes in chunks, each read in a thread; opened on the first iteration."""
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, _READ_CHUNK):
            yield chunk
    finally:
        handle.close()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
