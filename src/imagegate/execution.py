"""A routed request: the provider that produced a first event, then the events up to the `Completion`.

`ImageService.start` routes (retries, failover, deadline) until a provider produces its first
event: the whole result for an ordinary request or a provider that cannot stream, a partial image
for a streamed one. `Execution.events()` then yields the converted partial images, if any, and one
`Completion`; `Execution.completion()` is the same without the partials. Streaming and
non-streaming requests take this one path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass

from imagegate.core.types import Decision, Plan
from imagegate.errors import UpstreamMalformedError, UpstreamTimeoutError
from imagegate.providers.base import CallContext, PartialImage, ProducedImage, StreamDone, StreamEvent
from imagegate.results import (
    Completion,
    FinalImage,
    Partial,
    convert_image,
    finish_images,
    priced_attempts,
    result_cost,
)
from imagegate.routing.candidates import Candidate
from imagegate.routing.router import Attempt, Routed


@dataclass(frozen=True)
class Started:
    """What the successful attempt produced: its plan, its first event, the rest of a stream."""

    plan: Plan
    first: StreamEvent
    rest: AsyncIterator[StreamEvent] | None = None
    images: tuple[FinalImage, ...] | None = None  # already converted (non-streamed results)


@dataclass(frozen=True)
class RequestFacts:
    """The request-level facts a completion reports."""

    request_id: str
    model: str
    mode: str
    passthrough: Mapping[str, object]
    routing: Decision | None = None  # the strategy, its choice and the runner-up
    inputs: tuple[Decision, ...] = ()  # how URL inputs were obtained


async def close_stream(rest: AsyncIterator[StreamEvent] | None) -> None:
    if isinstance(rest, AsyncGenerator):
        await rest.aclose()


class Execution:
    def __init__(self, facts: RequestFacts, ctx: CallContext, routed: Routed[Started], started_at: float) -> None:
        self.facts = facts
        self.ctx = ctx
        self.candidate: Candidate = routed.candidate
        self.attempts: tuple[Attempt, ...] = routed.attempts
        self._started = routed.value
        self._started_at = started_at

    @property
    def provider(self) -> str:
        return self.candidate.offering.provider

    async def events(self) -> AsyncIterator[Partial | Completion]:
        """The converted partial images (streamed requests only), then the completion."""
        started = self._started
        event = started.first
        while isinstance(event, PartialImage):
            yield await self._partial(started.plan, event)
            event = await self._next(started.rest)
        yield await self._complete(started, event)

    async def completion(self) -> Completion:
        """The completion alone: partial images, if the provider streamed any, are skipped unconverted
        (no async generator is left for the loop to finalize)."""
        started = self._started
        event = started.first
        while isinstance(event, PartialImage):
            event = await self._next(started.rest)
        return await self._complete(started, event)

    async def aclose(self) -> None:
        """Close the provider's stream (its upstream connection) if it is still open."""
        await close_stream(self._started.rest)

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

    async def _partial(self, plan: Plan, event: PartialImage) -> Partial:
        image = await convert_image(plan, ProducedImage(event.data, event.format), self.provider)
        job = plan.jobs[0]
        return Partial(image, event.partial_image_index, job.quality, job.background)

    async def _complete(self, started: Started, done: StreamDone) -> Completion:
        result = done.result
        images = started.images or await finish_images(started.plan, result, self.provider)
        cost = result_cost(self.candidate.offering, started.plan, result, images)
        facts = self.facts
        return Completion(
            request_id=facts.request_id,
            provider=self.provider,
            model=facts.model,
            mode=facts.mode,
            plan=started.plan,
            result=result,
            images=images,
            cost=cost,
            attempts=priced_attempts(self.attempts, cost),
            passthrough=facts.passthrough,
            routing=facts.routing,
            inputs=facts.inputs,
            created=int(time.time()),
            latency_ms=(time.perf_counter() - self._started_at) * 1000,
        )
