"""The whole gateway in-process (ASGI) in front of the fake OpenAI and fal servers: faults, cost, routing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette

from imagegate.config import CatalogSettings, ModelRouting, ProviderSettings, RouteEntry, RoutingSettings, Settings
from imagegate.providers.fal import FalSettings
from imagegate.web.app import create_app
from tests.fakes.fal import FakeFal
from tests.fakes.faults import Fault
from tests.fakes.openai import FakeOpenAI

OPENAI_KEY = "sk-inproc-secret-key"
FAL_KEY = "inproc-id:inproc-secret"
GEN = "/v1/images/generations"


@dataclass
class Rig:
    http: httpx.AsyncClient
    openai: FakeOpenAI
    fal: FakeFal
    app: Starlette

    def upstream_paths(self, fake) -> list[str]:
        return [r.path for r in fake.requests if not r.path.startswith("/_fake")]


def _settings(tmp_path, openai_url: str, run_url: str, queue_url: str, **extra) -> Settings:
    routing = extra.pop(
        "routing",
        RoutingSettings(
            backoff_base_seconds=0.001,
            models={
                "gpt-image-1": ModelRouting(
                    providers=(RouteEntry(provider="openai", priority=0), RouteEntry(provider="fal", priority=1))
                )
            },
        ),
    )
    return Settings(
        data_dir=tmp_path,
        signing_key="k",
        providers={
            "openai": ProviderSettings(base_url=openai_url, api_key=OPENAI_KEY),
            "fal": FalSettings(base_url=run_url, queue_url=queue_url, api_key=FAL_KEY, poll_interval_seconds=0.01),
        },
        catalog=CatalogSettings(status={"gpt-image-1": {"openai": "active"}}),
        routing=routing,
        **extra,
    )


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeFal, str, str, str]]:
    openai_fake, fal_fake = FakeOpenAI(key=OPENAI_KEY), FakeFal(key=FAL_KEY, job_seconds=0.02)
    openai_url = await openai_fake.start()
    run_url, queue_url = await fal_fake.start()
    yield openai_fake, fal_fake, openai_url, run_url, queue_url
    await openai_fake.stop()
    await fal_fake.stop()


async def _rig(tmp_path, fakes, **extra) -> Rig:
    openai_fake, fal_fake, openai_url, run_url, queue_url = fakes
    app = create_app(_settings(tmp_path, openai_url, run_url, queue_url, **extra))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    return Rig(http, openai_fake, fal_fake, app)


@pytest.fixture
async def rig(tmp_path, fakes) -> AsyncIterator[Rig]:
    rig = await _rig(tmp_path, fakes)
    yield rig
    await _close(rig)


async def _close(rig: Rig) -> None:
    await rig.http.aclose()
    await rig.app.state.registry.aclose()


async def test_openai_cost_comes_from_usage(rig: Rig):
    response = await rig.http.post(
        GEN, json={"prompt": "x", "model": "gpt-image-1", "quality": "high", "response_format": "b64_json"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    usage = body["usage"]
    expected = (usage["input_tokens"] * 5 + usage["output_tokens"] * 40) / 1_000_000
    assert float(body["imagegate"]["cost_usd"]) == pytest.approx(expected)
    assert response.headers["x-imagegate-cost-usd"] == body["imagegate"]["cost_usd"]


async def test_credentials_refused_is_502_without_leaking_and_takes_provider_out(rig: Rig):
    rig.openai.script.push(
        Fault(
            "status",
            status=401,
            body={
                "error": {
                    "message": f"Incorrect API key provided: {OPENAI_KEY}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
        )
    )
    forced = await rig.http.post(GEN, json={"prompt": "x", "model": "openai/gpt-image-1"})
    assert forced.status_code == 502
    assert OPENAI_KEY not in forced.text and "Incorrect API key" not in forced.text
    calls_before = len(rig.upstream_paths(rig.openai))
    served = await rig.http.post(GEN, json={"prompt": "x", "model": "gpt-image-1"})
    assert served.json()["imagegate"]["provider"] == "fal"
    assert len(rig.upstream_paths(rig.openai)) == calls_before  # openai is out of rotation


async def test_truncated_200_on_sole_provider_says_do_not_retry(rig: Rig):
    rig.openai.script.push(Fault("truncate"), times=2)
    response = await rig.http.post(GEN, json={"prompt": "x", "model": "openai/gpt-image-1"})
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"


async def test_rate_limit_retry_after_past_deadline_is_429(tmp_path, fakes):
    rig = await _rig(tmp_path, fakes, request_timeout_seconds=5)
    rig.openai.script.push(Fault("status", status=429, headers={"retry-after": "120"}), times=3)
    response = await rig.http.post(GEN, json={"prompt": "x", "model": "openai/gpt-image-1"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "120"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(rig.upstream_paths(rig.openai)) == 1  # 120 s does not fit a 5 s deadline: no wait, no retry
    await _close(rig)


async def test_rate_limit_retry_after_that_fits_is_honoured(tmp_path, fakes):
    rig = await _rig(tmp_path, fakes, request_timeout_seconds=5)
    rig.openai.script.push(Fault("status", status=429, headers={"retry-after-ms": "300"}))
    response = await rig.http.post(GEN, json={"prompt": "x", "model": "openai/gpt-image-1"})
    assert response.status_code == 200
    attempts = response.json()["imagegate"]["attempts"]
    assert [a["status"] for a in attempts] == ["error", "ok"]
    await _close(rig)


async def test_malformed_and_error_200_fail_over(rig: Rig):
    rig.openai.script.push(Fault("malformed"))
    rig.openai.script.push(Fault("error_200"))
    response = await rig.http.post(GEN, json={"prompt": "x", "model": "gpt-image-1"})
    assert response.status_code == 200, response.text
    attempts = response.json()["imagegate"]["attempts"]
    assert [(a["provider"], a["status"]) for a in attempts] == [("openai", "error"), ("openai", "error"), ("fal", "ok")]


async def test_reset_then_success_on_retry(rig: Rig):
    rig.openai.script.push(Fault("reset"))
    response = await rig.http.post(GEN, json={"prompt": "x", "model": "gpt-image-1"})
    assert response.status_code == 200
    assert [a["status"] for a in response.json()["imagegate"]["attempts"]] == ["error", "ok"]


async def test_stalled_fal_job_past_deadline_is_cancelled(tmp_path, fakes):
    rig = await _rig(tmp_path, fakes, request_timeout_seconds=0.6)
    rig.fal.script.push(Fault("stall"))
    response = await rig.http.post(GEN, json={"prompt": "x", "model": "fal/gpt-image-1"})
    assert response.status_code == 504
    assert rig.fal.cancelled, "the queued job was not cancelled upstream"
    await _close(rig)


async def test_fal_result_url_404_is_an_upstream_failure_without_charge(rig: Rig):
    rig.fal.file_script.push(Fault("status", status=404), times=2)
    response = await rig.http.post(GEN, json={"prompt": "x", "model": "fal/gpt-image-1"})
    assert response.status_code == 502
    assert "x-imagegate-cost-usd" not in response.headers


async def test_fal_422_names_our_parameter(rig: Rig):
    rig.fal.script.push(
        Fault(
            "status",
            status=422,
            body={
                "detail": [
                    {
                        "loc": ["body", "num_images"],
                        "msg": "Input should be less than or equal to 4",
                        "type": "less_than_equal",
                    }
                ]
            },
        )
    )
    response = await rig.http.post(GEN, json={"prompt": "x", "model": "fal/gpt-image-1"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "n"


async def test_breaker_skips_a_failing_provider(tmp_path, fakes):
    routing = RoutingSettings(
        backoff_base_seconds=0.001,
        breaker_failures=3,
        attempts_per_provider=1,
        models={
            "gpt-image-1": ModelRouting(
                providers=(RouteEntry(provider="openai", priority=0), RouteEntry(provider="fal", priority=1))
            )
        },
    )
    rig = await _rig(tmp_path, fakes, routing=routing)
    rig.openai.script.push(Fault("status", status=503), times=3)
    for _ in range(3):
        response = await rig.http.post(GEN, json={"prompt": "x", "model": "gpt-image-1"})
        assert response.json()["imagegate"]["provider"] == "fal"
    calls = len(rig.upstream_paths(rig.openai))
    response = await rig.http.post(GEN, json={"prompt": "x", "model": "gpt-image-1"})
    assert response.json()["imagegate"]["attempts"][0]["provider"] == "fal"
    assert len(rig.upstream_paths(rig.openai)) == calls
    await _close(rig)


async def test_dry_run_lists_both_providers_and_calls_nobody(rig: Rig):
    response = await rig.http.post(
        GEN, json={"prompt": "x", "model": "gpt-image-1", "quality": "high", "size": "1536x1024", "dry_run": True}
    )
    assert response.status_code == 200, response.text
    rows = {row["provider"]: row for row in response.json()["candidates"]}
    assert rows["openai"]["estimated_cost_usd"] == "0.25" and rows["fal"]["estimated_cost_usd"] == "0.25"
    assert rig.upstream_paths(rig.openai) == [] and rig.upstream_paths(rig.fal) == []
