"""`stream=true`: OpenAI's server-sent events, with failover before the first event.

`ImageStream.open()` routes like a normal request until a provider produces its first event
(a partial image, or the whole result for providers that cannot stream), so every failure before
that is an ordinary HTTP error. `events()` then yields the SSE frames: partial images converted to
the requested format, then one `*.completed` event carrying the final image, usage and the
`imagegate` extension. A failure after the first event is sent as an `error` event, which the
official SDK raises.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import pybase64

from imagegate.core.types import Plan
from imagegate.errors import ImagegateError, UpstreamMalformedError, UpstreamTimeoutError
from imagegate.providers.base import CallContext, EditInputs, PartialImage, ProducedImage, StreamDone, StreamEvent
from imagegate.results import FinalImage, Outcome, convert_image, finish_images, result_cost
from imagegate.routing.candidates import Candidate
from imagegate.routing.router import Attempt

if TYPE_CHECKING:
    from imagegate.service import ImageService, Prepared


@dataclass
class _Started:
    plan: Plan
    first: StreamEvent
    rest: AsyncIterator[StreamEvent] | None
    images: list[FinalImage] | None = None


def sse(event: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class ImageStream:
    def __init__(self, service: ImageService, prepared: Prepared, inputs: EditInputs | None, request_id: str) -> None:
        self.service = service
        self.prepared = prepared
        self.inputs = inputs
        self.request_id = request_id
        self.prefix = "image_edit" if prepared.request.mode == "image-edit" else "image_generation"
        self.ctx = CallContext(request_id, service.deadline())
        self.candidate: Candidate | None = None
        self.started: _Started | None = None
        self.attempts: list[Attempt] = []
        self.final_body: dict[str, Any] | None = None
        self.error: ImagegateError | None = None

    @property
    def provider(self) -> str:
        return self.candidate.offering.provider if self.candidate else ""

    async def open(self) -> None:
        routed = await self.service.router.run(
            self.service.ordered(self.prepared), self.prepared.model.id, self.ctx.deadline, self._attempt
        )
        self.candidate, self.started, self.attempts = routed.candidate, routed.value, routed.attempts

    async def _attempt(self, candidate: Candidate) -> _Started:
        plan = self.service.plan_for(self.prepared, candidate)
        if candidate.offering.caps.streaming:
            job = dataclasses.replace(plan.jobs[0], partial_images=self.prepared.partial_images)
            rest = candidate.provider.stream(job, self.inputs, self.ctx).__aiter__()
            first = await rest.__anext__()
            return _Started(plan, first, rest)
        result = await self.service.call(candidate, plan, self.inputs, self.ctx)
        images = await finish_images(plan, result, candidate.offering.provider)
        return _Started(plan, StreamDone(result), None, images)

    async def events(self) -> AsyncIterator[bytes]:
        assert self.started is not None and self.candidate is not None
        started = self.started
        event: StreamEvent = started.first
        try:
            while isinstance(event, PartialImage):
                yield await self._partial(started.plan, event)
                event = await self._next(started.rest)
            yield await self._completed(started, event)
        except ImagegateError as exc:
            self.error = exc
            yield sse("error", {"type": "error", **exc.body()})

    async def _next(self, rest: AsyncIterator[StreamEvent] | None) -> StreamEvent:
        if rest is None:
            raise UpstreamMalformedError("stream ended early")
        try:
            async with asyncio.timeout(self.ctx.remaining()):
                return await rest.__anext__()
        except StopAsyncIteration:
            raise UpstreamMalformedError(f"{self.provider} ended the stream without a completed event") from None
        except TimeoutError:
            raise UpstreamTimeoutError(f"{self.provider} did not finish before the request deadline") from None

    def _common(self, image: FinalImage, quality: str | None, background: str | None) -> dict[str, Any]:
        return {
            "b64_json": pybase64.b64encode(image.data).decode("ascii"),
            "created_at": int(time.time()),
            "size": f"{image.width}x{image.height}",
            "quality": quality or "auto",
            "background": background or "auto",
            "output_format": image.format,
        }

    async def _partial(self, plan: Plan, event: PartialImage) -> bytes:
        image = await convert_image(plan, ProducedImage(event.data, event.format), self.provider)
        job = plan.jobs[0]
        payload = {
            "type": f"{self.prefix}.partial_image",
            **self._common(image, job.quality, job.background),
            "partial_image_index": event.partial_image_index,
        }
        return sse(payload["type"], payload)

    async def _completed(self, started: _Started, event: StreamDone) -> bytes:
        assert self.candidate is not None
        result = event.result
        images = started.images or await finish_images(started.plan, result, self.provider)
        cost = result_cost(self.candidate.offering, started.plan, result, images)
        outcome = Outcome(started.plan, result, images)
        body = self.service.body(self.prepared, self.candidate, outcome, cost, self.attempts, self.request_id)
        payload = {"type": f"{self.prefix}.completed", **self._common(images[0], result.quality, result.background)}
        if result.usage:
            payload["usage"] = dict(result.usage)
        payload["imagegate"] = body["imagegate"]
        self.final_body = {**body, "data": [{}] * len(images)}
        return sse(payload["type"], payload)
