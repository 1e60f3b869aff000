"""Async image requests: accept as a job (202), read it, cancel it.

    POST /v1/images/generations|edits  with ``Prefer: respond-async``, ``"async": true`` or a
                                        ``webhook_url``  -> 202, the job object, ``Location``
    GET    /v1/images/jobs/{id}        -> the job object; `result` holds the usual body once succeeded
    DELETE /v1/images/jobs/{id}        -> cancels (upstream too, when running); the job object

A job is accounted like a synchronous request: admission (scope, rate limit, budget reservation)
and the pending ledger row happen here, before the 202; the worker that runs it settles the row.
A job is visible only to the key that created it (anonymous jobs: to anonymous callers).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from imagegate.accounting.gate import Caller, Gate
from imagegate.accounting.idempotency import StoredResponse
from imagegate.errors import ConflictError, InvalidRequestError, NotFoundError
from imagegate.imaging.probe import sniff_format
from imagegate.inputs import RawInput
from imagegate.jobs.objects import render_job
from imagegate.jobs.runner import JobRunner
from imagegate.jobs.store import TERMINAL, Job, JobStore, NewJob, StoredInput, new_job_id
from imagegate.jobs.webhooks import url_policy
from imagegate.netfetch import check_target
from imagegate.schemas import ImageParams
from imagegate.service import ImageService, Prepared
from imagegate.storage.blobs import BlobStore
from imagegate.web.respond import IDEMPOTENCY_HEADER, claim_idempotency, release_idempotency

JOB_CONTENT_TYPE = "application/json"
CANCEL_WAIT_SECONDS = 5.0
NOT_STORED = frozenset({"async", "webhook_url", "images", "mask", "markup"})


def wants_async(request: Request, params: ImageParams) -> bool:
    """Body `async` when sent, else the `Prefer: respond-async` header; a `webhook_url` implies it."""
    if params.async_ is not None:
        return params.async_ or params.webhook_url is not None
    if params.webhook_url is not None:
        return True
    prefer = request.headers.get("prefer", "")
    return any(part.split("=")[0].strip().lower() == "respond-async" for part in prefer.split(","))


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.jobs
    return store


def stored_params(params: ImageParams) -> dict[str, Any]:
    """The parameters a worker re-validates: as sent (extras included), less inputs and the job options."""
    dumped = params.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {name: value for name, value in dumped.items() if name not in NOT_STORED}


async def accept(
    request: Request, caller: Caller, params: ImageParams, prepared: Prepared, inputs: list[RawInput]
) -> Response:
    """Admit the request, store what a worker needs, answer 202 with the job object."""
    if prepared.stream:
        raise InvalidRequestError("a job cannot be streamed; leave out stream or async", param="stream")
    if prepared.dry_run:
        raise InvalidRequestError("a dry run answers at once; leave out async", param="async")
    _check_plannable(request.app.state.service, prepared)
    settings = request.app.state.settings
    webhook_url = params.webhook_url or (caller.key.webhook_url if caller.key is not None else None)
    if params.webhook_url is not None:  # a key's own URL is checked when it is delivered to
        policy = url_policy(settings.inputs, settings.webhooks.timeout_seconds)
        await check_target(params.webhook_url, "webhook_url", policy, label="webhook_url")
    gate: Gate = request.app.state.gate
    request_id = request.state.request_id
    idem_key = request.headers.get(IDEMPOTENCY_HEADER)
    if idem_key is not None:
        replay = await claim_idempotency(request, gate, caller, idem_key, request_id)
        if replay is not None:
            return replay
    try:
        admission = await gate.admit(caller, prepared, request_id, idem_key)
    except BaseException:
        await release_idempotency(gate, caller, idem_key)
        raise
    started = time.perf_counter()
    job_id = new_job_id()
    headers = {"location": f"/v1/images/jobs/{job_id}", "preference-applied": "respond-async"}

    def answer(created: Job) -> StoredResponse:
        return StoredResponse(caller.key_id, idem_key or "", 202, headers, render_job(created))

    try:
        stored = await _store_inputs(request.app.state.blobs, inputs)
        job = await _store(request).create(
            NewJob(
                id=job_id,
                key_id=caller.key_id,
                request_id=request_id,
                model=prepared.model.id,
                mode=prepared.request.mode,
                params=stored_params(params),
                inputs=stored,
                base_url=str(request.base_url).rstrip("/"),
                reserved=admission.reserved,
                images_reserved=admission.images_reserved,
                webhook_url=webhook_url,
            ),
            answer if idem_key is not None else None,
        )
    except BaseException as exc:
        await gate.settle_unrun(request_id, caller.key, admission.images_reserved, exc, _ms(started))
        await release_idempotency(gate, caller, idem_key)
        raise
    runner: JobRunner = request.app.state.job_runner
    runner.wake()
    return Response(render_job(job), status_code=202, headers=headers, media_type=JOB_CONTENT_TYPE)


def _check_plannable(service: ImageService, prepared: Prepared) -> None:
    """Refuse now what no candidate could run (the prompt or size rules of every offering): a 400
    at accept, as a synchronous request gets, rather than a job that can only fail."""
    refusal: InvalidRequestError | None = None
    for candidate in prepared.candidates:
        try:
            service.plan_for(prepared, candidate)
        except InvalidRequestError as exc:
            refusal = refusal or exc
        else:
            return
    if refusal is not None:
        raise refusal


async def _store_inputs(blobs: BlobStore, inputs: list[RawInput]) -> list[StoredInput]:
    stored = []
    for item in inputs:
        fmt = sniff_format(item.data) or "png"
        stored.append(StoredInput(item.param, (await blobs.put(item.data, fmt)).id, item.source_url))
    return stored


async def _owned(request: Request) -> tuple[Caller, Job]:
    gate: Gate = request.app.state.gate
    caller = await gate.authenticate(request.headers.get("authorization"))
    job_id = request.path_params["job_id"]
    job = await _store(request).get(job_id) if job_id.startswith("job_") and len(job_id) <= 64 else None
    if job is None or job.key_id != caller.key_id:
        raise NotFoundError("no such job", param="job_id", code="job_not_found")
    return caller, job


async def job(request: Request) -> Response:
    """One route for the path, so that a 405 names every method it takes."""
    return await (cancel_job(request) if request.method == "DELETE" else get_job(request))


async def get_job(request: Request) -> Response:
    _, job = await _owned(request)
    return Response(render_job(job), media_type=JOB_CONTENT_TYPE)


async def cancel_job(request: Request) -> Response:
    caller, job = await _owned(request)
    if job.status in TERMINAL:
        raise ConflictError(f"the job has already {job.status}", param="job_id", code="job_finished")
    store = _store(request)
    gate: Gate = request.app.state.gate
    if job.status == "queued" and await store.finish(job.id, None, "canceled"):
        await gate.settle_unrun(job.request_id, caller.key, job.images_reserved, asyncio.CancelledError(), 0.0)
        request.app.state.webhooks.wake()
    else:  # running here or elsewhere: its worker sees the request and cancels the upstream call
        await store.request_cancel(job.id)
        until = time.monotonic() + CANCEL_WAIT_SECONDS
        while time.monotonic() < until:
            current = await store.get(job.id)
            if current is None or current.status in TERMINAL:
                break
            await asyncio.sleep(0.1)
    final = await store.get(job.id)
    assert final is not None
    return Response(render_job(final), media_type=JOB_CONTENT_TYPE)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
