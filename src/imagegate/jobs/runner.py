"""Job workers: claim a job, run it as a synchronous request would run, record the outcome.

Each instance runs `[jobs] workers` worker tasks. A worker claims the oldest claimable job (see
jobs.store), rebuilds the request from the stored parameters and input files, and runs the same
path as a plain request: the resource envelope, `ImageService.execute`, `deliver`, the usual body.
While it runs, a watcher renews the lease every third of it and reads `cancel_requested`; a cancel
(or a lost lease) cancels the work, which cancels the upstream call like a client disconnect does.

Money: the ledger row was begun at accept with the job's reservation; the worker settles it exactly
once (`Ledger.settle` only moves a pending row), so a job re-run after its instance died is charged
once. The ledger's reconciliation leaves the rows of live jobs alone (accounting.ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from imagegate.accounting.gate import Admission, Caller, Gate
from imagegate.config import JobsSettings
from imagegate.envelope import Envelope
from imagegate.errors import ImagegateError, InternalError, ServiceUnavailableError, UpstreamError
from imagegate.footprint import output_bytes
from imagegate.inputs import RawInput, decode_inputs, probe_inputs, url_decisions
from imagegate.jobs.store import TERMINAL, Job, JobStatus, JobStore
from imagegate.providers.base import EditInputs
from imagegate.redaction import current as current_redactor
from imagegate.schemas import EditParams, GenerateParams, parse_params
from imagegate.service import ImageService, Prepared
from imagegate.storage.blobs import BlobStore
from imagegate.web.render import images_parts

log = logging.getLogger("imagegate.jobs")
PURGE_EVERY_SECONDS = 600.0
IDLE_BACKOFF = 8  # an idle instance looks for work every poll_interval_seconds x 8 at most


def error_object(exc: BaseException) -> dict[str, Any]:
    """What a failed job reports: the HTTP status it would have had and OpenAI's error object."""
    error = exc if isinstance(exc, ImagegateError) else InternalError("internal error while running the job")
    body = error.body()
    redactor = current_redactor()
    for name in ("message", "param", "code"):
        value = body["error"][name]
        if value:
            body["error"][name] = redactor.redact(value)
    return {"status": error.status, **body}


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        gate: Gate,
        envelope: Envelope,
        blobs: BlobStore,
        settings: JobsSettings,
        owner: str,
        on_finish: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.gate = gate
        self.service: ImageService = gate.service
        self.envelope = envelope
        self.blobs = blobs
        self.owner = owner
        self.on_finish = on_finish
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.poll = settings.poll_interval_seconds
        self.max_attempts = settings.max_attempts
        self.retention = timedelta(seconds=settings.retention_seconds)
        self._count = settings.workers
        self._tasks: list[asyncio.Task[None]] = []
        self._work = asyncio.Event()  # set: a job may be claimable

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._look(), name="imagegate-job-look"))
        for index in range(self._count):
            self._tasks.append(asyncio.create_task(self._loop(), name=f"imagegate-job-worker-{index}"))
        self._tasks.append(asyncio.create_task(self._maintain(), name="imagegate-job-purge"))

    def wake(self) -> None:
        """A job was accepted here: the workers look now instead of at the next poll."""
        self._work.set()

    async def _look(self) -> None:
        """One read per poll interval for the whole instance (never a write while idle): when some job
        is claimable the workers try to claim; when a webhook is due the deliverer is woken."""
        idle = 0  # empty looks in a row: an idle instance looks less often, up to IDLE_BACKOFF times
        while True:
            await asyncio.sleep(self.poll * min(2**idle, IDLE_BACKOFF))
            try:
                claimable, webhook = await self.store.due()
            except Exception:
                log.exception("looking for jobs failed; retrying")
                continue
            idle = 0 if claimable or webhook else idle + 1
            if claimable and self._count:
                self._work.set()
            if webhook:
                self.on_finish()

    async def aclose(self) -> None:
        """Stop: the work of running jobs is canceled and the jobs are queued again at once, for any
        instance to take (a killed instance's jobs wait for their lease to run out instead)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks:
            try:
                count = await self.store.requeue(self.owner)
            except ImagegateError as exc:
                log.warning("could not queue this instance's running jobs again (%s)", exc.message)
            else:
                if count:
                    log.info("queued %d running jobs again for another instance", count)
        self._tasks.clear()

    async def _loop(self) -> None:
        while True:
            await self._work.wait()
            try:
                job = await self.store.claim(self.owner, self.lease)
            except ImagegateError as exc:
                log.warning("job claim failed (%s); retrying", exc.message)
                job = None
            except Exception:
                log.exception("job claim failed; retrying")
                job = None
            if job is None:  # nothing left to take: wait for the next look or accept
                self._work.clear()
                continue
            try:
                await self.run(job)
                await self._after(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job %s: unexpected failure in the worker", job.id)

    async def _after(self, job: Job) -> None:
        """Once a job is finished: wake the webhook deliverer, delete its stored inputs."""
        current = await self.store.get(job.id)
        if current is None or current.status not in TERMINAL:
            return  # another worker has it now
        self.on_finish()
        await self._drop_inputs(current)

    async def _drop_inputs(self, job: Job) -> None:
        for _, file_id, _ in job.inputs:
            try:
                await self.blobs.delete(file_id)
            except OSError as exc:  # retention removes it later
                log.warning("job %s: could not delete a stored input (%s)", job.id, exc)

    async def _maintain(self) -> None:
        """Every few minutes: delete finished jobs past `[jobs] retention_seconds`, with their inputs."""
        while True:
            await asyncio.sleep(PURGE_EVERY_SECONDS)
            try:
                for job in await self.store.purge(self.retention):
                    await self._drop_inputs(job)
            except Exception:
                log.exception("purging old jobs failed; retrying later")

    # --- one job ---------------------------------------------------------------------------

    async def run(self, job: Job) -> None:
        started = time.perf_counter()
        key = await self.gate.runtime.keys.get(job.key_id) if job.key_id else None
        if job.cancel_requested:
            await self._finish_unrun(job, key, "canceled", asyncio.CancelledError(), started)
            return
        if job.attempts > self.max_attempts:
            interrupted = UpstreamError(
                f"the job was interrupted {job.attempts - 1} times (its instance stopped); giving up",
                code="job_interrupted",
            )
            await self._finish_unrun(job, key, "failed", interrupted, started)
            return
        try:
            prepared = self._prepare(job)
        except ImagegateError as exc:  # the catalog or the config changed since the job was accepted
            await self._finish_unrun(job, key, "failed", exc, started)
            return
        admission = Admission(Caller(key), prepared, job.request_id, job.reserved, job.images_reserved)
        work = asyncio.create_task(self._produce(job, prepared))
        watch = _Watch(self, job, work)
        watcher = asyncio.create_task(watch.run())
        try:
            completion, result = await work
        except BaseException as exc:
            if watch.reason is None and isinstance(exc, asyncio.CancelledError):
                raise  # this worker is stopping: the job stays leased and is taken over later
            if watch.reason == "lost":
                log.warning("job %s: lease lost to another worker; dropping this run", job.id)
                return
            canceled = watch.reason == "canceled"
            await self.gate.settle(admission, None, asyncio.CancelledError() if canceled else exc, _ms(started))
            if canceled:
                await self.store.finish(job.id, self.owner, "canceled")
            else:
                await self.store.finish(job.id, self.owner, "failed", error=error_object(exc))
            return
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await self.gate.settle(admission, completion, None, _ms(started))
        if not await self.store.finish(job.id, self.owner, "succeeded", result=result):
            log.warning("job %s finished here after its lease passed to another worker", job.id)

    def _prepare(self, job: Job) -> Prepared:
        if job.mode == "text-to-image":
            return self.service.prepare(parse_params(GenerateParams, dict(job.params)), "text-to-image")
        params = parse_params(EditParams, dict(job.params))
        overlays = {item.param for item in job.inputs if item.param in ("mask", "markup")}
        images = sum(1 for item in job.inputs if item.param not in ("mask", "markup"))
        prepared = self.service.prepare(params, "image-edit", images, "mask" in overlays, "markup" in overlays)
        raw = [RawInput(item.param, b"", item.source_url) for item in job.inputs]
        return dataclasses.replace(prepared, input_decisions=url_decisions(raw))

    async def _produce(self, job: Job, prepared: Prepared) -> tuple[Any, bytes]:
        """The request's work under the envelope, as `web.images` runs it; returns the body bytes."""
        deadline = self.service.deadline(prepared)
        outputs = output_bytes(self.service, prepared)
        inputs: EditInputs | None = None
        if job.inputs:
            images, mask = await self._read_inputs(job)
            limits = self.gate.runtime.settings.limits
            probed = probe_inputs(images, mask, limits)
            ticket = await self.envelope.acquire(
                probed.decode_bytes + outputs, param="image", held=probed.upload_bytes, deadline=deadline
            )
            try:
                inputs = await decode_inputs(probed, limits)
                ticket.shrink(probed.held_bytes + outputs)
                del probed, images, mask
                return await self._execute(job, prepared, inputs)
            finally:
                ticket.release()
        param = "n" if prepared.request.n > 1 else "size"
        ticket = await self.envelope.acquire(outputs, param=param, deadline=deadline)
        try:
            return await self._execute(job, prepared, None)
        finally:
            ticket.release()

    async def _execute(self, job: Job, prepared: Prepared, inputs: EditInputs | None) -> tuple[Any, bytes]:
        completion = await self.service.execute(prepared, inputs, job.request_id)
        try:
            items = await self.service.deliver(prepared, completion, job.base_url)
        except ImagegateError as exc:  # produced (and paid for) but not delivered: the ledger says so
            exc.attempts = exc.attempts or tuple(completion.attempts)
            raise
        return completion, b"".join(bytes(part) for part in images_parts(completion, items))

    async def _read_inputs(self, job: Job) -> tuple[list[RawInput], RawInput | None]:
        images: list[RawInput] = []
        mask: RawInput | None = None
        for param, file_id, source_url in job.inputs:
            data = await self.blobs.read(file_id)
            if data is None:
                raise ServiceUnavailableError(f"the job's stored input {param} is gone from result storage")
            if param in ("mask", "markup"):
                mask = RawInput(param, data, source_url)
            else:
                images.append(RawInput(param, data, source_url))
        return images, mask

    async def _finish_unrun(self, job: Job, key: Any, status: JobStatus, error: BaseException, started: float) -> None:
        """A claimed job that ends without running: settle its ledger row, then record the status."""
        await self.gate.settle_unrun(job.request_id, key, job.images_reserved, error, _ms(started))
        failure = None if status == "canceled" else error_object(error)
        await self.store.finish(job.id, self.owner, status, error=failure)


class _Watch:
    """Beside a running job: renew the lease, and cancel the work on a cancel request or a lost lease."""

    def __init__(self, runner: JobRunner, job: Job, work: asyncio.Task[Any]) -> None:
        self.runner = runner
        self.job = job
        self.work = work
        self.reason: str | None = None  # "canceled" | "lost"

    async def run(self) -> None:
        store, lease = self.runner.store, self.runner.lease
        renew_every = lease.total_seconds() / 3
        last_renew = time.monotonic()
        while not self.work.done():
            await asyncio.sleep(min(renew_every, self.runner.poll))
            try:
                if time.monotonic() - last_renew >= renew_every:
                    ours, cancel = await store.renew(self.job.id, self.runner.owner, lease)
                    last_renew = time.monotonic()
                else:
                    ours, cancel = True, await store.cancel_requested(self.job.id)
            except ImagegateError as exc:
                log.warning("job %s: lease renewal failed (%s)", self.job.id, exc.message)
                continue
            if not ours or cancel:
                self.reason = "lost" if not ours else "canceled"
                self.work.cancel()
                return


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
