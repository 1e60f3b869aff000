"""Candidate order: priority groups with weights, or cheapest, or fastest (DESIGN.md section 6)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from decimal import Decimal

from imagegate.config import ModelRouting, RoutingSettings
from imagegate.core.types import Decision
from imagegate.routing.candidates import Candidate


class LatencyStats:
    """Exponentially weighted mean latency per (provider, model), for the `fastest` strategy."""

    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self._mean: dict[tuple[str, str], float] = {}

    def observe(self, provider: str, model: str, seconds: float) -> None:
        key = (provider, model)
        old = self._mean.get(key)
        self._mean[key] = seconds if old is None else old + self.alpha * (seconds - old)

    def mean(self, provider: str, model: str) -> float | None:
        return self._mean.get((provider, model))


def order_candidates(
    candidates: Sequence[Candidate],
    model_id: str,
    routing: RoutingSettings,
    estimate: Callable[[Candidate], Decimal | None],
    latency: LatencyStats,
    rng: random.Random,
) -> list[Candidate]:
    per_model = routing.models.get(model_id, ModelRouting())
    strategy = per_model.strategy or routing.strategy
    if strategy == "cheapest":
        return _stable_sort(candidates, lambda c: _cost_key(estimate(c)))
    if strategy == "fastest":
        return _stable_sort(candidates, lambda c: _latency_key(latency.mean(c.offering.provider, model_id)))
    return _by_priority(candidates, per_model, rng)


def strategy_of(model_id: str, routing: RoutingSettings) -> str:
    per_model = routing.models.get(model_id, ModelRouting())
    return per_model.strategy or routing.strategy


def routing_decision(
    ordered: Sequence[Candidate],
    model_id: str,
    routing: RoutingSettings,
    estimate: Callable[[Candidate], Decimal | None],
    latency: LatencyStats,
) -> Decision:
    """The order the router will try, as a decision: the strategy, its choice and the runner-up with the
    figure each was ranked by (estimated cost, mean latency, or priority). `sent` is the choice; the
    response's `provider` says who served (a failover moves down this order)."""
    strategy = strategy_of(model_id, routing)

    def figure(candidate: Candidate) -> str:
        name = candidate.offering.provider
        if strategy == "cheapest":
            cost = estimate(candidate)
            return f"{name} (${cost.normalize()})" if cost is not None else f"{name} (price unknown)"
        if strategy == "fastest":
            mean = latency.mean(name, model_id)
            return f"{name} ({mean * 1000:.0f} ms mean)" if mean is not None else f"{name} (not measured yet)"
        return name

    chosen = ordered[0].offering.provider if ordered else None
    note = f"{strategy}: " + (", then ".join(figure(c) for c in ordered[:2]) if ordered else "no candidate")
    if len(ordered) > 2:
        note += f" (+{len(ordered) - 2} more)"
    return Decision("routing", strategy, chosen, "passthrough", note)


def _stable_sort(candidates: Sequence[Candidate], key: Callable[[Candidate], tuple[int, float]]) -> list[Candidate]:
    return sorted(candidates, key=key)


def _cost_key(cost: Decimal | None) -> tuple[int, float]:
    return (1, 0.0) if cost is None else (0, float(cost))


def _latency_key(mean: float | None) -> tuple[int, float]:
    # Unmeasured providers go first so they get measured.
    return (0, 0.0) if mean is None else (1, mean)


def _by_priority(candidates: Sequence[Candidate], per_model: ModelRouting, rng: random.Random) -> list[Candidate]:
    """Configured providers by priority group (lower first), weighted-random inside a group; the
    rest follow in catalog order."""
    entries = {entry.provider: entry for entry in per_model.providers}
    listed = [c for c in candidates if c.offering.provider in entries]
    rest = [c for c in candidates if c.offering.provider not in entries]
    groups: dict[int, list[Candidate]] = {}
    for candidate in listed:
        groups.setdefault(entries[candidate.offering.provider].priority, []).append(candidate)
    ordered: list[Candidate] = []
    for priority in sorted(groups):
        group = groups[priority]
        weights = [entries[c.offering.provider].weight for c in group]
        ordered.extend(_weighted_shuffle(group, weights, rng))
    return ordered + rest


def _weighted_shuffle(items: list[Candidate], weights: list[float], rng: random.Random) -> list[Candidate]:
    # Efraimidis-Spirakis: key = u^(1/w), descending, gives a weighted random permutation.
    keyed = [(rng.random() ** (1.0 / w), i) for i, w in enumerate(weights)]
    return [items[i] for _, i in sorted(keyed, reverse=True)]
