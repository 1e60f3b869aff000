"""The router's rules, with scripted in-process candidates (no HTTP)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from decimal import Decimal

import pytest

from imagegate.config import ModelRouting, RouteEntry, RoutingSettings
from imagegate.core.types import Capabilities, Offering, SizeSystem
from imagegate.errors import (
    InvalidRequestError,
    NoProviderAvailableError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from imagegate.routing.breaker import BreakerBoard, CircuitBreaker
from imagegate.routing.candidates import Candidate
from imagegate.routing.policy import LatencyStats, order_candidates
from imagegate.routing.router import Router


def candidate(name: str) -> Candidate:
    offering = Offering(provider=name, model_ids={"text-to-image": "m"}, caps=Capabilities(SizeSystem("free")))
    return Candidate(offering, provider=None)  # type: ignore[arg-type]


class Script:
    """Per provider, a list of outcomes: an exception to raise, a float to sleep, or "ok"."""

    def __init__(self, **plans: list[object]) -> None:
        self.plans = {name: list(steps) for name, steps in plans.items()}
        self.calls: list[str] = []

    async def __call__(self, cand: Candidate) -> str:
        name = cand.offering.provider
        self.calls.append(name)
        step = self.plans[name].pop(0) if self.plans[name] else "ok"
        if isinstance(step, float):
            await asyncio.sleep(step)
            return name
        if isinstance(step, Exception):
            raise step
        return name


def router(**overrides: object) -> Router:
    settings = RoutingSettings(backoff_base_seconds=0.001, backoff_max_seconds=0.002, **overrides)
    board = BreakerBoard(settings.breaker_failures, settings.breaker_window_seconds, settings.breaker_cooldown_seconds)
    return Router(settings, board, LatencyStats(), random.Random(0))


def deadline(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_retries_same_provider_then_succeeds():
    script = Script(a=[UpstreamError("500", upstream_status=500)], b=[])
    routed = await router().run([candidate("a"), candidate("b")], "m", deadline(), script)
    assert routed.value == "a" and script.calls == ["a", "a"]
    assert [x.status for x in routed.attempts] == ["error", "ok"]


async def test_fails_over_after_attempts_per_provider():
    script = Script(a=[UpstreamError("500"), UpstreamError("502")], b=[])
    routed = await router().run([candidate("a"), candidate("b")], "m", deadline(), script)
    assert routed.value == "b" and script.calls == ["a", "a", "b"]


async def test_rate_limit_fails_over_at_once():
    script = Script(a=[UpstreamRateLimitError("429", retry_after=30)], b=[])
    routed = await router().run([candidate("a"), candidate("b")], "m", deadline(), script)
    assert script.calls == ["a", "b"] and routed.value == "b"


async def test_rate_limit_on_sole_provider_waits_retry_after_when_it_fits():
    script = Script(a=[UpstreamRateLimitError("429", retry_after=0.05)])
    loop = asyncio.get_running_loop()
    started = loop.time()
    routed = await router().run([candidate("a")], "m", deadline(), script)
    assert routed.value == "a" and loop.time() - started >= 0.05


async def test_retry_after_past_the_deadline_is_not_waited():
    script = Script(a=[UpstreamRateLimitError("429", retry_after=60)])
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamRateLimitError) as caught:
        await router().run([candidate("a")], "m", deadline(2), script)
    assert loop.time() - started < 1
    assert caught.value.headers["retry-after"] == "60"
    assert caught.value.status == 429


async def test_validation_errors_never_fail_over():
    script = Script(a=[InvalidRequestError("bad size", param="size")], b=[])
    with pytest.raises(InvalidRequestError):
        await router().run([candidate("a"), candidate("b")], "m", deadline(), script)
    assert script.calls == ["a"]


async def test_not_retryable_upstream_stops_and_says_do_not_retry():
    script = Script(a=[UpstreamError("charged", retryable=False, may_have_charged=True)], b=[])
    with pytest.raises(UpstreamError) as caught:
        await router().run([candidate("a"), candidate("b")], "m", deadline(), script)
    assert script.calls == ["a"]
    assert caught.value.headers["x-should-retry"] == "false"


async def test_deadline_cancels_a_slow_attempt():
    script = Script(a=[10.0])
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeoutError) as caught:
        await router().run([candidate("a"), candidate("b")], "m", deadline(0.2), script)
    assert loop.time() - started < 1
    assert caught.value.status == 504 and caught.value.headers["x-should-retry"] == "false"


async def test_all_fail_gives_502_listing_providers():
    script = Script(a=[UpstreamError("x")] * 2, b=[UpstreamError("y")] * 2)
    with pytest.raises(UpstreamError) as caught:
        await router().run([candidate("a"), candidate("b")], "m", deadline(), script)
    assert caught.value.status == 502 and "a, b" in caught.value.message
    assert len(caught.value.attempts) == 4  # type: ignore[attr-defined]


async def test_auth_failure_disables_the_provider():
    r = router()
    script = Script(a=[UpstreamAuthError("401", disable_provider=True)], b=[])
    await r.run([candidate("a"), candidate("b")], "m", deadline(), script)
    assert script.calls == ["a", "b"]
    script.calls.clear()
    await r.run([candidate("a"), candidate("b")], "m", deadline(), script)
    assert script.calls == ["b"]


async def test_breaker_opens_then_probes_after_cooldown():
    clock = [0.0]
    board = BreakerBoard(failures=2, window=10, cooldown=5, clock=lambda: clock[0])
    r = Router(RoutingSettings(attempts_per_provider=1, backoff_base_seconds=0), board, LatencyStats())
    failing = Script(a=[UpstreamError("x")] * 2, b=[])
    for _ in range(2):
        await r.run([candidate("a"), candidate("b")], "m", deadline(), failing)
    failing.calls.clear()
    await r.run([candidate("a"), candidate("b")], "m", deadline(), failing)
    assert failing.calls == ["b"]  # open: a is skipped
    clock[0] = 6.0
    failing.calls.clear()
    await r.run([candidate("a"), candidate("b")], "m", deadline(), failing)
    assert failing.calls == ["a"]  # half-open probe succeeds and closes it
    assert board.breaker("a", "m").state == "closed"


def test_breaker_half_open_allows_one_probe():
    breaker = CircuitBreaker(failures=1, window=10, cooldown=1)
    breaker.failure(0.0)
    assert not breaker.allow(0.5)
    assert breaker.allow(1.5) and not breaker.allow(1.6)
    breaker.failure(1.7)
    assert breaker.state == "open" and not breaker.allow(2.0)


async def test_no_candidate_allowed_is_503():
    board = BreakerBoard(failures=1, window=10, cooldown=30)
    board.disable("a")
    r = Router(RoutingSettings(), board, LatencyStats())
    with pytest.raises(NoProviderAvailableError):
        await r.run([candidate("a")], "m", deadline(), Script(a=[]))


def test_priority_groups_and_weights():
    routing = RoutingSettings(
        models={
            "m": ModelRouting(
                providers=(
                    RouteEntry(provider="b", priority=0, weight=3),
                    RouteEntry(provider="c", priority=0, weight=1),
                    RouteEntry(provider="a", priority=1),
                )
            )
        }
    )
    rng = random.Random(1)
    firsts = Counter()
    for _ in range(2000):
        order = order_candidates(
            [candidate("a"), candidate("b"), candidate("c"), candidate("d")],
            "m",
            routing,
            lambda c: None,
            LatencyStats(),
            rng,
        )
        names = [c.offering.provider for c in order]
        assert names[2:] == ["a", "d"]
        firsts[names[0]] += 1
    assert 0.70 < firsts["b"] / 2000 < 0.80  # weight 3 of 4


def test_cheapest_and_fastest():
    prices = {"a": Decimal("0.04"), "b": Decimal("0.01"), "c": None}
    routing = RoutingSettings(strategy="cheapest")
    order = order_candidates(
        [candidate("a"), candidate("b"), candidate("c")],
        "m",
        routing,
        lambda c: prices[c.offering.provider],
        LatencyStats(),
        random.Random(),
    )
    assert [c.offering.provider for c in order] == ["b", "a", "c"]
    stats = LatencyStats()
    stats.observe("a", "m", 0.5)
    stats.observe("b", "m", 2.0)
    order = order_candidates(
        [candidate("b"), candidate("a"), candidate("c")],
        "m",
        RoutingSettings(strategy="fastest"),
        lambda c: None,
        stats,
        random.Random(),
    )
    assert [c.offering.provider for c in order] == ["c", "a", "b"]
