"""The ledger and budgets: atomic reservations under concurrency, settlement, reconciliation,
listing and usage - on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import update

from imagegate.accounting.idempotency import IdempotencyStore
from imagegate.accounting.keys import ApiKey, KeyStore
from imagegate.accounting.ledger import Ledger, LedgerEntry, Settlement
from imagegate.errors import AuthenticationError, BudgetExceededError, InvalidRequestError
from imagegate.storage.db import Database
from imagegate.storage.schema import requests

DAY1 = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
DAY2 = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)


def entry(
    request_id: str, key_id: str | None = None, reserved: str = "0", instance: str = "gw-1", model: str = "gpt-image-1"
) -> LedgerEntry:
    return LedgerEntry(request_id, key_id, instance, model, "generate", 1, "1024x1024", "low", Decimal(reserved), None)


def success(cost: str | None, provider: str = "openai", images: int = 1) -> Settlement:
    attempts = [{"provider": provider, "status": "ok", "latency_ms": 12.5, "cost": Decimal("0.1")}]
    return Settlement(
        "succeeded",
        provider,
        images,
        "1024x1024",
        "low",
        attempts,
        Decimal(cost) if cost is not None else None,
        None,
        100.0,
    )


def failure(cost: str | None) -> Settlement:
    return Settlement(
        "failed",
        None,
        0,
        None,
        None,
        [{"provider": "openai", "status": "error"}],
        Decimal(cost) if cost is not None else None,
        "upstream_error",
        50.0,
    )


async def fresh(keys: KeyStore, key: ApiKey) -> ApiKey:
    stored = await keys.get(key.id)
    assert stored is not None
    return stored


async def set_created(db: Database, request_id: str, when: datetime) -> None:
    async with db.transaction() as conn:
        await conn.execute(update(requests).where(requests.c.id == request_id).values(created_at=when))


async def test_fifty_concurrent_begins_admit_exactly_one(keys: KeyStore, ledger: Ledger) -> None:
    key, _ = await keys.create("race", Decimal("0.25"), None, None, None)
    barrier = asyncio.Barrier(50)

    async def one(i: int) -> str:
        await barrier.wait()
        try:
            await ledger.begin(entry(f"req_{i}", key.id, "0.25"), key)
        except BudgetExceededError:
            return "refused"
        return "admitted"

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert results.count("admitted") == 1 and results.count("refused") == 49
    stored = await fresh(keys, key)
    assert stored.reserved == Decimal("0.25") and stored.spent == 0
    rows, _ = await ledger.list_requests(key.id, limit=100)
    assert len(rows) == 1 and rows[0]["status"] == "pending" and rows[0]["reserved"] == "0.25"


async def test_concurrent_begins_never_reserve_past_the_budget(keys: KeyStore, ledger: Ledger) -> None:
    key, _ = await keys.create("partial", Decimal("1"), None, None, None)
    barrier = asyncio.Barrier(50)

    async def one(i: int) -> bool:
        await barrier.wait()
        try:
            await ledger.begin(entry(f"req_{i}", key.id, "0.03"), key)
        except BudgetExceededError:
            return False
        return True

    admitted = sum(await asyncio.gather(*(one(i) for i in range(50))))
    assert admitted == 33
    assert (await fresh(keys, key)).reserved == Decimal("0.99")


async def test_settle_releases_the_reservation_and_records_the_cost(keys: KeyStore, ledger: Ledger) -> None:
    key, _ = await keys.create("one", Decimal("0.25"), None, None, None)
    await ledger.begin(entry("req_1", key.id, "0.25"), key)
    assert await ledger.settle("req_1", success("0.25"))
    stored = await fresh(keys, key)
    assert (stored.spent, stored.reserved, stored.remaining) == (Decimal("0.25"), 0, 0)
    with pytest.raises(BudgetExceededError) as refused:
        await ledger.begin(entry("req_2", key.id, "0.000000001"), stored)
    assert refused.value.status == 402
    rows, _ = await ledger.list_requests(key.id)
    assert [r["id"] for r in rows] == ["req_1"]
    assert rows[0]["status"] == "succeeded" and rows[0]["cost"] == "0.25" and rows[0]["finished_at"]
    assert rows[0]["attempts"][0]["cost"] == "0.1"


async def test_settling_twice_changes_nothing(keys: KeyStore, ledger: Ledger) -> None:
    key, _ = await keys.create("twice", Decimal("1"), None, None, None)
    await ledger.begin(entry("req_1", key.id, "0.5"), key)
    assert await ledger.settle("req_1", success("0.2"))
    after_first = await fresh(keys, key)
    assert not await ledger.settle("req_1", success("0.4"))
    assert not await ledger.settle("req_1", failure(None))
    assert await fresh(keys, key) == after_first
    assert (after_first.spent, after_first.reserved) == (Decimal("0.2"), 0)
    rows, _ = await ledger.list_requests(key.id)
    assert rows[0]["cost"] == "0.2" and rows[0]["status"] == "succeeded"
    assert not await ledger.settle("req_unknown", success("1"))


async def test_a_failure_releases_without_charging_and_keeps_the_asked_size(keys: KeyStore, ledger: Ledger) -> None:
    key, _ = await keys.create("fail", Decimal("1"), None, None, None)
    await ledger.begin(entry("req_1", key.id, "0.5"), key)
    assert await ledger.settle("req_1", failure(None))
    stored = await fresh(keys, key)
    assert (stored.spent, stored.reserved) == (0, 0)
    rows, _ = await ledger.list_requests(key.id)
    row = rows[0]
    assert (row["status"], row["cost"], row["error_code"], row["size"]) == (
        "failed",
        None,
        "upstream_error",
        "1024x1024",
    )


async def test_unlimited_keys_and_keyless_requests(keys: KeyStore, ledger: Ledger) -> None:
    key, _ = await keys.create("unlimited", None, None, None, None)
    await ledger.begin(entry("req_1", key.id, "1000"), key)
    assert (await fresh(keys, key)).reserved == Decimal("1000")
    await ledger.settle("req_1", success("1.5"))
    stored = await fresh(keys, key)
    assert (stored.spent, stored.reserved) == (Decimal("1.5"), 0)
    await ledger.begin(entry("req_open"), None)
    assert await ledger.settle("req_open", success("0.011"))
    rows, _ = await ledger.list_requests(None)
    assert {r["id"]: r["key_id"] for r in rows} == {"req_1": key.id, "req_open": None}


async def test_money_adds_up_exactly(keys: KeyStore, ledger: Ledger) -> None:
    key, _ = await keys.create("exact", Decimal("3"), None, None, None)
    for i in range(30):
        await ledger.begin(entry(f"req_{i}", key.id, "0.1"), key)
        await ledger.settle(f"req_{i}", success("0.1"))
    stored = await fresh(keys, key)
    assert stored.spent == Decimal("3") and stored.reserved == 0 and stored.remaining == 0
    with pytest.raises(BudgetExceededError):
        await ledger.begin(entry("req_over", key.id, "0.000000001"), key)
    # sub-nano-dollar reservations round up, costs to the nearest nano-dollar
    other, _ = await keys.create("round", Decimal("1"), None, None, None)
    await ledger.begin(entry("req_r", other.id, "0.0000000001"), other)
    assert (await fresh(keys, other)).reserved == Decimal("0.000000001")


async def test_begin_refuses_revoked_keys_and_bad_input(keys: KeyStore, ledger: Ledger) -> None:
    key, _ = await keys.create("gone", None, None, None, None)
    other, _ = await keys.create("other", None, None, None, None)
    await keys.revoke(key.id)
    with pytest.raises(AuthenticationError):
        await ledger.begin(entry("req_1", key.id, "0.1"), key)
    with pytest.raises(ValueError):
        await ledger.begin(entry("req_2", other.id, "-1"), other)
    with pytest.raises(ValueError):
        await ledger.begin(entry("req_3", other.id, "0.1"), key)  # entry and budget key differ
    await ledger.begin(entry("req_4", other.id, "0.1"), other)
    with pytest.raises(ValueError):
        await ledger.settle("req_4", Settlement("reconciled", None, 0, None, None, [], None, None, None))
    with pytest.raises(ValueError):
        await ledger.settle("req_4", success("-0.1"))
    rows, _ = await ledger.list_requests(None)
    assert [r["id"] for r in rows] == ["req_4"]


async def test_reconcile_by_instance_and_by_age(db: Database, keys: KeyStore, ledger: Ledger) -> None:
    key, _ = await keys.create("crash", Decimal("1"), None, None, None)
    await ledger.begin(entry("req_a", key.id, "0.3", instance="gw-1"), key)
    await ledger.begin(entry("req_b", key.id, "0.3", instance="gw-2"), key)
    await ledger.begin(entry("req_c", key.id, "0.1", instance="gw-1"), key)
    await ledger.settle("req_c", success("0.1"))
    assert await ledger.reconcile("gw-1", None) == 1
    assert (await fresh(keys, key)).reserved == Decimal("0.3")
    assert await ledger.reconcile(None, timedelta(hours=1)) == 0
    await set_created(db, "req_b", datetime.now(UTC) - timedelta(hours=2))
    assert await ledger.reconcile(None, timedelta(hours=1)) == 1
    stored = await fresh(keys, key)
    assert (stored.reserved, stored.spent) == (0, Decimal("0.1"))
    assert not await ledger.settle("req_a", success("0.3"))  # a late settle cannot release twice
    assert (await fresh(keys, key)).reserved == 0
    rows, _ = await ledger.list_requests(key.id, status="reconciled")
    assert sorted(r["id"] for r in rows) == ["req_a", "req_b"]
    assert all(r["cost"] is None and r["finished_at"] for r in rows)
    assert await ledger.reconcile("gw-1", timedelta(seconds=1)) == 0
    with pytest.raises(ValueError):
        await ledger.reconcile(None, None)


async def _populate(db: Database, keys: KeyStore, ledger: Ledger) -> tuple[ApiKey, ApiKey]:
    mine, _ = await keys.create("mine", None, None, None, None)
    other, _ = await keys.create("other", None, None, None, None)
    plan = [  # id, key, model, provider, cost or None for a failure, created
        ("req_01", mine, "gpt-image-1", "openai", "0.011", DAY1),
        ("req_02", mine, "gpt-image-1", "openai", "0.011", DAY1 + timedelta(minutes=1)),
        ("req_03", mine, "gpt-image-1", "fal", "0.011", DAY2),
        ("req_04", mine, "flux-1-schnell", "fal", "0.003", DAY2),  # same time as req_03
        ("req_05", mine, "flux-1-schnell", None, None, DAY2 + timedelta(minutes=5)),
        ("req_06", other, "gpt-image-1", "openai", "0.042", DAY2 + timedelta(minutes=6)),
    ]
    for request_id, key, model, provider, cost, created in plan:
        await ledger.begin(entry(request_id, key.id, model=model), key)
        result = success(cost, provider or "openai") if cost is not None else failure(None)
        await ledger.settle(request_id, result)
        await set_created(db, request_id, created)
    await ledger.begin(entry("req_07", mine.id, model="gpt-image-1"), mine)  # still pending
    await set_created(db, "req_07", DAY2 + timedelta(minutes=7))
    return mine, other


async def test_list_requests_filters_and_pages_newest_first(db: Database, keys: KeyStore, ledger: Ledger) -> None:
    mine, other = await _populate(db, keys, ledger)
    everything, cursor = await ledger.list_requests(mine.id, limit=100)
    assert cursor is None
    assert [r["id"] for r in everything] == ["req_07", "req_05", "req_04", "req_03", "req_02", "req_01"]
    for size in (1, 2, 4):
        seen: list[str] = []
        cursor = None
        while True:
            page, cursor = await ledger.list_requests(mine.id, limit=size, cursor=cursor)
            assert len(page) <= size
            seen += [r["id"] for r in page]
            if cursor is None:
                break
        assert seen == [r["id"] for r in everything]
    assert len((await ledger.list_requests(None, limit=100))[0]) == 7
    ids = lambda rows: [r["id"] for r in rows[0]]  # noqa: E731
    assert ids(await ledger.list_requests(other.id)) == ["req_06"]
    assert ids(await ledger.list_requests(mine.id, model="flux-1-schnell")) == ["req_05", "req_04"]
    assert ids(await ledger.list_requests(mine.id, provider="fal")) == ["req_04", "req_03"]
    assert ids(await ledger.list_requests(mine.id, status="failed")) == ["req_05"]
    assert ids(await ledger.list_requests(mine.id, status="pending")) == ["req_07"]
    assert ids(await ledger.list_requests(mine.id, since=DAY2, until=DAY2 + timedelta(minutes=5))) == [
        "req_04",
        "req_03",
    ]
    assert ids(await ledger.list_requests(mine.id, until=DAY2)) == ["req_02", "req_01"]
    assert ids(await ledger.list_requests(mine.id, model="nope")) == []
    with pytest.raises(InvalidRequestError):
        await ledger.list_requests(mine.id, cursor="not-a-cursor!")
    first = everything[-1]
    assert first["created_at"] == DAY1.isoformat() and first["cost"] == "0.011" and first["reserved"] == "0"


async def test_list_requests_caps_the_page_at_100(ledger: Ledger) -> None:
    for i in range(105):
        await ledger.begin(entry(f"req_{i:03}"), None)
    page, cursor = await ledger.list_requests(None, limit=1000)
    assert len(page) == 100 and cursor is not None
    rest, cursor = await ledger.list_requests(None, limit=1000, cursor=cursor)
    assert len(rest) == 5 and cursor is None


async def test_usage_totals_by_day_model_and_provider(db: Database, keys: KeyStore, ledger: Ledger) -> None:
    mine, other = await _populate(db, keys, ledger)
    usage = await ledger.usage(mine.id, None, None)
    assert usage["totals"] == {"requests": 6, "succeeded": 4, "images": 4, "cost": "0.036"}
    assert usage["by_day"] == [
        {"day": "2026-03-01", "requests": 2, "succeeded": 2, "images": 2, "cost": "0.022"},
        {"day": "2026-03-02", "requests": 4, "succeeded": 2, "images": 2, "cost": "0.014"},
    ]
    assert usage["by_model"] == [
        {"model": "flux-1-schnell", "requests": 2, "succeeded": 1, "images": 1, "cost": "0.003"},
        {"model": "gpt-image-1", "requests": 4, "succeeded": 3, "images": 3, "cost": "0.033"},
    ]
    by_provider = {row["provider"]: row for row in usage["by_provider"]}
    assert by_provider["openai"]["cost"] == "0.022" and by_provider["fal"]["cost"] == "0.014"
    assert by_provider[None]["requests"] == 2 and by_provider[None]["cost"] == "0"
    day2 = await ledger.usage(mine.id, DAY2, DAY2 + timedelta(days=1))
    assert day2["totals"]["requests"] == 4 and day2["since"] == DAY2.isoformat()
    everyone = await ledger.usage(None, None, None)
    assert everyone["totals"] == {"requests": 7, "succeeded": 5, "images": 5, "cost": "0.078"}
    assert (await ledger.usage(other.id, DAY1, DAY1 + timedelta(hours=1)))["totals"] == {
        "requests": 0,
        "succeeded": 0,
        "images": 0,
        "cost": "0",
    }


async def test_reconcile_frees_the_idempotency_claims_of_lost_requests(
    ledger: Ledger, idempotency: IdempotencyStore
) -> None:
    assert (await idempotency.claim(None, "lost", "h" * 64, "req_lost")).state == "new"
    assert (await idempotency.claim(None, "done", "h" * 64, "req_done")).state == "new"
    await ledger.begin(entry("req_lost", instance="gw-crashed"), None)
    await ledger.begin(entry("req_done", instance="gw-crashed"), None)
    await ledger.settle("req_done", success("0.1"))
    await idempotency.complete(None, "done", 200, {}, b"{}")
    assert await ledger.reconcile("gw-crashed", None) == 1
    assert (await idempotency.claim(None, "lost", "h" * 64, "req_retry")).state == "new"
    assert (await idempotency.claim(None, "done", "h" * 64, "req_again")).state == "replay"
