"""The `jobs` table on SQLite and PostgreSQL: claims are exclusive, leases expire, live jobs' ledger
rows are left to their workers, webhook deliveries are claimed once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from imagegate.accounting.ledger import Ledger, LedgerEntry
from imagegate.jobs.store import JobStore, NewJob, new_job_id
from imagegate.storage.db import Database


def _store(db: Database) -> JobStore:
    async def ready() -> Database:
        return db

    return JobStore(ready)


def _new(request_id: str, webhook_url: str | None = None) -> NewJob:
    return NewJob(
        id=new_job_id(),
        key_id=None,
        request_id=request_id,
        model="gpt-image-1",
        mode="text-to-image",
        params={"prompt": "x"},
        inputs=[],
        base_url="http://gw",
        reserved=Decimal(0),
        images_reserved=0,
        webhook_url=webhook_url,
    )


LEASE = timedelta(seconds=30)


async def test_concurrent_claims_take_each_job_exactly_once(db: Database) -> None:
    store = _store(db)
    created = [_new(f"req_{i}") for i in range(20)]
    for job in created:
        await store.create(job)

    async def claimer(owner: str) -> list[str]:
        taken = []
        while (job := await store.claim(owner, LEASE)) is not None:
            taken.append(job.id)
        return taken

    results = await asyncio.gather(*(claimer(f"w{i}") for i in range(4)))
    every = [job_id for taken in results for job_id in taken]
    assert sorted(every) == sorted(job.id for job in created)  # each once, none lost


async def test_an_expired_lease_is_taken_over_and_only_the_new_owner_finishes(db: Database) -> None:
    store = _store(db)
    job = _new("req_1")
    await store.create(job)
    first = await store.claim("dead", timedelta(seconds=-1))  # a lease that has already run out
    assert first is not None and first.attempts == 1
    second = await store.claim("alive", LEASE)
    assert second is not None and second.id == job.id and second.attempts == 2
    assert await store.claim("third", LEASE) is None  # the new lease holds
    assert await store.renew(job.id, "dead", LEASE) == (False, False)
    assert not await store.finish(job.id, "dead", "succeeded", result=b"{}")
    assert await store.finish(job.id, "alive", "succeeded", result=b"{}")
    done = await store.get(job.id)
    assert done is not None and done.status == "succeeded" and done.result == b"{}"


async def test_a_graceful_stop_queues_running_jobs_again_without_counting_the_attempt(db: Database) -> None:
    store = _store(db)
    job = _new("req_1")
    await store.create(job)
    assert await store.claim("stopping", LEASE) is not None
    assert await store.requeue("stopping") == 1
    again = await store.claim("other", LEASE)
    assert again is not None and again.attempts == 1


async def test_cancel_of_a_queued_job_and_cancel_requests_of_running_ones(db: Database) -> None:
    store = _store(db)
    queued, running = _new("req_1"), _new("req_2")
    await store.create(queued)
    await store.create(running)
    assert (await store.claim("w", LEASE)).id == queued.id  # type: ignore[union-attr]
    assert not await store.finish(queued.id, None, "canceled")  # running now: only a request
    await store.request_cancel(queued.id)
    assert await store.renew(queued.id, "w", LEASE) == (True, True)
    assert await store.finish(running.id, None, "canceled")
    assert (await store.get(running.id)).status == "canceled"  # type: ignore[union-attr]
    assert await store.claim("w2", LEASE) is None


async def test_reconciliation_leaves_live_jobs_rows_to_their_workers(db: Database) -> None:
    ledger, store = Ledger(db), _store(db)
    try:
        for request_id in ("req_job", "req_plain"):
            entry = LedgerEntry(
                request_id, None, "inst", "gpt-image-1", "text-to-image", 1, None, None, Decimal(0), None
            )
            await ledger.begin(entry)
        job = _new("req_job")
        await store.create(job)
        assert await ledger.reconcile("inst", None) == 1  # the plain request's row only
        await store.claim("w", LEASE)
        await store.finish(job.id, "w", "failed", error={"status": 500, "error": {}})
        assert await ledger.reconcile("inst", None) == 1  # a finished job's forgotten row is reconciled
    finally:
        await ledger.aclose()


async def test_webhook_deliveries_are_claimed_once_and_retried_when_due(db: Database) -> None:
    store = _store(db)
    job = _new("req_1", webhook_url="https://example.com/hook")
    plain = _new("req_2")
    for item in (job, plain):
        await store.create(item)
        claimed = await store.claim("w", LEASE)
        assert claimed is not None
        await store.finish(claimed.id, "w", "succeeded", result=b"{}")
    claims = await asyncio.gather(*(store.claim_webhook(LEASE) for _ in range(4)))
    taken = [c for c in claims if c is not None]
    assert [c.id for c in taken] == [job.id] and taken[0].webhook_attempts == 1
    await store.webhook_outcome(job.id, "pending", "HTTP 500", datetime.now(UTC) - timedelta(seconds=1))
    retry = await store.claim_webhook(LEASE)
    assert retry is not None and retry.webhook_attempts == 2
    await store.webhook_outcome(job.id, "delivered", None, None)
    assert await store.claim_webhook(LEASE) is None
    assert (await store.get(job.id)).webhook_state == "delivered"  # type: ignore[union-attr]
