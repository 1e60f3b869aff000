"""The process-wide resource envelope for image work (DESIGN.md section 9).

Two budgets bound what the process holds for image requests at any moment:

- image memory: each request reserves its estimated footprint in bytes (decoded input pixels and
  the outputs it will produce, see :mod:`imagegate.footprint`) before it decodes or renders;
- requests in flight: at most ``max_in_flight`` image requests hold a reservation at once.

Work that does not fit waits in one FIFO queue, at most ``max_wait`` seconds and never past the
request's deadline. A full queue, or a wait that runs out, is a 503 ``server_busy`` with
``Retry-After``. A request bigger than the whole budget can never fit and is a 413 naming its
parameter, never an endless wait.

Fairness is strict FIFO: a waiter is admitted only when everyone ahead of it has been, so a big
request at the head holds back the small ones behind it until enough memory frees up (head-of-line
blocking), and a stream of small requests can never starve a big one. Requests arriving while
anyone waits join the queue even if they would fit.

When the envelope goes idle (nothing reserved, nobody waiting) for ``trim_after`` seconds, freed
heap is handed back to the OS with glibc's ``malloc_trim(0)`` in a thread (see
:mod:`imagegate.imaging.memory`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from imagegate.config import Limits
from imagegate.errors import PayloadTooLargeError, ServerBusyError
from imagegate.imaging.memory import can_trim, trim_heap
from imagegate.metrics import Metrics

MIB = 1024 * 1024


@dataclass(frozen=True)
class EnvelopeLimits:
    """The envelope's settings, taken from ``[limits]``."""

    memory_bytes: int
    max_in_flight: int
    max_queue: int
    max_wait: float
    trim_after: float = 2.0


class Ticket:
    """One admitted request's reservation; `release` is idempotent, `shrink` gives bytes back early."""

    def __init__(self, envelope: Envelope, nbytes: int) -> None:
        self._envelope = envelope
        self.bytes = nbytes
        self.released = False
        self._since = time.monotonic()

    def shrink(self, nbytes: int) -> None:
        """Lower the reservation to ``nbytes`` (never raises it): what was freed goes to the waiters."""
        if self.released or nbytes >= self.bytes:
            return
        freed, self.bytes = self.bytes - max(nbytes, 0), max(nbytes, 0)
        self._envelope._give_back(freed, requests=0)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._envelope._give_back(self.bytes, requests=1, held_since=self._since)


@dataclass
class _Waiter:
    nbytes: int
    held: int
    future: asyncio.Future[Ticket]


class Envelope:
    """Admission control for image requests; one per app (``app.state.envelope``)."""

    def __init__(
        self, limits: EnvelopeLimits, metrics: Metrics | None = None, trim: Callable[[], object] | None = None
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.reserved = 0
        self.in_flight = 0
        self._queue: deque[_Waiter] = deque()
        self._queued_held = 0
        self._trim = trim
        self._trim_handle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0  # loop time of the last release that left the envelope idle
        self._hold_seconds = 1.0  # moving average of how long a reservation is held, for Retry-After
        if metrics is not None:
            metrics.watch_envelope(lambda: self.in_flight, lambda: len(self._queue), lambda: self.reserved)

    # --- state -----------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

    def idle(self) -> bool:
        return self.in_flight == 0 and not self._queue

    def _fits(self, nbytes: int) -> bool:
        return self.in_flight < self.limits.max_in_flight and self.reserved + nbytes <= self.limits.memory_bytes

    # --- admission -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def admit(
        self, nbytes: int, *, param: str, held: int = 0, deadline: float | None = None
    ) -> AsyncIterator[Ticket]:
        """Reserve ``nbytes`` for the body of the ``async with``; released on every way out."""
        ticket = await self.acquire(nbytes, param=param, held=held, deadline=deadline)
        try:
            yield ticket
        finally:
            ticket.release()

    async def acquire(self, nbytes: int, *, param: str, held: int = 0, deadline: float | None = None) -> Ticket:
        """Reserve ``nbytes`` (waiting in FIFO order if needed); the caller must `release` the ticket.

        ``param`` names the request parameter blamed when ``nbytes`` exceeds the whole budget;
        ``held`` is memory the waiting request already holds (its uploaded bytes), counted against
        the queue; ``deadline`` is the request's deadline on the event loop clock.
        """
        nbytes = max(0, nbytes)
        if nbytes > self.limits.memory_bytes:
            self._refused("too_large")
            raise PayloadTooLargeError(
                f"this request needs about {nbytes / MIB:.0f} MiB of image memory; the server's whole budget is "
                f"{self.limits.memory_bytes / MIB:.0f} MiB: ask for fewer or smaller images",
                param=param,
                code="image_memory_exceeded",
            )
        if not self._queue and self._fits(nbytes):
            return self._grant(nbytes)
        if len(self._queue) >= self.limits.max_queue or self._queued_held + held > self.limits.memory_bytes:
            self._refused("queue_full")
            raise self._busy("the server is at capacity for image work and its queue is full")
        return await self._wait(nbytes, held, deadline)

    async def _wait(self, nbytes: int, held: int, deadline: float | None) -> Ticket:
        loop = asyncio.get_running_loop()
        timeout = self.limits.max_wait
        if deadline is not None:
            timeout = min(timeout, deadline - loop.time())
        waiter = _Waiter(nbytes, held, loop.create_future())
        self._queue.append(waiter)
        self._queued_held += held
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                return await asyncio.shield(waiter.future)
        except TimeoutError:
            if waiter.future.done() and not waiter.future.cancelled():
                return waiter.future.result()  # granted in the same tick the timer fired
            self._refused("wait_timeout")
            raise self._busy("the server was at capacity for image work for the whole wait") from None
        except BaseException:
            if waiter.future.done() and not waiter.future.cancelled():
                waiter.future.result().release()
            raise
        finally:
            self._dequeue(waiter)

    def _dequeue(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(waiter)
            self._queued_held -= waiter.held
        if not waiter.future.done():
            waiter.future.cancel()
        self._wake()

    def _grant(self, nbytes: int) -> Ticket:
        self.reserved += nbytes
        self.in_flight += 1
        return Ticket(self, nbytes)

    def _give_back(self, nbytes: int, requests: int, held_since: float | None = None) -> None:
        self.reserved -= nbytes
        self.in_flight -= requests
        if held_since is not None:
            self._hold_seconds = 0.8 * self._hold_seconds + 0.2 * (time.monotonic() - held_since)
        self._wake()
        if self.idle():
            self._schedule_trim()

    def _wake(self) -> None:
        """Admit waiters from the head while the head fits (strict FIFO)."""
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # timed out or cancelled; its own `finally` removes it
                self._queue.popleft()
                self._queued_held -= head.held
                continue
            if not self._fits(head.nbytes):
                return
            self._queue.popleft()
            self._queued_held -= head.held
            head.future.set_result(self._grant(head.nbytes))

    # --- refusals --------------------------------------------------------------------------

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue ahead drained at the observed pace."""
        rounds = 1 + len(self._queue) / max(1, self.limits.max_in_flight)
        return max(1, min(60, math.ceil(self._hold_seconds * rounds)))

    def _busy(self, message: str) -> ServerBusyError:
        seconds = self.retry_after()
        return ServerBusyError(f"{message}; retry in {seconds} s", headers={"Retry-After": str(seconds)})

    def _refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.observe_envelope_refusal(reason)

    # --- giving memory back ----------------------------------------------------------------

    def _schedule_trim(self) -> None:
        """Trim once the envelope has stayed idle for `trim_after` seconds. One timer at a time: a
        release while it is pending only moves `_idle_since`, and the timer, when it fires early,
        sets itself again for the rest (no timer made and cancelled per request)."""
        if self._trim is None or self.limits.trim_after <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop: nothing to schedule on
            return
        self._idle_since = loop.time()
        if self._trim_handle is None:
            self._trim_handle = loop.call_at(self._idle_since + self.limits.trim_after, self._trim_if_idle, loop)

    def _trim_if_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        self._trim_handle = None
        if not self.idle():  # busy again: the release that next leaves it idle schedules a new timer
            return
        due = self._idle_since + self.limits.trim_after
        if loop.time() < due:  # it was busy for part of the wait: wait for the rest
            self._trim_handle = loop.call_at(due, self._trim_if_idle, loop)
        elif self._trim is not None:
            loop.run_in_executor(None, self._trim)


def build_envelope(limits: Limits, metrics: Metrics | None = None) -> Envelope:
    """The envelope configured by ``[limits]``, trimming the heap when idle where glibc allows it."""
    settings = EnvelopeLimits(
        memory_bytes=limits.image_memory_bytes,
        max_in_flight=limits.max_image_requests_in_flight,
        max_queue=limits.image_queue_length,
        max_wait=limits.image_queue_wait_seconds,
        trim_after=limits.memory_trim_idle_seconds,
    )
    return Envelope(settings, metrics, trim_heap if can_trim() else None)
