"""The resource envelope on its own: FIFO admission, refusals, release on every way out, trimming."""

from __future__ import annotations

import asyncio
import threading

import pytest

from imagegate.envelope import Envelope, EnvelopeLimits, Ticket
from imagegate.errors import PayloadTooLargeError, ServerBusyError
from imagegate.metrics import Metrics


def _envelope(
    memory: int = 100, in_flight: int = 10, queue: int = 10, wait: float = 30.0, metrics: Metrics | None = None
) -> Envelope:
    return Envelope(EnvelopeLimits(memory, in_flight, queue, wait, trim_after=0), metrics)


async def _until(condition, steps: int = 1000) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def _queue(envelope: Envelope, order: list[str], name: str, nbytes: int) -> asyncio.Task[Ticket]:
    async def one() -> Ticket:
        ticket = await envelope.acquire(nbytes, param="image")
        order.append(name)
        return ticket

    return asyncio.create_task(one())


async def test_admits_in_fifo_order_and_a_big_request_is_not_overtaken():
    envelope = _envelope(memory=100)
    first = await envelope.acquire(50, param="image")
    order: list[str] = []
    big = _queue(envelope, order, "big", 80)
    await _until(lambda: envelope.queued == 1)
    small = _queue(envelope, order, "small", 10)  # would fit now, but the big one is ahead
    await _until(lambda: envelope.queued == 2)
    await asyncio.sleep(0)
    assert order == [] and envelope.reserved == 50
    first.release()
    big_ticket, small_ticket = await big, await small
    assert order == ["big", "small"]
    assert envelope.reserved == 90 and envelope.in_flight == 2 and envelope.queued == 0
    big_ticket.release()
    small_ticket.release()
    assert envelope.reserved == 0 and envelope.in_flight == 0 and envelope.idle()


async def test_requests_in_flight_are_capped():
    envelope = _envelope(memory=1000, in_flight=2)
    a, b = await envelope.acquire(1, param="n"), await envelope.acquire(1, param="n")
    order: list[str] = []
    third = _queue(envelope, order, "third", 1)
    await _until(lambda: envelope.queued == 1)
    assert order == []
    a.release()
    (await third).release()
    b.release()
    assert order == ["third"] and envelope.idle()


async def test_full_queue_is_a_503_with_retry_after_in_openai_shape():
    envelope = _envelope(memory=10, queue=1)
    held = await envelope.acquire(10, param="image")
    waiting = asyncio.create_task(envelope.acquire(5, param="image"))
    await _until(lambda: envelope.queued == 1)
    with pytest.raises(ServerBusyError) as caught:
        await envelope.acquire(5, param="image")
    error = caught.value
    assert error.status == 503
    assert error.body()["error"]["type"] == "server_error" and error.body()["error"]["code"] == "server_busy"
    assert int(error.headers["Retry-After"]) >= 1
    held.release()
    (await waiting).release()
    assert envelope.idle()


async def test_a_wait_that_runs_out_is_a_503_and_leaves_the_queue():
    envelope = _envelope(memory=10, wait=0.01)
    held = await envelope.acquire(10, param="image")
    with pytest.raises(ServerBusyError) as caught:
        await envelope.acquire(5, param="image")
    assert "Retry-After" in caught.value.headers
    assert envelope.queued == 0
    held.release()
    assert envelope.idle()


async def test_a_deadline_already_past_is_a_503_not_a_wait():
    envelope = _envelope(memory=10)
    held = await envelope.acquire(10, param="image")
    deadline = asyncio.get_running_loop().time() - 1
    with pytest.raises(ServerBusyError):
        await envelope.acquire(5, param="image", deadline=deadline)
    held.release()


async def test_a_request_bigger_than_the_whole_budget_is_a_413_naming_the_param():
    envelope = _envelope(memory=100)
    with pytest.raises(PayloadTooLargeError) as caught:
        await envelope.acquire(101, param="size")
    assert caught.value.status == 413 and caught.value.param == "size"
    assert caught.value.code == "image_memory_exceeded"
    assert envelope.idle()


async def test_bytes_the_waiting_requests_already_hold_are_capped():
    envelope = _envelope(memory=100)
    held = await envelope.acquire(100, param="image")
    waiting = asyncio.create_task(envelope.acquire(10, param="image", held=60))
    await _until(lambda: envelope.queued == 1)
    with pytest.raises(ServerBusyError):
        await envelope.acquire(10, param="image", held=60)  # 120 bytes of uploads would wait
    held.release()
    (await waiting).release()


async def test_cancelled_waiter_leaves_the_queue_and_the_next_one_proceeds():
    envelope = _envelope(memory=10)
    held = await envelope.acquire(10, param="image")
    order: list[str] = []
    cancelled = _queue(envelope, order, "cancelled", 10)
    after = _queue(envelope, order, "after", 10)
    await _until(lambda: envelope.queued == 2)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert envelope.queued == 1
    held.release()
    (await after).release()
    assert order == ["after"] and envelope.idle()


async def test_context_manager_releases_on_error_and_on_cancel():
    envelope = _envelope(memory=10)
    with pytest.raises(RuntimeError):
        async with envelope.admit(10, param="image"):
            raise RuntimeError("boom")
    assert envelope.idle()

    entered = asyncio.Event()

    async def hold() -> None:
        async with envelope.admit(10, param="image"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await entered.wait()
    assert envelope.reserved == 10
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert envelope.idle() and envelope.reserved == 0


async def test_release_is_idempotent_and_shrink_wakes_waiters():
    envelope = _envelope(memory=100)
    ticket = await envelope.acquire(90, param="image")
    waiting = asyncio.create_task(envelope.acquire(50, param="image"))
    await _until(lambda: envelope.queued == 1)
    ticket.shrink(40)
    second = await waiting
    assert envelope.reserved == 90
    ticket.shrink(80)  # never grows
    assert ticket.bytes == 40
    ticket.release()
    ticket.release()
    second.release()
    assert envelope.reserved == 0 and envelope.in_flight == 0


async def test_metrics_follow_the_envelope():
    metrics = Metrics()
    envelope = _envelope(memory=10, queue=0, metrics=metrics)
    ticket = await envelope.acquire(7, param="image")
    with pytest.raises(ServerBusyError):
        await envelope.acquire(7, param="image")
    with pytest.raises(PayloadTooLargeError):
        await envelope.acquire(11, param="image")
    text = metrics.render()[0].decode()
    assert "imagegate_envelope_in_flight 1.0" in text
    assert "imagegate_envelope_reserved_bytes 7.0" in text
    assert 'imagegate_envelope_refusals_total{reason="queue_full"} 1.0' in text
    assert 'imagegate_envelope_refusals_total{reason="too_large"} 1.0' in text
    ticket.release()
    assert "imagegate_envelope_in_flight 0.0" in metrics.render()[0].decode()


async def test_idle_envelope_trims_the_heap_in_a_thread():
    trimmed = threading.Event()
    threads: list[str] = []

    def trim() -> None:
        threads.append(threading.current_thread().name)
        trimmed.set()

    envelope = Envelope(EnvelopeLimits(10, 1, 1, 1.0, trim_after=0.01), trim=trim)
    ticket = await envelope.acquire(5, param="image")
    ticket.release()
    assert await asyncio.to_thread(trimmed.wait, 10)
    assert threads and threads[0] != threading.main_thread().name


async def test_trim_is_skipped_when_work_arrives_before_it_fires():
    calls: list[int] = []
    envelope = Envelope(EnvelopeLimits(10, 1, 1, 1.0, trim_after=0.05), trim=lambda: calls.append(1))
    (await envelope.acquire(5, param="image")).release()
    busy = await envelope.acquire(5, param="image")  # cancels the pending trim
    await asyncio.sleep(0.1)
    assert calls == []
    busy.release()


async def test_trim_waits_for_a_whole_idle_period_after_the_last_release():
    loop = asyncio.get_running_loop()
    trimmed_at: list[float] = []
    envelope = Envelope(EnvelopeLimits(10, 1, 1, 1.0, trim_after=0.1), trim=lambda: trimmed_at.append(loop.time()))
    (await envelope.acquire(5, param="image")).release()
    await asyncio.sleep(0.06)
    (await envelope.acquire(5, param="image")).release()  # idle again: the wait starts over
    last_release = loop.time()
    await asyncio.sleep(0.25)
    assert len(trimmed_at) == 1  # one trim for one idle period, from the one timer
    assert trimmed_at[0] >= last_release + 0.1 - 0.01
