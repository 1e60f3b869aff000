"""Result images in Azure Blob storage (`az://container/prefix`), against Azurite, Microsoft's
emulator (npm package `azurite`), started on 127.0.0.1 by this module.

`./dev test` installs Azurite into `.cache/azurite` with npm; without it these tests are skipped,
except with ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from imagegate.config import Settings, StorageSettings
from imagegate.storage.blobs import StorageError, open_store
from imagegate.web.app import create_app

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "devstoreaccount1"  # Azurite's well-known development account and key
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)


@dataclass(frozen=True)
class Azurite:
    endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1


def _azurite_binary() -> str | None:
    local = ROOT / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    return str(local) if local.exists() else shutil.which("azurite-blob")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    binary = _azurite_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Azurite is required in CI for the Azure storage tests (./dev test installs it with npm)")
        pytest.skip("Azurite is not installed (npm install --prefix .cache/azurite azurite)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    location = tmp_path_factory.mktemp("azurite")
    args = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(location)]
    process = subprocess.Popen(
        [*args, "--skipApiVersionCheck", "--silent", "--loose"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"Azurite did not start: {process.stderr.read().decode() if process.stderr else ''}")
            time.sleep(0.1)
    try:
        yield Azurite(f"http://127.0.0.1:{port}/{ACCOUNT}")
    finally:
        process.kill()
        process.wait(10)


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AZURE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", KEY)


@pytest.fixture
def container(azurite: Azurite, azure_env: None) -> str:
    from azure.storage.blob import BlobServiceClient

    name = f"imagegate-{uuid.uuid4().hex[:12]}"
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={azurite.endpoint};"
    )
    BlobServiceClient.from_connection_string(connection).create_container(name)
    return name


def _settings(azurite: Azurite, container: str, presign: bool = False) -> StorageSettings:
    return StorageSettings(url=f"az://{container}/gateway/files", endpoint_url=azurite.endpoint, presign=presign)


async def test_put_lookup_read_presign_delete(azurite: Azurite, container: str) -> None:
    store = open_store(_settings(azurite, container, presign=True), Path("unused"))
    await store.check()
    stored = await store.put(PNG, "png")
    found = await store.lookup(stored.id)
    assert found is not None and found.format == "png" and found.size == len(PNG)
    assert await store.read(stored.id) == PNG
    url = await store.presign(found, 60)
    assert url is not None and url.startswith(f"{azurite.endpoint}/{container}/gateway/files/{stored.id}?")
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).content == PNG
    await store.delete(stored.id)
    assert await store.lookup(stored.id) is None


async def test_purge_by_age_and_by_cap(azurite: Azurite, container: str) -> None:
    store = open_store(_settings(azurite, container), Path("unused"))
    first = await store.put(PNG, "png")
    time.sleep(1.1)  # Last-Modified has one-second resolution
    second = await store.put(PNG, "png")
    third = await store.put(PNG, "png")
    report = store.purge(3600, max_bytes=2 * len(PNG))  # nothing expired; over the cap: oldest first
    assert report.disk_cap == 1 and report.expired == 0 and await store.lookup(first.id) is None
    assert await store.lookup(third.id) is not None
    time.sleep(1.1)
    assert store.purge(0.5).expired == 2
    assert await store.lookup(second.id) is None and await store.lookup(third.id) is None


async def test_a_link_minted_by_one_instance_is_served_by_another(
    azurite: Azurite, container: str, tmp_path: Path
) -> None:
    storage = _settings(azurite, container)
    apps = [
        create_app(Settings(data_dir=tmp_path / name, signing_key="shared", storage=storage)) for name in ("a", "b")
    ]
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0]), base_url="http://gw") as a:
            made = await a.post("/v1/images/generations", json={"prompt": "x", "response_format": "url"})
        assert made.status_code == 200, made.text
        path = made.json()["data"][0]["url"].removeprefix("http://gw")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[1]), base_url="http://gw") as b:
            served = await b.get(path)
        assert served.status_code == 200 and served.content[:8] == PNG[:8]
    finally:
        for app in apps:
            await app.state.runtime.aclose()


async def test_a_missing_container_is_a_clear_error(azurite: Azurite, azure_env: None) -> None:
    store = open_store(_settings(azurite, "imagegate-no-such-container"), Path("unused"))
    with pytest.raises(StorageError, match=r"az://imagegate-no-such-container/gateway/files at .*does not exist"):
        await store.check()
