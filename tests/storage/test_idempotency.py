"""Idempotency keys: claim, replay, conflict, in progress, release - on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pytest

from imagegate.accounting.idempotency import IdempotencyStore

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
