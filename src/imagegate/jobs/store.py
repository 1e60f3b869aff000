"""The `jobs` table: durable async requests, claimed under leases by any instance's workers.

A job is written once at accept (`queued`) with everything needed to run it elsewhere: the validated
parameters, the stored input images, the ledger row that holds its reservation. A worker claims it
(`running`, `lease_owner`, `lease_until`) and renews the lease while it works; a job whose lease ran
out belongs to whoever claims it next (its instance died), up to `max_attempts` claims. Every
transition is a conditional UPDATE, so two instances never both finish the same job: `finish`
succeeds only for the current lease owner of a running job.

Webhook deliveries ride on the same rows (`webhook_state`, `webhook_next_at`): a finished job with
a `webhook_url` is `pending`; a deliverer claims it (`delivering`, with a lease in
`webhook_next_at`) and records `delivered`, a retry time, or `failed`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, NamedTuple

import orjson
from sqlalchemy import ColumnElement, and_, case, delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from imagegate.accounting.idempotency import STORE_RESPONSE, StoredResponse
from imagegate.storage.db import Database
from imagegate.storage.schema import jobs

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})
LIVE: tuple[str, ...] = ("queued", "running")


def new_job_id() -> str:
    return "job_" + secrets.token_hex(16)


class StoredInput(NamedTuple):
    """An edit job's input image, kept in the result store until the job ends."""

    param: str
    file_id: str
    source_url: str | None = None  # the http(s) URL the gateway fetched it from, when it was one


@dataclass(frozen=True)
class Job:
    """One row of `jobs`, as the code uses it."""

    id: str
    key_id: str | None
    request_id: str
    status: str
    model: str
    mode: str
    params: dict[str, Any]
    inputs: list[StoredInput]
    base_url: str
    reserved: Decimal
    images_reserved: int
    attempts: int
    lease_owner: str | None
    cancel_requested: bool
    result: bytes | None
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    webhook_url: str | None
    webhook_state: str | None
    webhook_attempts: int
    webhook_error: str | None


def _job(row: Any) -> Job:
    return Job(
        id=row.id,
        key_id=row.key_id,
        request_id=row.request_id,
        status=row.status,
        model=row.model,
        mode=row.mode,
        params=orjson.loads(row.params),
        inputs=[StoredInput(*item) for item in orjson.loads(row.inputs or "[]")],
        base_url=row.base_url,
        reserved=row.reserved,
        images_reserved=row.images_reserved,
        attempts=row.attempts,
        lease_owner=row.lease_owner,
        cancel_requested=bool(row.cancel_requested),
        result=bytes(row.result) if row.result is not None else None,
        error=orjson.loads(row.error) if row.error else None,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        webhook_url=row.webhook_url,
        webhook_state=row.webhook_state,
        webhook_attempts=row.webhook_attempts,
        webhook_error=row.webhook_error,
    )


@dataclass(frozen=True)
class NewJob:
    id: str
    key_id: str | None
    request_id: str
    model: str
    mode: str
    params: dict[str, Any]
    inputs: Sequence[StoredInput]
    base_url: str
    reserved: Decimal
    images_reserved: int
    webhook_url: str | None


def _now() -> datetime:
    return datetime.now(UTC)


class JobStore:
    """`ready` gives the connected, migrated database (the runtime's, connected on first use)."""

    def __init__(self, ready: Callable[[], Awaitable[Database]]) -> None:
        self._ready = ready

    @contextlib.asynccontextmanager
    async def _transaction(self, readonly: bool = False) -> AsyncIterator[AsyncConnection]:
        db = await self._ready()
        async with db.transaction(readonly=readonly) as conn:
            yield conn

    async def create(self, job: NewJob, answer: Callable[[Job], StoredResponse] | None = None) -> Job:
        """Insert the queued job; `answer` gives the response to store for its Idempotency-Key, in the
        same transaction (a crash cannot leave a created job whose key says "in progress")."""
        async with self._transaction() as conn:
            await conn.execute(
                jobs.insert().values(
                    id=job.id,
                    key_id=job.key_id,
                    request_id=job.request_id,
                    status="queued",
                    model=job.model,
                    mode=job.mode,
                    params=orjson.dumps(job.params).decode(),
                    inputs=orjson.dumps([list(item) for item in job.inputs]).decode() if job.inputs else None,
                    base_url=job.base_url,
                    reserved=job.reserved,
                    images_reserved=job.images_reserved,
                    created_at=_now(),
                    webhook_url=job.webhook_url,
                )
            )
            created = _job((await conn.execute(select(jobs).where(jobs.c.id == job.id))).one())
            if answer is not None:
                await conn.execute(STORE_RESPONSE, answer(created).params())
        return created

    async def get(self, job_id: str) -> Job | None:
        async with self._transaction(readonly=True) as conn:
            row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).first()
        return _job(row) if row is not None else None

    async def due(self) -> tuple[bool, bool]:
        """Whether some job could be claimed now, and whether some webhook delivery is due: one read,
        what an idle instance polls (never a write while there is nothing to do)."""
        now = _now()
        claimable = or_(jobs.c.status == "queued", and_(jobs.c.status == "running", jobs.c.lease_until < now))
        webhook = and_(jobs.c.webhook_state.in_(("pending", "delivering")), jobs.c.webhook_next_at <= now)
        query = select(exists().where(claimable), exists().where(webhook))
        async with self._transaction(readonly=True) as conn:
            row = (await conn.execute(query)).one()
        return bool(row[0]), bool(row[1])

    async def claim(self, owner: str, lease: timedelta) -> Job | None:
        """The oldest queued job, or a running one whose lease ran out, now leased to `owner`."""
        now = _now()
        claimable = or_(jobs.c.status == "queued", and_(jobs.c.status == "running", jobs.c.lease_until < now))
        stmt = (
            update(jobs)
            # `claimable` re-checked: under READ COMMITTED the subquery may pick a row just taken
            .where(jobs.c.id == _first(claimable, jobs.c.created_at), claimable)
            .values(
                status="running",
                lease_owner=owner,
                lease_until=now + lease,
                attempts=jobs.c.attempts + 1,
                started_at=now,
            )
            .returning(*jobs.c)
        )
        async with self._transaction() as conn:
            row = (await conn.execute(stmt)).first()
        return _job(row) if row is not None else None

    async def renew(self, job_id: str, owner: str, lease: timedelta) -> tuple[bool, bool]:
        """Extend `owner`'s lease. Returns (still ours, cancel requested)."""
        stmt = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == "running", jobs.c.lease_owner == owner)
            .values(lease_until=_now() + lease)
            .returning(jobs.c.cancel_requested)
        )
        async with self._transaction() as conn:
            row = (await conn.execute(stmt)).first()
        return (row is not None, bool(row.cancel_requested) if row is not None else False)

    async def cancel_requested(self, job_id: str) -> bool:
        async with self._transaction(readonly=True) as conn:
            value = (await conn.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id))).scalar()
        return bool(value)

    async def finish(
        self,
        job_id: str,
        owner: str | None,
        status: JobStatus,
        *,
        result: bytes | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Move a live job to `status`: a running one only by its lease owner, a queued one only when
        `owner` is None (canceled before it ran). False when the job was not in that state."""
        now = _now()
        if owner is None:
            which = and_(jobs.c.id == job_id, jobs.c.status == "queued")
        else:
            which = and_(jobs.c.id == job_id, jobs.c.status == "running", jobs.c.lease_owner == owner)
        stmt = (
            update(jobs)
            .where(which)
            .values(
                status=status,
                result=result,
                error=orjson.dumps(error).decode() if error is not None else None,
                finished_at=now,
                lease_until=None,
                webhook_state=_webhook_start(),
                webhook_next_at=now,
            )
        )
        async with self._transaction() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def requeue(self, owner: str) -> int:
        """Give `owner`'s running jobs back to the queue (a graceful stop); their attempt is not counted."""
        stmt = (
            update(jobs)
            .where(jobs.c.status == "running", jobs.c.lease_owner == owner)
            .values(status="queued", lease_owner=None, lease_until=None, attempts=jobs.c.attempts - 1)
        )
        async with self._transaction() as conn:
            return int((await conn.execute(stmt)).rowcount)

    async def request_cancel(self, job_id: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.status.in_(LIVE)).values(cancel_requested=1)
            )

    async def claim_webhook(self, lease: timedelta) -> Job | None:
        """A finished job whose webhook is due (or whose deliverer died), leased for one delivery."""
        now = _now()
        due = and_(jobs.c.webhook_state.in_(("pending", "delivering")), jobs.c.webhook_next_at <= now)
        stmt = (
            update(jobs)
            .where(jobs.c.id == _first(due, jobs.c.webhook_next_at), due)
            .values(
                webhook_state="delivering", webhook_next_at=now + lease, webhook_attempts=jobs.c.webhook_attempts + 1
            )
            .returning(*jobs.c)
        )
        async with self._transaction() as conn:
            row = (await conn.execute(stmt)).first()
        return _job(row) if row is not None else None

    async def webhook_outcome(self, job_id: str, state: str, error: str | None, retry_at: datetime | None) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.webhook_state == "delivering")
                .values(webhook_state=state, webhook_error=error, webhook_next_at=retry_at)
            )

    async def purge(self, older_than: timedelta) -> list[Job]:
        """Delete finished jobs older than `older_than` whose webhooks are settled; returns them."""
        limit = _now() - older_than
        old = and_(
            jobs.c.status.in_(tuple(TERMINAL)),
            jobs.c.finished_at < limit,
            or_(jobs.c.webhook_state.is_(None), jobs.c.webhook_state.in_(("delivered", "failed"))),
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(select(jobs).where(old))).all()
            if rows:
                await conn.execute(delete(jobs).where(jobs.c.id.in_([row.id for row in rows])))
        return [_job(row) for row in rows]


def _first(which: ColumnElement[bool], order: ColumnElement[Any]) -> Any:
    """The id of the first row `which` selects in `order`, skipping rows another transaction has
    locked (PostgreSQL; SQLite has one writer at a time anyway)."""
    return select(jobs.c.id).where(which).order_by(order).limit(1).with_for_update(skip_locked=True).scalar_subquery()


def _webhook_start() -> Any:
    """`pending` for a job that has a webhook URL, else NULL (a SQL expression on the row)."""
    return case((jobs.c.webhook_url.is_not(None), "pending"), else_=None)
