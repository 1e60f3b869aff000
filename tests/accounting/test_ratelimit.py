"""Rate limits: the same behaviour from the in-memory and the Redis limiter.

The Redis variant talks to ``$IMAGEGATE_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) under a
unique key prefix per test and deletes only its own keys. Unreachable Redis skips those tests, except
with ``CI=true``, where it fails them.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from imagegate.accounting.ratelimit import (
    Limits,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    Verdict,
    build_rate_limiter,
    refusal,
)
from imagegate.errors import RateLimitError
from imagegate.metrics import Metrics

REDIS_URL = os.environ.get("IMAGEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
UNREACHABLE_REDIS = "redis://127.0.0.1:1"
START = calendar.timegm((2030, 5, 17, 12, 0, 50))  # 10 s before a minute boundary, mid-day UTC


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """One limiter implementation under test. `short_window` is the window used by tests that let it pass:
    memory moves its fake clock, Redis (whose window runs on the server's clock) really waits."""

    kind: str
    clock: FakeClock
    short_window: float
    factory: Callable[[FakeClock, float], RateLimiter]
    made: list[RateLimiter] = field(default_factory=list)

    def make(self, window_seconds: float = 60.0) -> RateLimiter:
        limiter = self.factory(self.clock, window_seconds)
        self.made.append(limiter)
        return limiter

    async def elapse(self, seconds: float) -> None:
        if self.kind == "redis":
            await asyncio.sleep(seconds)
        self.clock.now += seconds


async def _redis_or_skip() -> None:
    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        reason = f"Redis at {REDIS_URL} is unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        await client.aclose()


async def _delete_prefix(prefix: str) -> None:
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def _own_prefix() -> AsyncIterator[str]:
    """A fresh key prefix on a reachable Redis; its keys are deleted afterwards."""
    await _redis_or_skip()
    prefix = f"ig:test:{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        await _delete_prefix(prefix)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    async with _own_prefix() as prefix:
        yield prefix


def _memory_backend() -> Backend:
    return Backend(
        "memory", FakeClock(START), 60.0, lambda clock, window: MemoryRateLimiter(clock, window_seconds=window)
    )


def _redis_backend(prefix: str) -> Backend:
    def factory(clock: FakeClock, window: float) -> RateLimiter:
        return RedisRateLimiter(REDIS_URL, clock=clock, window_seconds=window, prefix=prefix)

    return Backend("redis", FakeClock(START), 1.0, factory)


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "memory":
            chosen = _memory_backend()
        else:
            chosen = _redis_backend(await stack.enter_async_context(_own_prefix()))
        yield chosen
        for limiter in chosen.made:
            await limiter.aclose()


async def _burst(limiter: RateLimiter, count: int, limits: Limits, key: str = "k1") -> list[Verdict]:
    return [await limiter.acquire(key, limits, 0) for _ in range(count)]


# --- requests per minute ----------------------------------------------------------------------


async def test_rpm_admits_exactly_the_limit_of_rapid_requests(backend: Backend) -> None:
    limiter = backend.make()
    verdicts = await _burst(limiter, 30, Limits(rpm=10, images_per_day=None))
    assert [v.allowed for v in verdicts] == [True] * 10 + [False] * 20
    eleventh = verdicts[10]
    assert eleventh.reason == "rpm"
    assert eleventh.limit == 10
    assert eleventh.retry_after is not None and 0 < eleventh.retry_after <= 60


async def test_rpm_holds_under_concurrency(backend: Backend) -> None:
    limiter = backend.make()
    limits = Limits(rpm=10, images_per_day=None)
    verdicts = await asyncio.gather(*(limiter.acquire("k1", limits, 0) for _ in range(30)))
    assert sum(v.allowed for v in verdicts) == 10


async def test_requests_are_admitted_again_once_the_window_has_passed(backend: Backend) -> None:
    window = backend.short_window
    limiter = backend.make(window)
    limits = Limits(rpm=10, images_per_day=None)
    assert sum(v.allowed for v in await _burst(limiter, 15, limits)) == 10
    await backend.elapse(window * 1.1)
    assert sum(v.allowed for v in await _burst(limiter, 15, limits)) == 10


async def test_window_slides_instead_of_resetting(backend: Backend) -> None:
    window = backend.short_window
    limiter = backend.make(window)
    limits = Limits(rpm=10, images_per_day=None)
    assert all(v.allowed for v in await _burst(limiter, 5, limits))
    await backend.elapse(window * 0.5)
    assert [v.allowed for v in await _burst(limiter, 6, limits)] == [True] * 5 + [False]
    await backend.elapse(window * 0.6)  # the first five left the window, the second five did not
    assert [v.allowed for v in await _burst(limiter, 6, limits)] == [True] * 5 + [False]


async def test_keys_are_limited_independently(backend: Backend) -> None:
    limiter = backend.make()
    limits = Limits(rpm=2, images_per_day=None)
    assert sum(v.allowed for v in await _burst(limiter, 3, limits, key="a")) == 2
    assert sum(v.allowed for v in await _burst(limiter, 3, limits, key="b")) == 2


async def test_no_limits_admit_everything(backend: Backend) -> None:
    limiter = backend.make()
    verdicts = [await limiter.acquire("k1", Limits(None, None), 5) for _ in range(50)]
    assert all(v.allowed for v in verdicts)


# --- images per day ---------------------------------------------------------------------------


async def test_images_per_day_counts_and_refuses_without_consuming(backend: Backend) -> None:
    limiter = backend.make()
    limits = Limits(rpm=None, images_per_day=10)
    assert (await limiter.acquire("k1", limits, 4)).allowed
    assert (await limiter.acquire("k1", limits, 4)).allowed
    refused = await limiter.acquire("k1", limits, 3)
    assert not refused.allowed
    assert refused.reason == "images_per_day"
    assert refused.limit == 10
    assert refused.retry_after is not None and 0 < refused.retry_after <= 86_400
    assert (await limiter.acquire("k1", limits, 2)).allowed  # the refused 3 took nothing
    assert not (await limiter.acquire("k1", limits, 1)).allowed


async def test_refund_images_gives_images_back(backend: Backend) -> None:
    limiter = backend.make()
    limits = Limits(rpm=None, images_per_day=4)
    assert (await limiter.acquire("k1", limits, 4)).allowed
    assert not (await limiter.acquire("k1", limits, 1)).allowed
    await limiter.refund_images("k1", 3)
    assert (await limiter.acquire("k1", limits, 3)).allowed
    assert not (await limiter.acquire("k1", limits, 1)).allowed


async def test_refund_never_goes_below_zero(backend: Backend) -> None:
    limiter = backend.make()
    limits = Limits(rpm=None, images_per_day=2)
    await limiter.refund_images("unknown", 5)
    assert (await limiter.acquire("k1", limits, 1)).allowed
    await limiter.refund_images("k1", 50)
    assert (await limiter.acquire("k1", limits, 2)).allowed
    assert not (await limiter.acquire("k1", limits, 1)).allowed


async def test_images_reset_at_utc_midnight(backend: Backend) -> None:
    backend.clock.now = calendar.timegm((2030, 5, 17, 23, 59, 30))
    limiter = backend.make()
    limits = Limits(rpm=None, images_per_day=3)
    assert (await limiter.acquire("k1", limits, 3)).allowed
    refused = await limiter.acquire("k1", limits, 1)
    assert refused.retry_after == pytest.approx(30)
    backend.clock.now += 31  # only the day changes: the images counter is keyed by the gateway's UTC day
    assert (await limiter.acquire("k1", limits, 3)).allowed


async def test_rpm_refusal_consumes_no_images(backend: Backend) -> None:
    window = backend.short_window
    limiter = backend.make(window)
    limits = Limits(rpm=1, images_per_day=10)
    assert (await limiter.acquire("k1", limits, 5)).allowed
    refused = await limiter.acquire("k1", limits, 5)
    assert (refused.allowed, refused.reason) == (False, "rpm")
    await backend.elapse(window * 1.1)
    assert (await limiter.acquire("k1", limits, 5)).allowed


async def test_images_refusal_consumes_no_request(backend: Backend) -> None:
    limiter = backend.make()
    limits = Limits(rpm=2, images_per_day=1)
    assert (await limiter.acquire("k1", limits, 1)).allowed
    assert not (await limiter.acquire("k1", limits, 1)).allowed
    assert (await limiter.acquire("k1", limits, 0)).allowed  # still the 2nd request of the minute
    refused = await limiter.acquire("k1", limits, 0)
    assert (refused.allowed, refused.reason) == (False, "rpm")


# --- memory only: exact timing on an injected clock -------------------------------------------


async def test_memory_retry_after_is_when_the_oldest_request_leaves() -> None:
    clock = FakeClock(START)
    limiter = MemoryRateLimiter(clock)
    limits = Limits(rpm=10, images_per_day=None)
    await _burst(limiter, 10, limits)
    clock.now += 20
    refused = await limiter.acquire("k1", limits, 0)
    assert refused.retry_after == pytest.approx(40)


async def test_memory_limit_holds_across_a_minute_boundary() -> None:
    clock = FakeClock(START)  # hh:mm:50
    limiter = MemoryRateLimiter(clock)
    limits = Limits(rpm=10, images_per_day=None)
    for _ in range(10):
        assert (await limiter.acquire("k1", limits, 0)).allowed
        clock.now += 1
    clock.now += 5  # the next minute has begun; a fixed window would admit 10 more here
    assert not (await limiter.acquire("k1", limits, 0)).allowed
    clock.now = START + 60  # the first request (at START) has left the window
    assert [v.allowed for v in await _burst(limiter, 2, limits)] == [True, False]


# --- Redis only -------------------------------------------------------------------------------


async def test_two_redis_limiters_share_one_limit(redis_prefix: str) -> None:
    first = RedisRateLimiter(REDIS_URL, prefix=redis_prefix)
    second = RedisRateLimiter(REDIS_URL, prefix=redis_prefix)
    limits = Limits(rpm=10, images_per_day=None)
    try:
        calls = [(first if i % 2 else second).acquire("shared", limits, 0) for i in range(30)]
        verdicts = await asyncio.gather(*calls)
    finally:
        await first.aclose()
        await second.aclose()
    assert sum(v.allowed for v in verdicts) == 10


async def test_two_redis_limiters_share_the_daily_images(redis_prefix: str) -> None:
    first = RedisRateLimiter(REDIS_URL, prefix=redis_prefix)
    second = RedisRateLimiter(REDIS_URL, prefix=redis_prefix)
    limits = Limits(rpm=None, images_per_day=10)
    try:
        calls = [(first if i % 2 else second).acquire("shared", limits, 3) for i in range(8)]
        verdicts = await asyncio.gather(*calls)
    finally:
        await first.aclose()
        await second.aclose()
    assert sum(v.allowed for v in verdicts) == 3


async def test_unreachable_redis_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    limiter = RedisRateLimiter(UNREACHABLE_REDIS, metrics=metrics)
    limits = Limits(rpm=1, images_per_day=1)
    with caplog.at_level(logging.WARNING, logger="imagegate.ratelimit"):
        first = await limiter.acquire("k1", limits, 1)
        second = await limiter.acquire("k1", limits, 1)
        await limiter.refund_images("k1", 1)
    await limiter.aclose()
    assert first.allowed and second.allowed
    warnings = [r for r in caplog.records if r.name == "imagegate.ratelimit" and r.levelno == logging.WARNING]
    assert len(warnings) == 1  # rate-limited: at most one warning per 30 s
    assert "failing open" in warnings[0].getMessage()
    assert metrics.registry.get_sample_value("imagegate_ratelimit_backend_errors_total") == 3


async def test_unreachable_redis_without_metrics_still_fails_open() -> None:
    limiter = RedisRateLimiter(UNREACHABLE_REDIS)
    assert (await limiter.acquire("k1", Limits(rpm=0, images_per_day=0), 1)).allowed
    await limiter.aclose()


# --- wiring and errors ------------------------------------------------------------------------


async def test_build_rate_limiter_picks_the_backend() -> None:
    memory = build_rate_limiter(None)
    assert isinstance(memory, MemoryRateLimiter)
    redis_limiter = build_rate_limiter(UNREACHABLE_REDIS, Metrics())
    assert isinstance(redis_limiter, RedisRateLimiter)
    await memory.aclose()
    await redis_limiter.aclose()


def test_refusal_for_rpm_is_a_429_with_retry_after() -> None:
    error = refusal(Verdict(False, retry_after=12.3, reason="rpm", limit=10))
    assert isinstance(error, RateLimitError)
    assert error.status == 429
    assert error.headers == {"retry-after": "13"}
    assert "10 requests per minute" in error.message
    assert error.body()["error"]["code"] == "rate_limit_exceeded"


def test_refusal_for_images_names_the_daily_limit() -> None:
    error = refusal(Verdict(False, retry_after=3600.0, reason="images_per_day", limit=50))
    assert "50 images per day" in error.message
    assert error.headers["retry-after"] == "3600"


def test_refusal_retry_after_is_at_least_one_second() -> None:
    assert refusal(Verdict(False, retry_after=0.2, reason="rpm")).headers["retry-after"] == "1"
    assert refusal(Verdict(False, reason="rpm")).headers["retry-after"] == "1"


def test_refusal_of_an_allowed_verdict_is_a_bug() -> None:
    with pytest.raises(ValueError):
        refusal(Verdict(True))
