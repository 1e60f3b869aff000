"""The router: try candidates in policy order under one deadline, with retries, failover and breakers.

Rules (DESIGN.md section 6):
- one deadline for the whole request; every attempt runs inside it and is cancelled at it;
- retryable upstream failures (5xx, resets, timeouts, malformed replies) are retried on the same
  provider with full-jitter backoff up to `attempts_per_provider`, then fail over;
- 429 fails over at once when another candidate remains, else waits `Retry-After` if it fits;
- our own validation errors and upstream 4xx validation/moderation errors are never retried;
- an upstream that says `x-should-retry: false` (not retryable) ends the request: it may have billed;
- a refused credential takes the provider out of rotation; breakers skip failing (provider, model)s.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from imagegate.config import RoutingSettings
from imagegate.errors import (
    ImagegateError,
    InvalidRequestError,
    NoProviderAvailableError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from imagegate.routing.breaker import BreakerBoard
from imagegate.routing.candidates import Candidate
from imagegate.routing.policy import LatencyStats

T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    """One try of one provider. `cost_usd` is filled in when the request is priced."""

    provider: str
    status: str  # "ok", "error", "rejected" (upstream refused our request), "timeout"
    latency_ms: float
    error: str | None = None
    code: str | None = None
    upstream_status: int | None = None
    may_have_charged: bool = False
    cost_usd: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 1),
            "error": self.error,
            "code": self.code,
            "upstream_status": self.upstream_status,
            "may_have_charged": self.may_have_charged,
            "cost_usd": self.cost_usd,
        }


@dataclass(frozen=True)
class Routed(Generic[T]):
    candidate: Candidate
    value: T
    attempts: tuple[Attempt, ...] = ()


class Router:
    def __init__(
        self,
        routing: RoutingSettings,
        board: BreakerBoard,
        latency: LatencyStats,
        rng: random.Random | None = None,
    ) -> None:
        self.routing = routing
        self.board = board
        self.latency = latency
        self.rng = rng or random.Random()

    async def run(
        self,
        candidates: Sequence[Candidate],
        model_id: str,
        deadline: float,
        attempt: Callable[[Candidate], Awaitable[T]],
    ) -> Routed[T]:
        loop = asyncio.get_running_loop()
        attempts: list[Attempt] = []
        errors: list[UpstreamError] = []
        allowed = [c for c in candidates if self.board.allow(c.offering.provider, model_id)]
        if not allowed:
            raise NoProviderAvailableError(
                "every provider for this model is cooling down after failures; try again shortly",
                headers={"retry-after": str(int(self.routing.breaker_cooldown_seconds))},
            )
        for index, candidate in enumerate(allowed):
            has_next = index + 1 < len(allowed)
            for try_number in range(self.routing.attempts_per_provider):
                if len(attempts) >= self.routing.max_attempts:
                    break
                if loop.time() >= deadline:
                    errors.append(UpstreamTimeoutError("the request deadline passed"))
                    raise self._final(errors, attempts)
                provider = candidate.offering.provider
                started = loop.time()
                try:
                    async with asyncio.timeout_at(deadline):
                        value = await attempt(candidate)
                except InvalidRequestError as exc:
                    attempts.append(Attempt(provider, "rejected", _ms(loop, started), exc.message, exc.code))
                    exc.attempts = tuple(attempts)
                    raise
                except TimeoutError:
                    error = UpstreamTimeoutError(
                        f"{provider} did not finish before the request deadline",
                        provider=provider,
                        may_have_charged=True,
                    )
                    attempts.append(self._failed(candidate, model_id, error, started))
                    errors.append(error)
                    raise self._final(errors, attempts) from None
                except UpstreamError as exc:
                    attempts.append(self._failed(candidate, model_id, exc, started))
                    errors.append(exc)
                    if not exc.retryable:
                        raise self._final(errors, attempts) from None
                    if not await self._retry_same(exc, try_number, has_next, deadline):
                        break
                    continue
                self.board.success(provider, model_id)
                self.latency.observe(provider, model_id, loop.time() - started)
                attempts.append(Attempt(provider, "ok", _ms(loop, started)))
                return Routed(candidate, value, tuple(attempts))
        raise self._final(errors, attempts)

    def _failed(self, candidate: Candidate, model_id: str, exc: UpstreamError, started: float) -> Attempt:
        provider = candidate.offering.provider
        if exc.disable_provider:
            self.board.disable(provider)
        else:
            self.board.failure(provider, model_id)
        status = "timeout" if isinstance(exc, UpstreamTimeoutError) else "error"
        loop = asyncio.get_running_loop()
        return Attempt(
            provider, status, _ms(loop, started), exc.message, exc.code, exc.upstream_status, exc.may_have_charged
        )

    async def _retry_same(self, exc: UpstreamError, try_number: int, has_next: bool, deadline: float) -> bool:
        """Sleep before retrying the same provider, or return False to fail over now."""
        if exc.disable_provider:
            return False
        if try_number + 1 >= self.routing.attempts_per_provider:
            return False
        remaining = deadline - asyncio.get_running_loop().time()
        if isinstance(exc, UpstreamRateLimitError):
            if has_next:
                return False
            wait = exc.retry_after if exc.retry_after is not None else self._jitter(try_number)
        else:
            wait = max(self._jitter(try_number), exc.retry_after or 0.0)
        if wait >= remaining:
            return False
        await asyncio.sleep(wait)
        return True

    def _jitter(self, try_number: int) -> float:
        ceiling = min(self.routing.backoff_max_seconds, self.routing.backoff_base_seconds * (2**try_number))
        return self.rng.uniform(0, ceiling)

    def _final(self, errors: list[UpstreamError], attempts: list[Attempt]) -> ImagegateError:
        last = errors[-1] if errors else UpstreamError("no provider could serve the request")
        if any(isinstance(e, UpstreamRateLimitError) for e in errors) and not isinstance(last, UpstreamTimeoutError):
            waits = [e.retry_after for e in errors if e.retry_after is not None]
            final: UpstreamError = UpstreamRateLimitError(
                "every provider for this model is rate-limited; retry later",
                retry_after=min(waits) if waits else None,
            )
        elif isinstance(last, UpstreamTimeoutError):
            final = UpstreamTimeoutError(last.message, may_have_charged=last.may_have_charged)
        else:
            tried = ", ".join(dict.fromkeys(a.provider for a in attempts)) or "none"
            final = UpstreamError(f"all providers failed (tried: {tried}); last error: {last.message}", code=last.code)
        if final.retry_after is not None:
            final.headers["retry-after"] = str(max(1, round(final.retry_after)))
        if any(a.may_have_charged for a in attempts) or any(not e.retryable for e in errors):
            final.headers["x-should-retry"] = "false"
        final.attempts = tuple(attempts)
        return final


def _ms(loop: asyncio.AbstractEventLoop, started: float) -> float:
    return (loop.time() - started) * 1000
