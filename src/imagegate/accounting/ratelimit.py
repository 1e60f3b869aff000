"""Per-key rate limits: requests per minute (exact sliding window) and images per UTC day.

The window is sliding, not fixed: with ``rpm=10`` at most 10 requests are admitted in ANY 60 s,
across minute boundaries and, with Redis, across every gateway process sharing it. A refused
request consumes nothing; an admitted one counts one request and its images at once.

`MemoryRateLimiter` serves a single process. `RedisRateLimiter` keeps, per key, a sorted set of
request timestamps (``ig:rl:{<key>}:req``) and a daily images counter (``ig:rl:{<key>}:img:YYYYMMDD``),
checked and updated by one Lua script so concurrent gateways cannot over-admit. The window runs on
the Redis server's clock (``TIME``), so gateway hosts' clock skew does not matter; only the UTC day
comes from the gateway. When Redis fails the limiter fails open (admits, logs, counts the error):
budgets still hold because they live in the database.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from imagegate.errors import RateLimitError
from imagegate.metrics import Metrics

log = logging.getLogger("imagegate.ratelimit")

Clock = Callable[[], float]
Reason = Literal["rpm", "images_per_day"]

WINDOW_SECONDS = 60.0
DAY_SECONDS = 86_400
DAILY_COUNTER_TTL_MS = 2 * DAY_SECONDS * 1000
WARN_EVERY_SECONDS = 30.0
BACKEND_ERRORS: tuple[type[BaseException], ...] = (RedisError, ConnectionError, TimeoutError, OSError)


@dataclass(frozen=True)
class Limits:
    rpm: int | None
    images_per_day: int | None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float | None = None
    reason: Reason | None = None
    limit: int | None = None
    """The limit that refused the request (for the error message); None when allowed."""


ALLOWED = Verdict(True)


class RateLimiter(Protocol):
    async def acquire(self, key_id: str, limits: Limits, images: int) -> Verdict:
        """Admit one request of `images` images, counting both, or refuse it and count nothing."""
        ...

    async def refund_images(self, key_id: str, images: int) -> None:
        """Give back images reserved by `acquire` but never produced (today's counter, never below 0)."""
        ...

    async def aclose(self) -> None: ...

    async def ping(self) -> None:
        """Raise when the shared backend (Redis) cannot be reached; a local limiter always answers."""
        ...


def utc_day(epoch: float) -> str:
    """The UTC calendar day of `epoch` as ``YYYYMMDD``."""
    return time.strftime("%Y%m%d", time.gmtime(epoch))


def seconds_until_utc_midnight(epoch: float) -> float:
    """Seconds from `epoch` to the next UTC midnight, in (0, 86400]. POSIX days are exactly 86400 s."""
    return DAY_SECONDS - (epoch % DAY_SECONDS)


def _rpm_refusal(limits: Limits, retry_after: float) -> Verdict:
    return Verdict(False, retry_after=retry_after, reason="rpm", limit=limits.rpm)


def _images_refusal(limits: Limits, now: float) -> Verdict:
    return Verdict(
        False, retry_after=seconds_until_utc_midnight(now), reason="images_per_day", limit=limits.images_per_day
    )


# --- in memory --------------------------------------------------------------------------------


@dataclass
class _KeyState:
    requests: deque[float] = field(default_factory=deque)
    day: str = ""
    images: int = 0

    def roll(self, now: float, window: float) -> None:
        """Drop requests that left the window and reset the images counter on a new UTC day."""
        while self.requests and self.requests[0] <= now - window:
            self.requests.popleft()
        today = utc_day(now)
        if self.day != today:
            self.day = today
            self.images = 0


class MemoryRateLimiter:
    """Exact limits for one process; `clock` returns epoch seconds (injectable for tests)."""

    def __init__(self, clock: Clock = time.time, window_seconds: float = WINDOW_SECONDS) -> None:
        self._clock = clock
        self._window = window_seconds
        self._keys: dict[str, _KeyState] = {}
        self._lock = asyncio.Lock()

    async def acquire(self, key_id: str, limits: Limits, images: int) -> Verdict:
        images = max(images, 0)
        async with self._lock:
            now = self._clock()
            state = self._keys.setdefault(key_id, _KeyState())
            state.roll(now, self._window)
            if limits.rpm is not None and len(state.requests) >= limits.rpm:
                oldest = state.requests[0] if state.requests else now
                return _rpm_refusal(limits, oldest + self._window - now)
            if limits.images_per_day is not None and state.images + images > limits.images_per_day:
                return _images_refusal(limits, now)
            state.requests.append(now)
            state.images += images
            return ALLOWED

    async def refund_images(self, key_id: str, images: int) -> None:
        async with self._lock:
            state = self._keys.get(key_id)
            if state is None or images <= 0:
                return
            state.roll(self._clock(), self._window)
            state.images = max(state.images - images, 0)

    async def aclose(self) -> None:
        return None

    async def ping(self) -> None:
        return None


# --- Redis ------------------------------------------------------------------------------------

# KEYS[1] request sorted set, KEYS[2] today's images counter.
# ARGV: window_us, rpm (-1: none), images_per_day (-1: none), images, nonce, set_ttl_ms, day_ttl_ms.
# Returns {1} when admitted, {0, 'rpm', retry_after_us} or {0, 'images_per_day', 0} when refused.
ACQUIRE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local per_day = tonumber(ARGV[3])
local images = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if rpm >= 0 and redis.call('ZCARD', KEYS[1]) >= rpm then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local retry = window
  if oldest[2] then retry = tonumber(oldest[2]) + window - now end
  return {0, 'rpm', retry}
end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if per_day >= 0 and used + images > per_day then
  return {0, 'images_per_day', 0}
end
redis.call('ZADD', KEYS[1], now, t[1] .. '.' .. t[2] .. ':' .. ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if images > 0 then
  redis.call('INCRBY', KEYS[2], images)
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
return {1}
"""

# KEYS[1] today's images counter; ARGV[1] images to give back. Never goes below 0, never creates the key.
REFUND_LUA = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local back = math.min(used, tonumber(ARGV[1]))
if back > 0 then redis.call('DECRBY', KEYS[1], back) end
return back
"""


class _BackendErrors:
    """Counts every backend failure; logs a WARNING at most once per `every` seconds."""

    def __init__(self, metrics: Metrics | None, every: float = WARN_EVERY_SECONDS) -> None:
        self._metrics = metrics
        self._every = every
        self._last_warning: float | None = None

    def report(self, operation: str, exc: BaseException) -> None:
        if self._metrics is not None:
            self._metrics.ratelimit_backend_errors.inc()
        now = time.monotonic()
        if self._last_warning is not None and now - self._last_warning < self._every:
            return
        self._last_warning = now
        log.warning("rate-limit backend failed during %s (%s: %s); failing open", operation, type(exc).__name__, exc)


class RedisRateLimiter:
    """Exact limits shared by every gateway process using the same Redis; fails open on errors.

    `clock` (epoch seconds) only decides the UTC day of the images counter; the request window
    runs on the Redis server's clock. `prefix` namespaces the keys (tests use a unique one).
    """

    def __init__(
        self,
        url: str,
        clock: Clock = time.time,
        metrics: Metrics | None = None,
        window_seconds: float = WINDOW_SECONDS,
        prefix: str = "ig:rl:",
    ) -> None:
        self._redis: aioredis.Redis = aioredis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        self._acquire = self._redis.register_script(ACQUIRE_LUA)
        self._refund = self._redis.register_script(REFUND_LUA)
        self._clock = clock
        self._window_us = round(window_seconds * 1_000_000)
        self._set_ttl_ms = math.ceil(window_seconds * 1000) + 1000
        self._prefix = prefix
        self._errors = _BackendErrors(metrics)

    def _requests_key(self, key_id: str) -> str:
        # The braces are a Redis Cluster hash tag: both keys of one API key share a slot.
        return f"{self._prefix}{{{key_id}}}:req"

    def _images_key(self, key_id: str, day: str) -> str:
        return f"{self._prefix}{{{key_id}}}:img:{day}"

    async def acquire(self, key_id: str, limits: Limits, images: int) -> Verdict:
        now = self._clock()
        keys = [self._requests_key(key_id), self._images_key(key_id, utc_day(now))]
        args: list[int | str] = [
            self._window_us,
            -1 if limits.rpm is None else limits.rpm,
            -1 if limits.images_per_day is None else limits.images_per_day,
            max(images, 0),
            uuid.uuid4().hex,
            self._set_ttl_ms,
            DAILY_COUNTER_TTL_MS,
        ]
        try:
            reply = await self._acquire(keys=keys, args=args)
        except BACKEND_ERRORS as exc:
            self._errors.report("acquire", exc)
            return ALLOWED
        return _parse_reply(reply, limits, now)

    async def refund_images(self, key_id: str, images: int) -> None:
        if images <= 0:
            return
        try:
            await self._refund(keys=[self._images_key(key_id, utc_day(self._clock()))], args=[images])
        except BACKEND_ERRORS as exc:
            self._errors.report("refund_images", exc)

    async def ping(self) -> None:
        """One PING round trip (the readiness probe): raises when Redis cannot be reached."""
        await self._redis.ping()

    async def aclose(self) -> None:
        try:
            await self._redis.aclose()
        except BACKEND_ERRORS as exc:
            log.debug("closing the rate-limit Redis client failed: %s", exc)


def _parse_reply(reply: Any, limits: Limits, now: float) -> Verdict:
    if int(reply[0]) == 1:
        return ALLOWED
    reason = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
    if reason == "rpm":
        return _rpm_refusal(limits, int(reply[2]) / 1_000_000)
    return _images_refusal(limits, now)


# --- wiring -----------------------------------------------------------------------------------


def build_rate_limiter(redis_url: str | None, metrics: Metrics | None = None) -> RateLimiter:
    """Redis-backed (shared by every gateway process) when `redis_url` is set, else in memory."""
    if redis_url:
        return RedisRateLimiter(redis_url, metrics=metrics)
    return MemoryRateLimiter()


def refusal(verdict: Verdict) -> RateLimitError:
    """The 429 for a refused verdict: names the limit and carries ``retry-after`` (whole seconds, >= 1)."""
    if verdict.allowed:
        raise ValueError("refusal() needs a refused verdict")
    seconds = max(1, math.ceil(verdict.retry_after or 0))
    count = f"{verdict.limit} " if verdict.limit is not None else ""
    unit = "images per day" if verdict.reason == "images_per_day" else "requests per minute"
    what = f"{count}{unit}"
    return RateLimitError(
        f"Rate limit exceeded: this API key is limited to {what}. Retry after {seconds} s.",
        headers={"retry-after": str(seconds)},
    )
