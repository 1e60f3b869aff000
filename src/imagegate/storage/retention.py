"""Keeps the stored result files bounded while the gateway runs.

A background task purges expired files at start and every `[files] purge_interval_seconds`, and
sooner when a write takes the store over `[files] max_bytes` (then the oldest files go first). The
scan and deletes run in a thread so the event loop never waits on the disk or the object store.
Every backend is purged the same way; with a shared bucket each instance purges it (deleting an
object twice is harmless) and the cap counts every instance's images.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from imagegate.config import FileSettings
from imagegate.metrics import Metrics
from imagegate.storage.blobs import BlobStore, PurgeReport

log = logging.getLogger("imagegate.storage")
MIN_GAP_SECONDS = 1.0  # between two purges woken by writes over the cap


class Retention:
    def __init__(self, blobs: BlobStore, files: FileSettings, metrics: Metrics) -> None:
        self.blobs = blobs
        self.ttl_seconds = files.ttl_seconds
        self.interval = files.purge_interval_seconds
        self.max_bytes = files.max_bytes
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self.blobs.on_over_cap = self._wake.set
            self._task = asyncio.create_task(self._run(), name="imagegate-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self.blobs.on_over_cap = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def purge_now(self) -> PurgeReport:
        """One purge in a thread; updates the store's size estimate and the metrics."""
        mark = self.blobs.bytes_written
        report = await asyncio.to_thread(self.blobs.purge, self.ttl_seconds, self.max_bytes)
        # Files written during the scan may or may not have been counted: over-estimating is safe.
        self.blobs.bytes_estimate = report.bytes_stored + (self.blobs.bytes_written - mark)
        self.metrics.observe_storage(report.bytes_stored, report.files_stored, report.purged())
        if report.expired or report.disk_cap or report.stale_temp:
            log.info(
                "purged %d expired, %d over the disk cap, %d stale temp files; %d bytes stored",
                report.expired,
                report.disk_cap,
                report.stale_temp,
                report.bytes_stored,
            )
        return report

    async def _run(self) -> None:
        while True:
            try:
                await self.purge_now()
            except OSError as exc:  # StorageError included: a backend outage must not end the task
                log.error("purging stored files failed: %s", exc)
            await asyncio.sleep(min(MIN_GAP_SECONDS, self.interval))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
