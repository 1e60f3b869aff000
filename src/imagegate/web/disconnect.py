"""Cancel the work of a request whose client went away (so queued upstream jobs get cancelled)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready."""


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work` in this task; if the client disconnects first, cancel it and raise ClientDisconnected.

    One watcher task reads the ASGI receive channel and, on ``http.disconnect``, cancels this task;
    the work runs here (no second task, no `asyncio.wait`). Call only after the body has been read:
    the watcher consumes receive messages.
    """
    task = asyncio.current_task()
    if task is None:  # not in a task (cannot happen under an ASGI server): nothing to cancel
        return await work
    state = _Watch(task)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    watcher.add_done_callback(state.disconnected)
    try:
        return await work
    except asyncio.CancelledError:
        if state.fired:
            state.fired = False
            if task.uncancel() == 0:  # our cancellation alone: the client left
                raise ClientDisconnected from None
        raise
    finally:
        state.over = True  # a done-callback already scheduled must not cancel what follows
        if state.fired:  # the work swallowed our cancellation: withdraw it
            task.uncancel()
        watcher.cancel()


class _Watch:
    """The watcher's done-callback: cancel the request's task once, while its work is running."""

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.fired = False  # the task was cancelled because the client left (and not uncancelled yet)
        self.over = False  # the work is over: too late to cancel

    def disconnected(self, watcher: asyncio.Future[None]) -> None:
        if self.over or watcher.cancelled() or watcher.exception() is not None:
            return
        self.fired = True
        self.task.cancel()
