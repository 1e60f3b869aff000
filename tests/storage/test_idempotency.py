"""Idempotency keys: claim, replay, conflict, in progress, release - on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from decimal import Decimal

import pytest

from imagegate.accounting.idempotency import IdempotencyStore, StoredResponse
from imagegate.accounting.ledger import Ledger, LedgerEntry, Settlement

BODY = hashlib.sha256(b'{"prompt": "x"}').hexdigest()
OTHER = hashlib.sha256(b'{"prompt": "y"}').hexdigest()


async def test_claim_complete_replay_and_conflict(idempotency: IdempotencyStore) -> None:
    first = await idempotency.claim("key_a", "order-42", BODY, "req_1")
    assert first.state == "new" and first.request_id == "req_1"
    running = await idempotency.claim("key_a", "order-42", BODY, "req_2")
    assert running.state == "in_progress" and running.request_id == "req_1"
    assert (await idempotency.claim("key_a", "order-42", OTHER, "req_3")).state == "conflict"
    body = b'{"data": [{"b64_json": "\x00\xff"}]}'
    await idempotency.complete(
        "key_a", "order-42", 200, {"x-request-id": "req_1", "x-imagegate-cost-usd": "0.011"}, body
    )
    replay = await idempotency.claim("key_a", "order-42", BODY, "req_4")
    assert replay.state == "replay" and replay.status == 200 and replay.body == body
    assert replay.headers == {"x-request-id": "req_1", "x-imagegate-cost-usd": "0.011"}
    assert (await idempotency.claim("key_a", "order-42", OTHER, "req_5")).state == "conflict"
    await idempotency.release("key_a", "order-42")  # a completed claim is kept
    assert (await idempotency.claim("key_a", "order-42", BODY, "req_6")).state == "replay"


async def test_release_lets_the_client_retry(idempotency: IdempotencyStore) -> None:
    assert (await idempotency.claim(None, "retry-me", BODY, "req_1")).state == "new"
    await idempotency.release(None, "retry-me")
    assert (await idempotency.claim(None, "retry-me", BODY, "req_2")).state == "new"
    await idempotency.release(None, "never-claimed")  # harmless


async def test_keys_are_scoped_per_api_key(idempotency: IdempotencyStore) -> None:
    assert (await idempotency.claim("key_a", "same", BODY, "req_1")).state == "new"
    assert (await idempotency.claim("key_b", "same", OTHER, "req_2")).state == "new"
    assert (await idempotency.claim(None, "same", BODY, "req_3")).state == "new"
    assert (await idempotency.claim("", "same", BODY, "req_4")).state == "in_progress"  # "" is "no key"


async def test_concurrent_claims_have_one_owner(idempotency: IdempotencyStore) -> None:
    barrier = asyncio.Barrier(20)

    async def one(i: int) -> str:
        await barrier.wait()
        return (await idempotency.claim("key_a", "race", BODY, f"req_{i}")).state

    states = await asyncio.gather(*(one(i) for i in range(20)))
    assert states.count("new") == 1 and states.count("in_progress") == 19


async def test_key_length_is_limited(idempotency: IdempotencyStore) -> None:
    assert (await idempotency.claim("key_a", "k" * 255, BODY, "req_1")).state == "new"
    for bad in ("", "k" * 256):
        with pytest.raises(ValueError):
            await idempotency.claim("key_a", bad, BODY, "req_2")
        with pytest.raises(ValueError):
            await idempotency.complete("key_a", bad, 200, {}, b"")
        with pytest.raises(ValueError):
            await idempotency.release("key_a", bad)


async def test_purge_drops_old_claims(idempotency: IdempotencyStore) -> None:
    await idempotency.claim("key_a", "old", BODY, "req_1")
    assert await idempotency.purge(timedelta(hours=1)) == 0
    assert await idempotency.purge(timedelta(seconds=-1)) == 1
    assert (await idempotency.claim("key_a", "old", OTHER, "req_2")).state == "new"


async def test_the_response_is_stored_in_the_transaction_that_settles_the_row(
    idempotency: IdempotencyStore, ledger: Ledger
) -> None:
    """A crash cannot fall between charging a request and storing its answer: both or neither."""
    assert (await idempotency.claim(None, "atomic", BODY, "req_1")).state == "new"
    await ledger.begin(_entry("req_1", "atomic"))
    stored = StoredResponse(None, "atomic", 200, {"x-request-id": "req_1"}, b'{"data": []}')
    assert await ledger.settle("req_1", _succeeded(), stored)
    replay = await idempotency.claim(None, "atomic", BODY, "req_2")
    assert replay.state == "replay" and replay.body == b'{"data": []}'
    # a row that is not pending any more (reconciled meanwhile) settles nothing and stores nothing
    assert (await idempotency.claim(None, "late", BODY, "req_3")).state == "new"
    await ledger.begin(_entry("req_3", "late"))
    assert await ledger.reconcile("inst", None) == 1
    late = StoredResponse(None, "late", 200, {}, b"{}")
    assert not await ledger.settle("req_3", _succeeded(), late)
    assert (await idempotency.claim(None, "late", BODY, "req_4")).state == "new"  # released by the reconcile


async def test_orphan_claims_are_released_and_admitted_ones_kept(idempotency: IdempotencyStore, ledger: Ledger) -> None:
    """A claim whose instance died before the ledger row was written would block its key for a day."""
    for key in ("orphan", "admitted", "fresh"):
        assert (await idempotency.claim(None, key, BODY, f"req_{key}")).state == "new"
    await ledger.begin(_entry("req_admitted", "admitted"))
    await asyncio.sleep(0.05)
    assert (await idempotency.claim(None, "fresh-2", BODY, "req_fresh_2")).state == "new"
    assert await idempotency.release_orphans(timedelta(seconds=0.03)) == 2  # orphan, fresh (old enough)
    assert (await idempotency.claim(None, "orphan", BODY, "req_x")).state == "new"
    assert (await idempotency.claim(None, "admitted", BODY, "req_y")).state == "in_progress"
    assert (await idempotency.claim(None, "fresh-2", BODY, "req_z")).state == "in_progress"  # too young


def _entry(request_id: str, idem_key: str) -> LedgerEntry:
    return LedgerEntry(request_id, None, "inst", "gpt-image-1", "text-to-image", 1, None, None, Decimal(0), idem_key)


def _succeeded() -> Settlement:
    return Settlement("succeeded", "sandbox", 1, "1024x1024", "low", [], Decimal(0), None, 12.0)
