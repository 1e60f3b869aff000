"""The shared polling loop (imagegate.providers.polling): backoff, the deadline, cancelling upstream."""

from __future__ import annotations

import asyncio

import pytest

from imagegate.errors import UpstreamTimeoutError
from imagegate.providers.base import CallContext
from imagegate.providers.polling import Backoff, cancelling, poll_until


def _ctx(seconds: float) -> CallContext:
    return CallContext("req_test", asyncio.get_running_loop().time() + seconds)


def test_backoff_grows_by_its_factor_up_to_its_ceiling() -> None:
    next_wait = Backoff(0.1, 0.5, 2.0).waits()
    assert [round(next_wait(), 3) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]


async def test_poll_until_returns_the_first_answer_and_waits_between_checks() -> None:
    answers = iter([None, None, "done"])
    calls: list[float] = []

    async def check() -> str | None:
        calls.append(asyncio.get_running_loop().time())
        return next(answers)

    assert await poll_until(check, _ctx(5), Backoff(0.02, 0.05), lambda: AssertionError()) == "done"
    assert len(calls) == 3 and calls[1] - calls[0] >= 0.025  # the second wait grew (0.03)


async def test_poll_until_never_sleeps_past_the_deadline() -> None:
    async def never() -> None:
        return None

    started = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamTimeoutError):
        await poll_until(never, _ctx(0.15), Backoff(10, 10), lambda: UpstreamTimeoutError("too late"))
    assert asyncio.get_running_loop().time() - started < 1.0  # the 10 s wait was cut to the deadline


async def test_cancelling_drops_the_upstream_job_when_cancelled_or_failed() -> None:
    dropped: list[str] = []

    async def drop() -> None:
        dropped.append("job")

    task = asyncio.create_task(cancelling(asyncio.sleep(10), drop))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert dropped == ["job"]

    async def fails() -> None:
        raise UpstreamTimeoutError("boom")

    with pytest.raises(UpstreamTimeoutError):
        await cancelling(fails(), drop)
    assert dropped == ["job", "job"]
    assert await cancelling(asyncio.sleep(0, "ok"), drop) == "ok" and len(dropped) == 2
