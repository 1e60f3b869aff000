from __future__ import annotations

from decimal import Decimal

from imagegate.metrics import Metrics


def _text(metrics: Metrics) -> str:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return body.decode()


def test_observe_request_counts_requests_images_and_cost() -> None:
    metrics = Metrics()
    metrics.observe_request("gpt-image-1", "openai", "generate", 200, 2, Decimal("0.084"))
    metrics.observe_request("gpt-image-1", "openai", "generate", 200, 1, Decimal("0.042"))
    metrics.observe_request("gpt-image-1", None, "edit", 429, 0, None)
    text = _text(metrics)
    assert 'imagegate_requests_total{mode="generate",model="gpt-image-1",provider="openai",status="200"} 2.0' in text
    assert 'imagegate_requests_total{mode="edit",model="gpt-image-1",provider="none",status="429"} 1.0' in text
    assert 'imagegate_images_total{model="gpt-image-1",provider="openai"} 3.0' in text
    cost = metrics.registry.get_sample_value("imagegate_cost_usd_total", {"model": "gpt-image-1", "provider": "openai"})
    assert cost is not None and abs(cost - 0.126) < 1e-9
    assert 'imagegate_images_total{model="gpt-image-1",provider="none"}' not in text


def test_observe_attempt_records_latency_and_errors() -> None:
    metrics = Metrics()
    metrics.observe_attempt("fal", "flux-1-dev", 3.2, None)
    metrics.observe_attempt("fal", "flux-1-dev", 0.07, "upstream_timeout")
    text = _text(metrics)
    assert 'imagegate_upstream_latency_seconds_count{model="flux-1-dev",provider="fal"} 2.0' in text
    assert 'imagegate_upstream_latency_seconds_bucket{le="0.1",model="flux-1-dev",provider="fal"} 1.0' in text
    assert 'imagegate_upstream_latency_seconds_bucket{le="120.0",model="flux-1-dev",provider="fal"} 2.0' in text
    assert 'imagegate_upstream_errors_total{code="upstream_timeout",model="flux-1-dev",provider="fal"} 1.0' in text


def test_refusals_backend_errors_and_breaker() -> None:
    metrics = Metrics()
    metrics.observe_ratelimit_refusal("rpm")
    metrics.ratelimit_refusals.labels(reason="images_per_day").inc()
    metrics.observe_budget_refusal()
    metrics.ratelimit_backend_errors.inc()
    metrics.set_breaker_open("openai", "dall-e-3", True)
    text = _text(metrics)
    assert 'imagegate_ratelimit_refusals_total{reason="rpm"} 1.0' in text
    assert 'imagegate_ratelimit_refusals_total{reason="images_per_day"} 1.0' in text
    assert "imagegate_budget_refusals_total 1.0" in text
    assert "imagegate_ratelimit_backend_errors_total 1.0" in text
    assert 'imagegate_breaker_open{model="dall-e-3",provider="openai"} 1.0' in text
    metrics.set_breaker_open("openai", "dall-e-3", False)
    assert 'imagegate_breaker_open{model="dall-e-3",provider="openai"} 0.0' in _text(metrics)


def test_two_instances_are_independent() -> None:
    first, second = Metrics(), Metrics()
    first.observe_request("dall-e-3", "openai", "generate", 200, 1, Decimal("0.04"))
    first.observe_budget_refusal()
    assert first.registry.get_sample_value("imagegate_budget_refusals_total") == 1
    assert second.registry.get_sample_value("imagegate_budget_refusals_total") == 0
    assert "dall-e-3" in _text(first)
    assert "dall-e-3" not in _text(second)
