"""Submit-then-poll upstreams (fal's queue today; Replicate and BFL next): one polling loop for all.

`poll_until` waits, asks, and backs off (x`factor` up to `most`) until `check` returns a value, never
sleeping past the request deadline: when it passes, the adapter's `on_deadline` error is raised (the
job may have been charged). `cancelling` runs the wait and, if it is cancelled (client gone, deadline)
or fails, asks the upstream to drop the job before the exception goes on, so nobody pays for an image
no one will read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from imagegate.providers.base import CallContext

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """The first wait, its growth per poll and its ceiling, in seconds."""

    first: float
    most: float
    factor: float = 1.5

    def waits(self) -> Callable[[], float]:
        """A generator of successive waits as a callable (each call: the next wait)."""
        state = [self.first]

        def next_wait() -> float:
            wait = state[0]
            state[0] = min(wait * self.factor, self.most)
            return wait

        return next_wait


async def poll_until(
    check: Callable[[], Awaitable[T | None]],
    ctx: CallContext,
    backoff: Backoff,
    on_deadline: Callable[[], BaseException],
) -> T:
    """`check()` after each wait until it returns something other than None; `on_deadline()` is raised
    when the request's deadline passes first (a wait is cut to what is left, never past it)."""
    next_wait = backoff.waits()
    while True:
        remaining = ctx.remaining()
        if remaining <= 0:
            raise on_deadline()
        await asyncio.sleep(min(next_wait(), remaining))
        found = await check()
        if found is not None:
            return found


async def cancelling(work: Awaitable[T], cancel: Callable[[], Awaitable[None]]) -> T:
    """Await `work`; if it is cancelled or raises, await `cancel()` (the upstream drops the job), then
    let the original exception go on."""
    try:
        return await work
    except (asyncio.CancelledError, Exception):
        await cancel()
        raise
