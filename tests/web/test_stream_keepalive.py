"""SSE keepalive comments: a stream whose next event is slow sends `: keepalive` lines meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from imagegate.streaming import KEEPALIVE, ImageStream


class SlowExecution:
    """Stands in for an Execution whose events come slowly; records whether it was closed."""

    def __init__(self, gaps: list[float]) -> None:
        self.gaps = gaps
        self.closed = False
        self.provider = "fake"

    async def events(self) -> AsyncIterator[Any]:
        try:
            for gap in self.gaps:
                await asyncio.sleep(gap)
                yield object()  # neither Partial nor Completion: rendered by a stub below
        finally:
            self.closed = True


class Stream(ImageStream):
    def _completed(self, completion: Any) -> bytes:  # type: ignore[override]
        return b"event\n\n"


async def test_a_slow_event_is_preceded_by_keepalive_comments() -> None:
    stream = Stream(SlowExecution([0.0, 0.35]), "text-to-image", keepalive_seconds=0.1)  # type: ignore[arg-type]
    frames = [frame async for frame in stream.frames()]
    assert frames[0] == b"event\n\n" and frames[-1] == b"event\n\n"
    assert 2 <= frames.count(KEEPALIVE) <= 4  # about one per 0.1 s of the 0.35 s wait


async def test_closing_the_stream_mid_wait_closes_the_upstream_events() -> None:
    execution = SlowExecution([10.0])
    stream = Stream(execution, "text-to-image", keepalive_seconds=0.05)  # type: ignore[arg-type]
    frames = stream.frames()
    assert await anext(frames) == KEEPALIVE
    await frames.aclose()  # the client went away
    assert execution.closed
