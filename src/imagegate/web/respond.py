"""Run a prepared image request under accounting: idempotency, admission, the work, settlement."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from imagegate.accounting.gate import Admission, Caller, Gate
from imagegate.accounting.idempotency import StoredResponse
from imagegate.errors import ConflictError, ImagegateError, InvalidRequestError, UpstreamMalformedError
from imagegate.imaging.encoded import Buffer
from imagegate.providers.base import EditInputs
from imagegate.results import Completion
from imagegate.service import ImageService, Prepared
from imagegate.streaming import ImageStream
from imagegate.web.disconnect import unless_disconnected
from imagegate.web.render import SplicedResponse, images_parts
from imagegate.web.responses import JSONResponse

IDEMPOTENCY_HEADER = "idempotency-key"
REPLAYED_HEADER = "idempotent-replayed"


async def respond(request: Request, caller: Caller, prepared: Prepared, inputs: EditInputs | None) -> Response:
    service: ImageService = request.app.state.service
    gate: Gate = request.app.state.gate
    request_id = request.state.request_id
    sent_key = request.headers.get(IDEMPOTENCY_HEADER)
    if sent_key is not None and not 0 < len(sent_key) <= 255:  # refused even where unused (dry run, stream)
        raise InvalidRequestError("Idempotency-Key must be 1-255 characters", param="Idempotency-Key")
    if prepared.dry_run:
        await gate.admit_dry_run(caller, prepared)
        estimate = service.estimate(prepared, request_id)
        return JSONResponse(estimate.body, headers=estimate.headers)
    idem_key = request.headers.get(IDEMPOTENCY_HEADER)
    if idem_key is not None and not prepared.stream:
        replay = await claim_idempotency(request, gate, caller, idem_key, request_id)
        if replay is not None:
            return replay
    else:
        idem_key = None
    try:
        admission = await gate.admit(caller, prepared, request_id, idem_key)
    except BaseException:
        await release_idempotency(gate, caller, idem_key)
        raise
    if prepared.stream:
        return await _stream(request, gate, admission, inputs)
    return await _execute(request, gate, admission, inputs, idem_key)


async def _execute(
    request: Request, gate: Gate, admission: Admission, inputs: EditInputs | None, idem_key: str | None
) -> Response:
    started = time.perf_counter()
    # Only stored files (response_format "url") need this server's address, for their links.
    base_url = str(request.base_url).rstrip("/") if admission.prepared.response_format == "url" else ""
    try:
        completion, parts = await unless_disconnected(request, _serve(gate.service, admission, inputs, base_url))
    except BaseException as exc:
        await gate.settle(admission, None, exc, _ms(started))
        await release_idempotency(gate, admission.caller, idem_key)
        raise
    headers = completion.headers()
    stored = None
    if idem_key is not None:  # stored with the settlement: one transaction
        stored = StoredResponse(admission.caller.key_id, idem_key, 200, headers, b"".join(parts))
    await gate.settle(admission, completion, None, _ms(started), stored)
    return SplicedResponse(parts, headers)


async def _serve(
    service: ImageService, admission: Admission, inputs: EditInputs | None, base_url: str
) -> tuple[Completion, list[Buffer]]:
    """The work of a plain request: route and produce, deliver, render the body (as parts)."""
    prepared = admission.prepared
    completion = await service.execute(prepared, inputs, admission.request_id)
    try:
        items = await service.deliver(prepared, completion, base_url)
    except ImagegateError as exc:  # produced (and paid for) but not delivered: the ledger says so
        exc.attempts = exc.attempts or tuple(completion.attempts)
        raise
    return completion, images_parts(completion, items)


async def _stream(request: Request, gate: Gate, admission: Admission, inputs: EditInputs | None) -> Response:
    started = time.perf_counter()
    prepared = admission.prepared
    try:
        execution = await unless_disconnected(request, gate.service.start(prepared, inputs, admission.request_id))
    except BaseException as exc:
        await gate.settle(admission, None, exc, _ms(started))
        raise
    stream = ImageStream(execution, prepared.request.mode)

    async def accounted() -> AsyncIterator[bytes]:
        error: BaseException | None = None
        try:
            async for chunk in stream.frames():
                yield chunk
        except BaseException as exc:
            error = exc
            raise
        finally:
            if stream.completion is None and error is None:
                error = stream.error or UpstreamMalformedError("the stream ended without a result")
            try:
                await gate.settle(admission, stream.completion, error, _ms(started))
            finally:
                await execution.aclose()

    async def unstarted() -> None:
        # The body never ran (the client left before the first chunk): settle and close here.
        if not admission.settled:
            await gate.settle(admission, None, asyncio.CancelledError(), _ms(started))
        await execution.aclose()

    headers = {"x-imagegate-provider": stream.provider, "cache-control": "no-cache"}
    return _AccountedStream(accounted(), unstarted, headers)


class _AccountedStream(StreamingResponse):
    """An SSE response whose ledger row is settled even if its body iterator never starts."""

    def __init__(self, body: AsyncIterator[bytes], finish: Callable[[], Awaitable[None]], headers: dict[str, str]):
        super().__init__(body, media_type="text/event-stream", headers=headers)
        self._finish = finish

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self._finish()


async def claim_idempotency(
    request: Request, gate: Gate, caller: Caller, idem_key: str, request_id: str
) -> Response | None:
    if not idem_key or len(idem_key) > 255:
        raise InvalidRequestError("Idempotency-Key must be 1-255 characters", param="Idempotency-Key")
    await gate.runtime.ready()
    body_hash = request.state.body_hash
    claim = await gate.runtime.idempotency.claim(caller.key_id, idem_key, body_hash, request_id)
    if claim.state == "new":
        return None
    if claim.state == "replay":
        headers = {**claim.headers, REPLAYED_HEADER: "true"}
        return Response(claim.body, status_code=claim.status, headers=headers, media_type="application/json")
    if claim.state == "conflict":
        raise ConflictError("this Idempotency-Key was used with a different request body", param="Idempotency-Key")
    raise ConflictError(
        "a request with this Idempotency-Key is still in progress; retry later",
        param="Idempotency-Key",
        code="idempotency_in_progress",
    )


async def release_idempotency(gate: Gate, caller: Caller, idem_key: str | None) -> None:
    if idem_key is not None:
        await gate.runtime.idempotency.release(caller.key_id, idem_key)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
