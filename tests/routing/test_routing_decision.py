"""The routing decision every response carries: the strategy, its choice and the runner-up with the
figure each was ranked by (imagegate.routing.policy.routing_decision)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from imagegate.catalog.loader import load_catalog
from imagegate.config import RoutingSettings
from imagegate.routing.candidates import Candidate
from imagegate.routing.policy import LatencyStats, order_candidates, routing_decision

BASE = load_catalog().get("flux-1-dev").offerings[0]  # type: ignore[union-attr]


def _candidates(*names: str) -> list[Candidate]:
    provider: Any = object()
    return [Candidate(dataclasses.replace(BASE, provider=name), provider) for name in names]


PRICES = {"a": Decimal("0.04"), "b": Decimal("0.025"), "c": None}


def _price(candidate: Candidate) -> Decimal | None:
    return PRICES[candidate.offering.provider]


def test_cheapest_names_its_choice_and_runner_up_with_their_prices() -> None:
    import random

    routing = RoutingSettings(strategy="cheapest")
    ordered = order_candidates(
        _candidates("a", "b", "c"), "flux-1-dev", routing, _price, LatencyStats(), random.Random(1)
    )
    decision = routing_decision(ordered, "flux-1-dev", routing, _price, LatencyStats())
    assert (decision.param, decision.asked, decision.sent) == ("routing", "cheapest", "b")
    assert decision.note == "cheapest: b ($0.025), then a ($0.04) (+1 more)"


def test_fastest_and_priority_say_what_they_ranked_by() -> None:
    latency = LatencyStats()
    latency.observe("a", "flux-1-dev", 0.8)
    fastest = RoutingSettings(strategy="fastest")
    decision = routing_decision(_candidates("b", "a"), "flux-1-dev", fastest, _price, latency)
    assert decision.note == "fastest: b (not measured yet), then a (800 ms mean)"
    priority = routing_decision(_candidates("a"), "flux-1-dev", RoutingSettings(), _price, latency)
    assert (priority.asked, priority.sent, priority.note) == ("priority", "a", "priority: a")


async def test_every_response_carries_the_routing_decision(client) -> None:
    response = await client.post("/v1/images/generations", json={"model": "flux-1-dev", "prompt": "x"})
    assert response.status_code == 200, response.text
    routing = next(d for d in response.json()["imagegate"]["decisions"] if d["param"] == "routing")
    assert routing["asked"] == "priority" and routing["sent"] == "sandbox" and routing["note"] == "priority: sandbox"
