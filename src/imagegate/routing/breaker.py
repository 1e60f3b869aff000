"""Circuit breakers per (provider, model), and providers taken out of rotation.

closed -> open when `failures` failures land within `window` seconds; open -> half-open after
`cooldown` seconds, when exactly one probe request is let through; the probe's success closes the
breaker, its failure re-opens it for another cool-down. A provider whose credentials were refused
is disabled as a whole for `disable_seconds`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    failures: int
    window: float
    cooldown: float
    state: State = "closed"
    opened_at: float = 0.0
    probe_in_flight: bool = False
    recent: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open" and now - self.opened_at >= self.cooldown:
            self.state = "half_open"
            self.probe_in_flight = False
        if self.state == "half_open" and not self.probe_in_flight:
            self.probe_in_flight = True
            return True
        return False

    def success(self) -> None:
        self.state = "closed"
        self.probe_in_flight = False
        self.recent.clear()

    def failure(self, now: float) -> None:
        if self.state == "half_open":
            self._open(now)
            return
        self.recent.append(now)
        while self.recent and now - self.recent[0] > self.window:
            self.recent.popleft()
        if len(self.recent) >= self.failures:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = "open"
        self.opened_at = now
        self.probe_in_flight = False
        self.recent.clear()


class BreakerBoard:
    def __init__(
        self,
        failures: int,
        window: float,
        cooldown: float,
        disable_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window = window
        self.cooldown = cooldown
        self.disable_seconds = disable_seconds
        self.clock = clock
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._disabled: dict[str, float] = {}

    def breaker(self, provider: str, model: str) -> CircuitBreaker:
        key = (provider, model)
        if key not in self._breakers:
            self._breakers[key] = CircuitBreaker(self.failures, self.window, self.cooldown)
        return self._breakers[key]

    def allow(self, provider: str, model: str) -> bool:
        now = self.clock()
        until = self._disabled.get(provider)
        if until is not None:
            if now < until:
                return False
            del self._disabled[provider]
        return self.breaker(provider, model).allow(now)

    def success(self, provider: str, model: str) -> None:
        self.breaker(provider, model).success()

    def failure(self, provider: str, model: str) -> None:
        self.breaker(provider, model).failure(self.clock())

    def disable(self, provider: str) -> None:
        self._disabled[provider] = self.clock() + self.disable_seconds

    def is_disabled(self, provider: str) -> bool:
        until = self._disabled.get(provider)
        return until is not None and self.clock() < until

    def snapshot(self) -> dict[str, str]:
        states = {f"{p}/{m}": b.state for (p, m), b in self._breakers.items() if b.state != "closed"}
        states.update({p: "disabled" for p in self._disabled if self.is_disabled(p)})
        return states
