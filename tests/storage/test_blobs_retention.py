"""Stored result files stay bounded while the gateway runs: expiry, the disk cap, temp files of writes."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from imagegate.config import FileSettings, Settings
from imagegate.metrics import Metrics
from imagegate.storage.blobs import TEMP_GRACE_SECONDS, LocalBlobStore
from imagegate.storage.retention import Retention
from imagegate.web.app import create_app

NAME = "img_" + "A" * 22


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def _until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Polls `condition` (a bound, not a timing assertion: the check after it is what fails)."""
    deadline = time.monotonic() + limit
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def test_purge_removes_expired_files_only(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    old = await store.put(b"o" * 10, "png")
    fresh = await store.put(b"f" * 20, "webp")
    _age(old.path, 7200)
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not ours")
    _age(foreign, 7200)
    report = store.purge(3600)
    assert (report.expired, report.disk_cap, report.files_stored, report.bytes_stored) == (1, 0, 1, 20)
    assert not old.path.exists() and fresh.path.exists() and foreign.exists()


async def test_disk_cap_deletes_oldest_first(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    files = [await store.put(bytes(100), "png") for _ in range(5)]
    for age, stored in zip((50, 40, 30, 20, 10), files, strict=True):
        _age(stored.path, age)
    report = store.purge(3600, max_bytes=250)
    assert (report.expired, report.disk_cap, report.bytes_stored) == (0, 3, 200)
    assert [f.path.exists() for f in files] == [False, False, False, True, True]


def test_temp_file_of_a_write_in_progress_is_never_purged(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    temp = tmp_path / f".{NAME}.png.tmp"
    temp.write_bytes(bytes(500))
    _age(temp, 120)  # older than the link lifetime, still within the temp grace
    report = store.purge(1, max_bytes=10)
    assert temp.exists() and report.bytes_stored == 500
    assert report.purged() == {"expired": 0, "disk_cap": 0, "stale_temp": 0}
    os.replace(temp, tmp_path / f"{NAME}.png")  # the write completes
    _age(tmp_path / f"{NAME}.png", 120)
    assert store.purge(1).expired == 1


def test_orphaned_temp_file_is_removed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    temp = tmp_path / f".{NAME}.jpeg.tmp"
    temp.write_bytes(b"x")
    _age(temp, TEMP_GRACE_SECONDS + 60)
    assert store.purge(1).stale_temp == 1 and not temp.exists()


async def test_writes_survive_concurrent_purges(tmp_path: Path) -> None:
    """A purge that treats everything as expired, looping while files are written, never breaks a write."""
    store = LocalBlobStore(tmp_path)
    stop = threading.Event()
    purges = 0

    def purge_loop() -> None:
        nonlocal purges
        while not stop.is_set():
            store.purge(1e-9)
            purges += 1

    purger = threading.Thread(target=purge_loop)
    purger.start()
    try:
        writes = (store.put(bytes(64 * 1024), "png") for _ in range(200))
        results = await asyncio.gather(*writes, return_exceptions=True)
    finally:
        stop.set()
        purger.join()
    assert purges > 0
    assert [r for r in results if isinstance(r, BaseException)] == []


async def test_retention_purges_periodically_and_reports_metrics(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    metrics = Metrics()
    retention = Retention(store, FileSettings(ttl_seconds=60, purge_interval_seconds=0.05), metrics)
    kept = await store.put(bytes(30), "png")
    retention.start()
    try:
        stale = await store.put(bytes(10), "png")
        _age(stale.path, 3600)  # expires while the gateway runs, after the start-up purge
        # a pass unlinks first and reports after: wait for its report, not only for the unlink
        await _until(lambda: _sample(metrics, "imagegate_files_purged_total", {"reason": "expired"}) >= 1)
        await _until(lambda: _sample(metrics, "imagegate_stored_files") == 1)
    finally:
        await retention.stop()
    assert not stale.path.exists() and kept.path.exists()
    assert _sample(metrics, "imagegate_files_purged_total", {"reason": "expired"}) >= 1
    assert _sample(metrics, "imagegate_stored_file_bytes") == 30
    assert _sample(metrics, "imagegate_stored_files") == 1


async def test_write_over_the_cap_wakes_a_purge_before_the_interval(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, max_bytes=1000)
    metrics = Metrics()
    retention = Retention(store, FileSettings(purge_interval_seconds=3600, max_bytes=1000), metrics)
    retention.start()
    try:
        await _until(lambda: _sample(metrics, "imagegate_stored_files") == 0 and store.on_over_cap is not None)
        files = [await store.put(bytes(400), "png") for _ in range(4)]
        await _until(lambda: sum(f.path.exists() for f in files) <= 2)
    finally:
        await retention.stop()
    assert sum(f.path.exists() for f in files) <= 2 and files[-1].path.exists()
    assert _sample(metrics, "imagegate_files_purged_total", {"reason": "disk_cap"}) >= 2


async def test_app_lifespan_runs_the_retention_task(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"data_dir": tmp_path, "signing_key": "k", "files": {"ttl_seconds": 60, "purge_interval_seconds": 0.05}}
    )
    app = create_app(settings)
    files_dir = tmp_path / "files"
    async with app.router.lifespan_context(app):
        expired = files_dir / f"{NAME}.png"
        expired.write_bytes(b"x" * 7)
        _age(expired, 3600)
        await _until(lambda: not expired.exists())
        # The purge counts what it removed once its thread returns, just after the file is gone.
        runtime_metrics = app.state.runtime.metrics
        await _until(lambda: _sample(runtime_metrics, "imagegate_files_purged_total", {"reason": "expired"}) > 0)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            metrics = (await http.get("/metrics")).text
    assert not expired.exists()
    assert 'imagegate_files_purged_total{reason="expired"}' in metrics
