"""Prometheus metrics of one gateway instance.

Every `Metrics` owns a private `CollectorRegistry`, so several apps (or tests) in one process never
collide on metric names; `render()` gives the exposition text and its content type for `/metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

# Upstream image generation takes from ~50 ms (cached/fast models) to ~2 minutes (large edits).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    45.0,
    60.0,
    90.0,
    120.0,
)

NO_PROVIDER = "none"
"""Label value for requests refused before any provider was chosen (auth, rate limit, budget)."""


class Metrics:
    """The gateway's counters, histograms and gauges on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}  # per-request metrics' labelled children
        self._traffic(self.registry)
        self._accounts(self.registry)
        self._server_edge(self.registry)
        self._envelope(self.registry)

    def _traffic(self, reg: CollectorRegistry) -> None:
        """Requests, images, cost, upstream attempts and breakers."""
        self.requests = Counter(
            "imagegate_requests_total",
            "Requests answered, by model, provider, mode and HTTP status code.",
            ("model", "provider", "mode", "status"),
            registry=reg,
        )
        self.images = Counter(
            "imagegate_images_total", "Images delivered to callers.", ("model", "provider"), registry=reg
        )
        self.cost = Counter(
            "imagegate_cost_usd_total", "Upstream cost charged to callers, in USD.", ("model", "provider"), registry=reg
        )
        self.upstream_latency = Histogram(
            "imagegate_upstream_latency_seconds",
            "Duration of one upstream attempt.",
            ("provider", "model"),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.upstream_errors = Counter(
            "imagegate_upstream_errors_total",
            "Failed upstream attempts, by error code.",
            ("provider", "model", "code"),
            registry=reg,
        )
        self.breaker_open = Gauge(
            "imagegate_breaker_open",
            "1 while the circuit breaker of a provider/model is open.",
            ("provider", "model"),
            registry=reg,
        )

    def _accounts(self, reg: CollectorRegistry) -> None:
        """Refusals by rate limits and budgets, and the limiter's backend."""
        self.ratelimit_refusals = Counter(
            "imagegate_ratelimit_refusals_total", "Requests refused by a per-key rate limit.", ("reason",), registry=reg
        )
        self.budget_refusals = Counter(
            "imagegate_budget_refusals_total", "Requests refused because the key's budget was exhausted.", registry=reg
        )
        self.ratelimit_backend_errors = Counter(
            "imagegate_ratelimit_backend_errors_total",
            "Rate-limit backend (Redis) failures; the limiter failed open.",
            registry=reg,
        )

    def _server_edge(self, reg: CollectorRegistry) -> None:
        """Stored-file retention, slow clients and the connection cap."""
        self.stored_bytes = Gauge(
            "imagegate_stored_file_bytes", "Bytes of result files in the data dir, as of the last purge.", registry=reg
        )
        self.stored_files = Gauge(
            "imagegate_stored_files", "Result files in the data dir, as of the last purge.", registry=reg
        )
        self.files_purged = Counter(
            "imagegate_files_purged_total",
            "Stored files deleted, by reason (expired, disk_cap, stale_temp).",
            ("reason",),
            registry=reg,
        )
        self.slow_client_refusals = Counter(
            "imagegate_slow_client_refusals_total",
            "Requests cut off for slowness, by reason (header_timeout, body_idle, upload_rate).",
            ("reason",),
            registry=reg,
        )
        self.connections_refused = Counter(
            "imagegate_connections_refused_total",
            "Connections answered 503 because the server was at [server] max_connections.",
            registry=reg,
        )

    def _envelope(self, reg: CollectorRegistry) -> None:
        """The resource envelope: reservations, queue, refusals."""
        self.envelope_in_flight = Gauge(
            "imagegate_envelope_in_flight", "Image requests holding a reservation in the envelope.", registry=reg
        )
        self.envelope_queued = Gauge(
            "imagegate_envelope_queued", "Image requests waiting for the envelope.", registry=reg
        )
        self.envelope_reserved_bytes = Gauge(
            "imagegate_envelope_reserved_bytes", "Image memory reserved by requests in flight.", registry=reg
        )
        self.envelope_refusals = Counter(
            "imagegate_envelope_refusals_total",
            "Image requests refused by the envelope (queue_full, wait_timeout, too_large).",
            ("reason",),
            registry=reg,
        )

    def observe_request(
        self,
        model: str,
        provider: str | None,
        mode: str,
        status: int,
        images: int,
        cost: Decimal | None,
    ) -> None:
        """Count one answered request, the images it delivered and what it cost."""
        provider_label = provider or NO_PROVIDER
        self._labelled("requests", self.requests, (model, provider_label, mode, str(status))).inc()
        if images > 0:
            self._labelled("images", self.images, (model, provider_label)).inc(images)
        if cost is not None and cost > 0:
            self._labelled("cost", self.cost, (model, provider_label)).inc(float(cost))

    def observe_attempt(self, provider: str, model: str, seconds: float, error_code: str | None) -> None:
        """Record one upstream attempt's duration and, if it failed, its error code."""
        self._labelled("latency", self.upstream_latency, (provider, model)).observe(max(seconds, 0.0))
        if error_code is not None:
            self.upstream_errors.labels(provider, model, error_code).inc()

    def _labelled(self, name: str, metric: MetricWrapperBase, values: tuple[str, ...]) -> Any:
        """`metric.labels(*values)`, looked up once per label set (`labels` validates, converts and
        locks on every call; the child it returns is the same object each time)."""
        key = (name, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe_ratelimit_refusal(self, reason: str) -> None:
        self.ratelimit_refusals.labels(reason).inc()

    def observe_budget_refusal(self) -> None:
        self.budget_refusals.inc()

    def set_breaker_open(self, provider: str, model: str, is_open: bool) -> None:
        self.breaker_open.labels(provider, model).set(1 if is_open else 0)

    def watch_envelope(
        self, in_flight: Callable[[], float], queued: Callable[[], float], reserved_bytes: Callable[[], float]
    ) -> None:
        """Read the envelope's gauges from it when scraped (nothing to update per request)."""
        self.envelope_in_flight.set_function(in_flight)
        self.envelope_queued.set_function(queued)
        self.envelope_reserved_bytes.set_function(reserved_bytes)

    def observe_envelope_refusal(self, reason: str) -> None:
        self.envelope_refusals.labels(reason).inc()

    def observe_storage(self, stored_bytes: int, stored_files: int, purged: Mapping[str, int]) -> None:
        """Record the data dir's size after a purge and what the purge deleted, by reason."""
        self.stored_bytes.set(stored_bytes)
        self.stored_files.set(stored_files)
        for reason, count in purged.items():
            if count > 0:
                self.files_purged.labels(reason).inc(count)

    def observe_slow_client(self, reason: str) -> None:
        self.slow_client_refusals.labels(reason).inc()

    def observe_connection_refused(self) -> None:
        self.connections_refused.inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text of this instance's registry and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
