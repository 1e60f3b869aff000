"""Keys, budgets, rate limits, idempotency, ledger endpoints and metrics through the whole app, on
SQLite and on PostgreSQL. Budgets are exercised with `[sandbox] simulate_prices = true`, so the
sandbox charges gpt-image-1's catalog prices (low 1024x1024 = $0.011)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import httpx
import pytest

from imagegate.config import AuthSettings, SandboxSettings, Settings
from imagegate.providers.registry import build_registry
from imagegate.web.app import create_app
from tests.web.test_catalog_api import StubUpstream

GEN = "/v1/images/generations"
LOW = {"prompt": "x", "model": "gpt-image-1", "quality": "low", "size": "1024x1024", "response_format": "b64_json"}
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request, tmp_path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    name = f"imagegate_t_{uuid.uuid4().hex[:10]}"
    try:
        conn = await asyncpg.connect(PG_ADMIN, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI and is unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def make_app(tmp_path, database_url: str, mode: str = "keys", redis_url: str | None = None, providers=()):
    settings = Settings(
        data_dir=tmp_path / "data",
        signing_key="k",
        database_url=database_url,
        redis_url=redis_url,
        auth=AuthSettings(mode=mode),
        sandbox=SandboxSettings(enabled=True, simulate_prices=True),
    )
    registry = build_registry(settings)
    for provider in providers:
        registry.register(provider)
    return create_app(settings, registry=registry)


@pytest.fixture
async def gateway(tmp_path, database_url) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    app = make_app(tmp_path, database_url)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        await app.state.runtime.ready()
        yield http, app
    await app.state.runtime.aclose()


async def new_key(app, **limits) -> str:
    _, plaintext = await app.state.runtime.keys.create(
        "t", limits.get("budget"), limits.get("rpm"), limits.get("images_per_day"), limits.get("models")
    )
    return plaintext


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_bad_keys_all_get_the_same_401(gateway):
    http, app = gateway
    good = await new_key(app)
    revoked = await new_key(app)
    await app.state.runtime.keys.revoke(revoked[:12])
    unknown = good[:-8] + ("A" * 8)
    headers = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic abc"},
        auth("garbage"),
        auth(unknown),
        auth(revoked),
        auth("' OR 1=1 --"),
        auth("igk_'; DROP TABLE api_keys; --_abcdef"),
    ]
    bodies = []
    for header in headers:
        response = await http.post(GEN, json=LOW, headers=header)
        assert response.status_code == 401, (header, response.text)
        bodies.append(response.json())
    assert all(body == bodies[0] for body in bodies)
    assert (await http.post(GEN, json=LOW, headers=auth(good))).status_code == 200
    assert (await http.get("/v1/requests", headers=auth("nope"))).status_code == 401


async def test_key_limited_to_models_gets_403_for_others(gateway):
    http, app = gateway
    key = await new_key(app, models=["flux-1-schnell"])
    assert (await http.post(GEN, json={"prompt": "x", "model": "flux-1-schnell"}, headers=auth(key))).status_code == 200
    refused = await http.post(GEN, json=LOW, headers=auth(key))
    assert refused.status_code == 403 and refused.json()["error"]["param"] == "model"


async def test_fifty_concurrent_requests_against_a_budget_for_one(gateway):
    http, app = gateway
    key = await new_key(app, budget=Decimal("0.011"))
    barrier = asyncio.Barrier(50)

    async def one() -> int:
        await barrier.wait()
        return (await http.post(GEN, json=LOW, headers=auth(key))).status_code

    statuses = await asyncio.gather(*(one() for _ in range(50)))
    assert statuses.count(200) == 1 and statuses.count(402) == 49
    keys = {k.prefix: k for k in await app.state.runtime.keys.list()}
    stored = keys[key[:12]]
    assert stored.spent == Decimal("0.011") and stored.reserved == 0
    again = await http.post(GEN, json=LOW, headers=auth(key))
    assert again.status_code == 402 and again.json()["error"]["code"] == "budget_exceeded"


async def test_rate_limit_429_with_retry_after(gateway):
    http, app = gateway
    key = await new_key(app, rpm=2)
    statuses = [
        (await http.post(GEN, json={"prompt": "x", "model": "flux-1-schnell"}, headers=auth(key))) for _ in range(3)
    ]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert 1 <= int(statuses[2].headers["retry-after"]) <= 60


async def test_images_per_day(gateway):
    http, app = gateway
    key = await new_key(app, images_per_day=3)
    ok = await http.post(GEN, json={"prompt": "x", "model": "flux-1-schnell", "n": 2}, headers=auth(key))
    assert ok.status_code == 200
    over = await http.post(GEN, json={"prompt": "x", "model": "flux-1-schnell", "n": 2}, headers=auth(key))
    assert over.status_code == 429


async def test_idempotency_replays_without_a_second_charge_and_409s_a_different_body(gateway):
    http, app = gateway
    key = await new_key(app, budget=Decimal("1"))
    headers = {**auth(key), "Idempotency-Key": "order-42"}
    first = await http.post(GEN, json=LOW, headers=headers)
    second = await http.post(GEN, json=LOW, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.headers["idempotent-replayed"] == "true" and second.json() == first.json()
    conflict = await http.post(GEN, json={**LOW, "prompt": "other"}, headers=headers)
    assert conflict.status_code == 409
    rows = (await http.get("/v1/requests", headers=auth(key))).json()["data"]
    assert len(rows) == 1
    keys = {k.prefix: k for k in await app.state.runtime.keys.list()}
    assert keys[key[:12]].spent == Decimal("0.011")


async def test_requests_and_usage_for_the_calling_key(gateway):
    http, app = gateway
    mine, other = await new_key(app), await new_key(app)
    for _ in range(3):
        await http.post(GEN, json=LOW, headers=auth(mine))
    await http.post(GEN, json={**LOW, "model": "nope"}, headers=auth(mine))
    await http.post(GEN, json=LOW, headers=auth(other))
    listing = (await http.get("/v1/requests?limit=2", headers=auth(mine))).json()
    assert len(listing["data"]) == 2 and listing["has_more"]
    rest = (await http.get(f"/v1/requests?limit=2&cursor={listing['next_cursor']}", headers=auth(mine))).json()
    assert len(rest["data"]) == 1 and not rest["has_more"]
    row = listing["data"][0]
    assert row["model"] == "gpt-image-1" and row["status"] == "succeeded" and row["provider"] == "sandbox"
    usage = (await http.get("/v1/usage", headers=auth(mine))).json()
    assert usage["totals"]["requests"] == 3 and Decimal(usage["totals"]["cost"]) == Decimal("0.033")
    filtered = (await http.get("/v1/requests?status=failed", headers=auth(mine))).json()
    assert filtered["data"] == []
    bad = await http.get("/v1/requests?since=yesterday", headers=auth(mine))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"


async def test_metrics_endpoint(gateway):
    http, app = gateway
    key = await new_key(app, rpm=1)
    await http.post(GEN, json=LOW, headers=auth(key))
    await http.post(GEN, json=LOW, headers=auth(key))
    assert (await http.get("/metrics")).status_code == 401  # keys mode: like every /v1 call
    text = (await http.get("/metrics", headers=auth(key))).text
    assert "imagegate_requests_total{" in text and 'model="gpt-image-1"' in text
    assert "imagegate_ratelimit_refusals_total" in text and "imagegate_cost_usd_total" in text


async def test_database_unreachable_is_503_and_nothing_is_called(tmp_path):
    upstream = StubUpstream("fal")
    app = make_app(tmp_path, "postgresql://postgres@127.0.0.1:1/none", mode="open", providers=[upstream])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        response = await http.post(GEN, json={"prompt": "x", "model": "fal/flux-1-schnell"})
    assert response.status_code == 503
    assert upstream.calls == []
    await app.state.runtime.aclose()


async def test_redis_unreachable_fails_open_but_budgets_hold(tmp_path, database_url, caplog):
    app = make_app(tmp_path, database_url, redis_url="redis://127.0.0.1:1/0")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        await app.state.runtime.ready()
        key = await new_key(app, rpm=1, budget=Decimal("0.017"))  # two FLUX images (0.003 each) + one low
        first = await http.post(GEN, json={**LOW, "model": "flux-1-schnell"}, headers=auth(key))
        second = await http.post(GEN, json={**LOW, "model": "flux-1-schnell"}, headers=auth(key))
        assert first.status_code == second.status_code == 200  # rpm 1 not enforced: Redis is down
        priced = await http.post(GEN, json=LOW, headers=auth(key))
        assert priced.status_code == 200
        assert (await http.post(GEN, json=LOW, headers=auth(key))).status_code == 402  # budget still holds
    assert any("rate-limit backend failed" in r.getMessage() for r in caplog.records)
    await app.state.runtime.aclose()


async def test_open_mode_still_writes_the_ledger(tmp_path, database_url):
    app = make_app(tmp_path, database_url, mode="open")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        await http.post(GEN, json=LOW)
        rows = (await http.get("/v1/requests")).json()["data"]
    assert len(rows) == 1 and rows[0]["key_id"] is None
    await app.state.runtime.aclose()


async def test_idempotent_multipart_edit_replays(gateway):
    from tests.helpers import png_bytes

    http, app = gateway
    key = await new_key(app)
    headers = {**auth(key), "Idempotency-Key": "edit-1"}
    files = {"image": ("a.png", png_bytes(64, 64), "image/png")}
    data = {"prompt": "edit", "model": "gpt-image-1", "response_format": "b64_json"}
    first = await http.post("/v1/images/edits", data=data, files=files, headers=headers)
    second = await http.post("/v1/images/edits", data=data, files=files, headers=headers)
    assert first.status_code == second.status_code == 200, first.text
    assert second.headers["idempotent-replayed"] == "true"
