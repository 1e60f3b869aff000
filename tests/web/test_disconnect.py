"""`unless_disconnected`: the work runs in the request's task and is cancelled when the client leaves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from imagegate.web.disconnect import ClientDisconnected, unless_disconnected


class _Request:
    """What the watcher reads: ASGI receive messages, fed by the test."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        return await self.messages.get()


async def test_the_result_comes_back_and_the_watcher_is_gone():
    request = _Request()
    before = len(asyncio.all_tasks())
    assert await unless_disconnected(request, asyncio.sleep(0.01, result="done")) == "done"  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_disconnect_cancels_the_work_after_its_cleanup():
    request = _Request()
    cleaned = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.set()
        return "never"

    async def leave() -> None:
        await asyncio.sleep(0.01)
        await request.messages.put({"type": "http.disconnect"})

    leaving = asyncio.create_task(leave())
    with pytest.raises(ClientDisconnected):
        await unless_disconnected(request, work())  # type: ignore[arg-type]
    await leaving
    assert cleaned.is_set()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)  # the task goes on: no cancellation is left pending on it


async def test_other_messages_do_not_count_as_a_disconnect():
    request = _Request()
    await request.messages.put({"type": "http.request", "body": b"", "more_body": False})
    assert await unless_disconnected(request, asyncio.sleep(0.02, result=1)) == 1  # type: ignore[arg-type]


async def test_work_that_swallows_the_cancellation_leaves_the_task_uncancelled():
    request = _Request()

    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "kept going"
        return "slept"

    await request.messages.put({"type": "http.disconnect"})
    assert await unless_disconnected(request, stubborn()) == "kept going"  # type: ignore[arg-type]
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0.01)  # would raise CancelledError if a cancellation were still pending


async def test_a_cancelled_request_stays_cancelled_not_disconnected():
    request = _Request()
    outer = asyncio.create_task(unless_disconnected(request, asyncio.sleep(10)))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer


async def test_a_disconnect_after_the_work_ended_cancels_nothing():
    request = _Request()

    async def quick() -> str:
        await request.messages.put({"type": "http.disconnect"})  # seen by the watcher only later
        return "ok"

    assert await unless_disconnected(request, quick()) == "ok"  # type: ignore[arg-type]
    await asyncio.sleep(0.01)  # a late done-callback must not cancel this task
