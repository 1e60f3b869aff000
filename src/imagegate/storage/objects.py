"""Result images in an S3 (or S3-compatible) bucket or an Azure Blob container, through obstore,
shared by every gateway instance.

Each image is one object ``<prefix>/<id>`` whose ``Content-Type`` records its format, so a link
minted by one instance is served by any other from a single HEAD or GET. Writes are single PUTs
(atomic: no temp objects, no abandoned multipart parts). Retention lists the prefix and deletes by
age, then oldest first while over the cap; objects whose names are not ids are never touched.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError
from obstore.store import AzureStore, S3Store

from imagegate.storage.blobs import (
    CONTENT_TYPES,
    OpenedFile,
    PurgeReport,
    StorageError,
    StorageSettings,
    StoredFile,
    new_file_id,
    valid_file_id,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from obstore import GetResult
    from obstore.store import AzureConfig, ClientConfig, RetryConfig, S3Config

_FORMATS = {content_type: fmt for fmt, content_type in CONTENT_TYPES.items()}
_STREAM_CHUNK = 256 * 1024
_DELETE_BATCH = 1000  # S3 DeleteObjects takes at most 1000 keys
_LIST_CHUNK = 1000
# A dead endpoint fails a request within seconds instead of obstore's default three minutes.
_RETRY: RetryConfig = {"max_retries": 3, "retry_timeout": timedelta(seconds=20)}
_FAILURES = (BaseError, OSError)


@dataclass(frozen=True)
class BucketLocation:
    scheme: str  # s3 | az
    bucket: str  # the bucket (Azure: the container)
    prefix: str  # without leading or trailing slashes; "" for the whole bucket


SCHEMES = ("s3", "az")


def parse_bucket_url(url: str) -> BucketLocation:
    """``s3://bucket/prefix`` or ``az://container/prefix``; raises `StorageError` without a bucket."""
    scheme, sep, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if not sep or scheme not in SCHEMES or not bucket or "?" in rest or "#" in rest:
        raise StorageError(
            f"[storage] url {url!r}: expected {scheme or 's3'}://bucket or {scheme or 's3'}://bucket/prefix"
        )
    return BucketLocation(scheme, bucket, prefix.strip("/"))


def open_bucket(storage: StorageSettings, max_bytes: int | None = None) -> ObjectBlobStore:
    """An `ObjectBlobStore` on the bucket `storage.url` names. Credentials come from each cloud's usual
    environment variables (``AWS_*``, ``AZURE_STORAGE_*``), read by obstore; `endpoint_url` points at
    an S3-compatible server (Google Cloud Storage through its S3 interoperability API included) or
    an Azure blob endpoint (Azurite: ``http://127.0.0.1:10000/devstoreaccount1``)."""
    url = storage.url or ""
    location = parse_bucket_url(url)
    client: ClientConfig = {}
    endpoint = (storage.endpoint_url or "").rstrip("/")
    if endpoint.startswith("http://"):
        client["allow_http"] = True
    description = url + (f" at {endpoint}" if endpoint else "")
    prefix = location.prefix or None
    try:
        store: S3Store | AzureStore
        if location.scheme == "s3":
            s3: S3Config = {}
            if endpoint:
                s3["endpoint"] = endpoint
            if storage.region:
                s3["region"] = storage.region
            store = S3Store(location.bucket, prefix=prefix, config=s3, client_options=client, retry_config=_RETRY)
        else:
            azure: AzureConfig = {"endpoint": endpoint} if endpoint else {}
            store = AzureStore(location.bucket, prefix=prefix, config=azure, client_options=client, retry_config=_RETRY)
    except _FAILURES as exc:
        raise StorageError(f"{description}: cannot configure the {location.scheme} client: {_first_line(exc)}") from exc
    return ObjectBlobStore(store, description=description, max_bytes=max_bytes, presign=storage.presign)


@dataclass(frozen=True)
class _Object:
    key: str
    mtime: float
    size: int


class ObjectBlobStore:
    """`BlobStore` on an obstore store (S3 in production; the code uses no S3-only call but signing).

    The size accounting and `on_over_cap` hook behave as in `LocalBlobStore`; the cap counts every
    image under the prefix, whichever instance wrote it.
    """

    def __init__(
        self,
        store: S3Store,
        *,
        description: str,
        max_bytes: int | None = None,
        presign: bool = False,
    ) -> None:
        self.store = store
        self.description = description
        self.presigns = presign
        self.max_bytes = max_bytes
        self.bytes_estimate = 0
        self.bytes_written = 0
        self.on_over_cap: Callable[[], None] | None = None

    @staticmethod
    def valid_id(file_id: str) -> bool:
        return valid_file_id(file_id)

    async def check(self) -> None:
        """List one key: fails clearly on a missing bucket, refused credentials or a dead endpoint."""
        try:
            async for _ in obstore.list(self.store, chunk_size=1):
                break
        except _FAILURES as exc:
            raise self._failure("listing the bucket", exc) from exc

    async def put(self, data: bytes, fmt: str) -> StoredFile:
        if fmt not in CONTENT_TYPES:
            raise ValueError(f"unknown format {fmt}")
        file_id = new_file_id()
        try:
            await obstore.put_async(
                self.store, file_id, data, attributes={"Content-Type": CONTENT_TYPES[fmt]}, use_multipart=False
            )
        except _FAILURES as exc:
            raise self._failure("storing a file", exc) from exc
        self.bytes_written += len(data)
        self.bytes_estimate += len(data)
        if self.max_bytes is not None and self.bytes_estimate > self.max_bytes and self.on_over_cap is not None:
            self.on_over_cap()
        return StoredFile(file_id, None, fmt, len(data))

    async def lookup(self, file_id: str) -> StoredFile | None:
        """One HEAD: the file's format and size, or None."""
        result = await self._get(file_id, head=True)
        return None if result is None else _stored(file_id, result)

    async def open(self, file_id: str) -> OpenedFile | None:
        """One GET: the headers now, the body as it is iterated."""
        result = await self._get(file_id, head=False)
        if result is None:
            return None
        stored = _stored(file_id, result)
        return None if stored is None else OpenedFile(stored, self._chunks(result))

    async def read(self, file_id: str) -> bytes | None:
        opened = await self.open(file_id)
        if opened is None:
            return None
        return b"".join([chunk async for chunk in opened.chunks])

    async def presign(self, file: StoredFile, expires_in: int) -> str | None:
        try:
            return await obstore.sign_async(self.store, "GET", file.id, timedelta(seconds=max(1, expires_in)))
        except _FAILURES as exc:
            raise self._failure("presigning a link", exc) from exc

    async def delete(self, file_id: str) -> None:
        if not self.valid_id(file_id):
            return
        try:
            await obstore.delete_async(self.store, file_id)
        except FileNotFoundError as exc:
            if _no_bucket(exc):
                raise self._failure("deleting a file", exc) from exc
        except _FAILURES as exc:
            raise self._failure("deleting a file", exc) from exc

    def purge(self, ttl_seconds: float, max_bytes: int | None = None, now: float | None = None) -> PurgeReport:
        """Delete images older than `ttl_seconds`, then, while over `max_bytes`, the oldest ones.

        Blocking (a listing of the prefix and batched deletes): run it in a thread. Ages are the
        objects' Last-Modified as the server reports it (whole seconds on S3).
        """
        now = time.time() if now is None else now
        try:
            objects = self._scan()
            expired = [item for item in objects if item.mtime < now - ttl_seconds]
            kept = sorted((item for item in objects if item.mtime >= now - ttl_seconds), key=_age_order)
            total = sum(item.size for item in kept)
            capped: list[_Object] = []
            while max_bytes is not None and kept and total > max_bytes:
                oldest = kept.pop(0)
                total -= oldest.size
                capped.append(oldest)
            self._delete_keys(item.key for item in [*expired, *capped])
        except _FAILURES as exc:
            raise self._failure("purging", exc) from exc
        return PurgeReport(len(expired), len(capped), 0, len(kept), total)

    def _scan(self) -> list[_Object]:
        """The images under the prefix (keys that are ids, directly under it); others are left alone."""
        found: list[_Object] = []
        for batch in obstore.list(self.store, chunk_size=_LIST_CHUNK):
            for meta in batch:
                key = meta["path"]
                if valid_file_id(key):
                    found.append(_Object(key, meta["last_modified"].timestamp(), meta["size"]))
        return found

    def _delete_keys(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(key)
            if len(batch) == _DELETE_BATCH:
                obstore.delete(self.store, batch)
                batch = []
        if batch:
            obstore.delete(self.store, batch)

    async def _get(self, file_id: str, *, head: bool) -> GetResult | None:
        if not self.valid_id(file_id):
            return None
        try:
            return await obstore.get_async(self.store, file_id, options={"head": head})
        except FileNotFoundError as exc:
            if _no_bucket(exc):
                raise self._failure("reading a file", exc) from exc
            return None
        except _FAILURES as exc:
            raise self._failure("reading a file", exc) from exc

    async def _chunks(self, result: GetResult) -> AsyncIterator[bytes]:
        try:
            async for chunk in result.stream(min_chunk_size=_STREAM_CHUNK):
                yield bytes(chunk)
        except _FAILURES as exc:
            raise self._failure("reading a file", exc) from exc

    def _failure(self, action: str, exc: BaseException) -> StorageError:
        if _no_bucket(exc):
            return StorageError(f"{self.description}: {action} failed: the bucket does not exist")
        return StorageError(f"{self.description}: {action} failed: {_first_line(exc)}")


def _stored(file_id: str, result: GetResult) -> StoredFile | None:
    """None for an object this gateway did not write (no image Content-Type)."""
    content_type = str(result.attributes.get("Content-Type", "")).split(";")[0].strip()
    fmt = _FORMATS.get(content_type)
    return None if fmt is None else StoredFile(file_id, None, fmt, result.meta["size"])


def _no_bucket(exc: BaseException) -> bool:
    text = str(exc)
    return "NoSuchBucket" in text or "ContainerNotFound" in text


def _age_order(item: _Object) -> tuple[float, str]:
    return item.mtime, item.key


def _first_line(exc: BaseException) -> str:
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return line[:300]
