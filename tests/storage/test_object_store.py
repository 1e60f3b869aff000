"""Result images on every backend: file:// and s3:// (a real moto S3 server on 127.0.0.1).

The S3 half needs moto's server mode (``moto[server]``); without it the tests are skipped, except
with ``CI=true``, where they fail. Objects are aged by moving their Last-Modified inside the moto
server (it runs in this process), as the local tests age files with `os.utime`.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from imagegate.config import FileSettings, Settings
from imagegate.metrics import Metrics
from imagegate.storage.blobs import LocalBlobStore, StorageError, StorageSettings, open_store
from imagegate.storage.retention import Retention
from imagegate.web.app import create_app

PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"/>'
MOTO_ACCOUNT = "123456789012"  # moto's default account


@dataclass(frozen=True)
class Moto:
    endpoint: str
    backend: Any  # moto's S3 backend, to age objects


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    try:
        from moto.s3.models import s3_backends
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"moto[server] is required in CI for the S3 storage tests: {exc!r}")
        pytest.skip(f"moto[server] is not installed: {exc!r}")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield Moto(f"http://{host}:{port}", s3_backends[MOTO_ACCOUNT]["aws"])
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials as a deployment gives them (``AWS_*``); nothing from the host leaks in."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")


@pytest.fixture
def bucket(moto: Moto, aws_env: None) -> str:
    import boto3

    name = f"imagegate-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=moto.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
    ).create_bucket(Bucket=name)
    return name


def s3_settings(moto: Moto, bucket: str, *, presign: bool = False) -> StorageSettings:
    return StorageSettings(
        url=f"s3://{bucket}/gateway/files", endpoint_url=moto.endpoint, presign=presign, region="us-east-1"
    )


def age_object(moto: Moto, bucket: str, key: str, seconds: float) -> None:
    stored = moto.backend.buckets[bucket].keys[key]
    stored.last_modified = stored.last_modified - timedelta(seconds=seconds)


def object_keys(moto: Moto, bucket: str) -> set[str]:
    return set(moto.backend.buckets[bucket].keys.keys())


@pytest.fixture
async def app_with(settings: Settings) -> AsyncIterator[Any]:
    """Builds the app and puts the given store in it (the other instance's view of the bucket)."""
    apps: list[Any] = []

    def build(store: object) -> Any:
        app = create_app(settings)
        app.state.blobs = store
        apps.append(app)
        return app

    yield build
    for app in apps:
        await app.state.runtime.aclose()


async def fetch(app: Any, file_id: str, query: str | None = None) -> httpx.Response:
    query = query or app.state.signer.query(file_id)[0]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        return await http.get(f"/v1/files/{file_id}?{query}")


# --- file:// -------------------------------------------------------------------------------


async def test_file_url_put_find_read_purge(tmp_path: Path) -> None:
    root = tmp_path / "images"
    store = open_store(StorageSettings(url=f"file://{root}"), tmp_path / "data")
    assert isinstance(store, LocalBlobStore) and store.root == root and not store.presigns
    await store.check()
    stored = await store.put(PNG, "png")
    found = await store.lookup(stored.id)
    assert found is not None and (found.format, found.path) == ("png", root / f"{stored.id}.png")
    assert await store.read(stored.id) == PNG
    opened = await store.open(stored.id)
    assert opened is not None and b"".join([chunk async for chunk in opened.chunks]) == PNG
    assert await store.presign(found, 60) is None
    assert await store.lookup("img_" + "B" * 22) is None and await store.lookup("../etc/passwd") is None
    report = store.purge(3600, now=time.time() + 7200)
    assert (report.expired, report.files_stored) == (1, 0)
    assert await store.read(stored.id) is None


def test_open_store_urls_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = open_store(StorageSettings(), tmp_path / "data", max_bytes=5)
    assert isinstance(default, LocalBlobStore) and default.root == tmp_path / "data" / "files"
    assert default.max_bytes == 5
    monkeypatch.chdir(tmp_path)
    relative = open_store(StorageSettings(url="file://./data/files"), tmp_path / "elsewhere")
    assert isinstance(relative, LocalBlobStore) and relative.root.resolve() == tmp_path / "data" / "files"
    with pytest.raises(StorageError, match="presign needs an object store"):
        open_store(StorageSettings(url="file://./x", presign=True), tmp_path)
    with pytest.raises(ValidationError, match="file://, s3:// or az://"):  # refused with the configuration
        StorageSettings(url="ftp://host/x")
    with pytest.raises(ValidationError, match=r"storage\.googleapis\.com"):  # gs:// points at the S3 interop path
        StorageSettings(url="gs://bucket/results")
    with pytest.raises(StorageError, match="expected s3://bucket"):
        open_store(StorageSettings(url="s3:///prefix-only"), tmp_path)
    with pytest.raises(StorageError, match="expected az://bucket"):
        open_store(StorageSettings(url="az://"), tmp_path)


async def test_local_store_served_through_the_app(tmp_path: Path, app_with: Any) -> None:
    store = open_store(StorageSettings(url=f"file://{tmp_path / 'shared'}"), tmp_path)
    stored = await store.put(SVG, "svg")
    response = await fetch(app_with(store), stored.id)
    assert response.status_code == 200 and response.content == SVG
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert "sandbox" in response.headers["content-security-policy"]


# --- s3:// ---------------------------------------------------------------------------------


async def test_s3_put_lookup_read_delete(moto: Moto, bucket: str) -> None:
    store = open_store(s3_settings(moto, bucket), Path("unused"))
    await store.check()
    stored = await store.put(PNG, "png")
    assert stored.path is None and stored.size == len(PNG)
    assert object_keys(moto, bucket) == {f"gateway/files/{stored.id}"}
    found = await store.lookup(stored.id)
    assert found is not None and (found.format, found.size, found.content_type) == ("png", len(PNG), "image/png")
    assert await store.read(stored.id) == PNG
    assert await store.lookup("img_" + "C" * 22) is None and await store.read("img_../../x") is None
    await store.delete(stored.id)
    await store.delete(stored.id)  # already gone: no error
    assert await store.lookup(stored.id) is None and object_keys(moto, bucket) == set()


async def test_two_instances_share_the_bucket(moto: Moto, bucket: str, app_with: Any) -> None:
    """One instance stores and mints the link; another, with its own client, serves it."""
    writer = open_store(s3_settings(moto, bucket), Path("unused"))
    reader = open_store(s3_settings(moto, bucket), Path("unused"))
    png, svg = await writer.put(PNG, "png"), await writer.put(SVG, "svg")
    app = app_with(reader)
    response = await fetch(app, png.id)
    assert response.status_code == 200 and response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(PNG))
    assert response.headers["cache-control"].startswith("private, max-age=")
    response = await fetch(app, svg.id)
    assert response.status_code == 200 and response.content == SVG
    assert "sandbox" in response.headers["content-security-policy"]
    tampered = app.state.signer.query(png.id)[0].replace("signature=", "signature=0")[:-1]
    assert (await fetch(app, png.id, tampered)).status_code == 403
    await writer.delete(png.id)
    response = await fetch(app, png.id)
    assert response.status_code == 404 and response.json()["error"]["code"] == "file_not_found"


async def test_presigned_redirect_works_against_the_server(moto: Moto, bucket: str, app_with: Any) -> None:
    store = open_store(s3_settings(moto, bucket, presign=True), Path("unused"))
    stored = await store.put(PNG, "png")
    app = app_with(store)
    response = await fetch(app, stored.id)
    assert response.status_code == 307
    location = response.headers["location"]
    assert location.startswith(f"{moto.endpoint}/{bucket}/gateway/files/{stored.id}?")
    assert "X-Amz-Signature=" in location
    expires_in = int(httpx.URL(location).params["X-Amz-Expires"])  # the rest of the link's lifetime
    assert app.state.signer.ttl_seconds - 5 <= expires_in <= app.state.signer.ttl_seconds
    async with httpx.AsyncClient() as http:  # moto checks no signatures: this proves the URL's shape
        direct = await http.get(location)
        assert direct.status_code == 200 and direct.content == PNG
        assert direct.headers["content-type"] == "image/png"
    svg = await store.put(SVG, "svg")
    response = await fetch(app, svg.id)  # never presigned: it must carry the gateway's CSP
    assert response.status_code == 200 and "content-security-policy" in response.headers
    await store.delete(stored.id)
    assert (await fetch(app, stored.id)).status_code == 404


async def test_s3_purge_deletes_expired_objects_only(moto: Moto, bucket: str) -> None:
    store = open_store(s3_settings(moto, bucket), Path("unused"))
    old, fresh = await store.put(bytes(10), "png"), await store.put(bytes(20), "webp")
    age_object(moto, bucket, f"gateway/files/{old.id}", 7200)
    foreign = ("gateway/files/notes.txt", f"gateway/files/nested/{old.id}", f"elsewhere/{old.id}")
    for key in foreign:
        moto.backend.put_object(bucket, key, b"not ours")
        age_object(moto, bucket, key, 7200)
    report = store.purge(3600)
    assert (report.expired, report.disk_cap, report.files_stored, report.bytes_stored) == (1, 0, 1, 20)
    assert object_keys(moto, bucket) == {f"gateway/files/{fresh.id}", *foreign}


async def test_s3_disk_cap_deletes_oldest_first(moto: Moto, bucket: str) -> None:
    store = open_store(s3_settings(moto, bucket), Path("unused"))
    files = [await store.put(bytes(100), "png") for _ in range(5)]
    for age, stored in zip((50, 40, 30, 20, 10), files, strict=True):
        age_object(moto, bucket, f"gateway/files/{stored.id}", age)
    report = store.purge(3600, max_bytes=250)
    assert (report.expired, report.disk_cap, report.bytes_stored) == (0, 3, 200)
    assert [await store.lookup(f.id) is not None for f in files] == [False, False, False, True, True]


async def test_retention_purges_the_bucket_and_reports_metrics(moto: Moto, bucket: str) -> None:
    store = open_store(s3_settings(moto, bucket), Path("unused"), max_bytes=1000)
    metrics = Metrics()
    retention = Retention(store, FileSettings(ttl_seconds=60, max_bytes=1000), metrics)
    stale, kept = await store.put(bytes(10), "png"), await store.put(bytes(30), "png")
    age_object(moto, bucket, f"gateway/files/{stale.id}", 3600)
    report = await retention.purge_now()
    assert (report.expired, report.files_stored, report.bytes_stored) == (1, 1, 30)
    assert store.bytes_estimate == 30
    assert metrics.registry.get_sample_value("imagegate_stored_files") == 1
    assert await store.lookup(kept.id) is not None and await store.lookup(stale.id) is None


async def test_missing_bucket_is_a_clear_error(moto: Moto, aws_env: None, app_with: Any) -> None:
    store = open_store(s3_settings(moto, "imagegate-no-such-bucket"), Path("unused"))
    with pytest.raises(StorageError, match=r"s3://imagegate-no-such-bucket/gateway/files at .*bucket does not exist"):
        await store.check()
    with pytest.raises(StorageError, match="storing a file failed: the bucket does not exist"):
        await store.put(PNG, "png")
    with pytest.raises(StorageError, match="the bucket does not exist"):
        store.purge(60)
    response = await fetch(app_with(store), "img_" + "D" * 22)
    assert response.status_code == 503 and response.json()["error"]["code"] == "storage_unavailable"


async def test_the_store_down_fails_url_delivery_with_503_and_still_serves_b64(
    settings: Settings, aws_env: None
) -> None:
    """Nothing listens at the endpoint: a url answer cannot be stored (503 storage_unavailable, the
    ledger row settled as failed, no link handed out); a b64_json answer needs no store and is served."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    storage = StorageSettings(url="s3://imagegate-down/files", endpoint_url=dead, region="us-east-1")
    app = create_app(settings.model_copy(update={"storage": storage}))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            url = await http.post("/v1/images/generations", json={"prompt": "x", "response_format": "url"})
            b64 = await http.post("/v1/images/generations", json={"prompt": "x", "response_format": "b64_json"})
            rows = (await http.get("/v1/requests")).json()["data"]
    finally:
        await app.state.runtime.aclose()
    assert url.status_code == 503 and url.json()["error"]["code"] == "storage_unavailable", url.text
    assert "data" not in url.json()
    assert b64.status_code == 200 and b64.json()["data"][0]["b64_json"]
    assert sorted(row["status"] for row in rows) == ["failed", "succeeded"]
    failed = next(row for row in rows if row["status"] == "failed")
    assert failed["error_code"] == "storage_unavailable" and failed["attempts"][0]["status"] == "ok"
    assert failed["cost"] == "0"  # the sandbox is free; a paid provider's price would be recorded here
