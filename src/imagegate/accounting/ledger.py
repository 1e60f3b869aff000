"""The request ledger and key budgets: durable, crash-safe, and exact.

    begin   reserve the estimate on the key (a single conditional UPDATE) and write the `pending`
            row, committed before it returns, so before any upstream call
    settle  finish the row (only while pending), release its reservation and add the actual cost
            to the key's `spent`; settling twice changes nothing
    reconcile  rows left pending by a crash are marked `reconciled` (cost unknown), their
            reservations released and their in-progress Idempotency-Key claims dropped

Group commit: `begin` and `settle` are operations queued to one writer (storage.writer) that runs
everything queued in ONE transaction, on one connection, and wakes each caller after the commit.
On SQLite that is one ``BEGIN IMMEDIATE`` and one fsync per batch instead of two per request, and
requests no longer queue on the file's write lock one by one. A refused reservation is an outcome
of its own operation (the conditional UPDATE matched no row), so the rest of the batch commits.
`settle` also waits for its commit (no write-behind): a client that reads its usage, or spends the
rest of its budget, right after a response sees the settled row. Within a batch, settled rows are
updated first, then the keys are touched in key order (releases, then the batch's reservations for
that key in arrival order), then the admitted rows are inserted with one executemany: a fixed lock
order, so batches of several instances sharing PostgreSQL cannot deadlock on each other's keys.

Money is `Decimal` USD here and whole nano-dollars (BIGINT) in the database (see storage.schema);
every budget change is integer arithmetic inside one SQL statement, so concurrent requests on
any number of instances cannot overspend. Reservations are rounded up to the nano-dollar, costs
to the nearest one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from imagegate.accounting.idempotency import STORE_RESPONSE, StoredResponse
from imagegate.accounting.keys import ApiKey
from imagegate.errors import AuthenticationError, BudgetExceededError, ImagegateError, InvalidRequestError
from imagegate.storage.db import Database
from imagegate.storage.schema import NANO, Money, UTCDateTime, api_keys, idempotency, jobs, money_text, requests
from imagegate.storage.writer import BatchWriter

STATUSES = ("pending", "succeeded", "failed", "cancelled", "reconciled")
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
MAX_PAGE = 100
log = logging.getLogger("imagegate.accounting")


@dataclass
class LedgerEntry:
    """What is known when a request is admitted."""

    request_id: str
    key_id: str | None
    instance: str
    model: str
    mode: str
    n: int
    size: str | None
    quality: str | None
    reserved: Decimal
    idempotency_key: str | None


@dataclass
class Settlement:
    """How a request ended. `cost` None means unknown (e.g. the upstream may have charged)."""

    status: str  # succeeded | failed | cancelled
    provider: str | None
    images: int
    size: str | None
    quality: str | None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    cost: Decimal | None = None
    error_code: str | None = None
    latency_ms: float | None = None


@dataclass(slots=True)
class _Begin:
    key_id: str | None
    reserved: Decimal
    row: dict[str, Any]  # the pending row, less `created_at` (the batch's commit time)


@dataclass(slots=True)
class _Settle:
    params: dict[str, Any]  # _FINISH's parameters, less `b_finished` (the batch's commit time)
    cost: Decimal
    stored: dict[str, Any] | None = None  # _STORE's parameters: the response for an Idempotency-Key


_Op = _Begin | _Settle

# Built once: SQLAlchemy compiles each of these once per dialect and reuses the compiled form.
_k = api_keys.c
_r = requests.c
_AMOUNT = bindparam("b_amount", type_=Money())
_RESERVE = (
    update(api_keys)
    .where(
        _k.id == bindparam("b_key"),
        _k.revoked_at.is_(None),
        or_(_k.budget.is_(None), _k.spent + _k.reserved + _AMOUNT <= _k.budget),
    )
    .values(reserved=_k.reserved + _AMOUNT)
)
_KEY_STATE = select(_k.revoked_at, _k.budget, _k.spent, _k.reserved).where(_k.id == bindparam("b_key"))
_RELEASE = (
    update(api_keys)
    .where(_k.id == bindparam("b_key"))
    .values(
        reserved=_k.reserved - bindparam("b_released", type_=Money()),
        spent=_k.spent + bindparam("b_cost", type_=Money()),
    )
)
_FINISH = (
    update(requests)
    .where(_r.id == bindparam("b_id"), _r.status == "pending")
    .values(
        status=bindparam("b_status"),
        provider=bindparam("b_provider"),
        images=bindparam("b_images"),
        attempts=bindparam("b_attempts"),
        cost=bindparam("b_cost", type_=Money()),
        error_code=bindparam("b_error_code"),
        latency_ms=bindparam("b_latency_ms"),
        finished_at=bindparam("b_finished", type_=UTCDateTime()),
        size=func.coalesce(bindparam("b_size", type_=String()), _r.size),  # None keeps the size asked for
        quality=func.coalesce(bindparam("b_quality", type_=String()), _r.quality),
    )
    .returning(_r.key_id, _r.reserved)
)
_INSERT = requests.insert()


def _reservation(amount: Decimal) -> Decimal:
    try:
        if not amount.is_finite() or amount < 0:
            raise ValueError
        return amount.quantize(NANO, rounding=ROUND_CEILING)
    except (ValueError, InvalidOperation, AttributeError):
        raise ValueError(f"a reservation must be a Decimal of zero or more, not {amount!r}") from None


def _check_settlement(settlement: Settlement) -> None:
    if settlement.status not in FINAL_STATUSES:
        raise ValueError(f"a settlement status must be one of {sorted(FINAL_STATUSES)}")
    if settlement.cost is not None and (not settlement.cost.is_finite() or settlement.cost < 0):
        raise ValueError("a cost must be a finite amount of zero or more")


def _charged_key(entry: LedgerEntry, budget_key: ApiKey | None) -> str | None:
    if budget_key is None:
        return entry.key_id
    if entry.key_id is not None and entry.key_id != budget_key.id:
        raise ValueError("the entry's key_id and the budget key differ")
    return budget_key.id


def _begin_op(entry: LedgerEntry, budget_key: ApiKey | None) -> _Begin:
    key_id = _charged_key(entry, budget_key)
    reserved = _reservation(entry.reserved)
    row = {
        "id": entry.request_id,
        "key_id": key_id,
        "instance": entry.instance,
        "model": entry.model,
        "mode": entry.mode,
        "status": "pending",
        "n": entry.n,
        "images": 0,
        "size": entry.size,
        "quality": entry.quality,
        "reserved": reserved,
        "idempotency_key": entry.idempotency_key,
    }
    return _Begin(key_id, reserved, row)


def _settle_op(request_id: str, settlement: Settlement, stored: StoredResponse | None = None) -> _Settle:
    _check_settlement(settlement)
    attempts = orjson.dumps(settlement.attempts, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    params = {
        "b_id": request_id,
        "b_status": settlement.status,
        "b_provider": settlement.provider,
        "b_images": settlement.images,
        "b_attempts": attempts,
        "b_cost": settlement.cost,
        "b_error_code": settlement.error_code,
        "b_latency_ms": settlement.latency_ms,
        "b_size": settlement.size,
        "b_quality": settlement.quality,
    }
    return _Settle(params, settlement.cost or Decimal(0), stored.params() if stored is not None else None)


def _refusal(conn: Connection, key_id: str, amount: Decimal) -> ImagegateError:
    """Why the conditional reservation matched no row: the key is revoked (or gone), or over budget."""
    row = conn.execute(_KEY_STATE, {"b_key": key_id}).first()
    if row is None or row.revoked_at is not None:
        return AuthenticationError("this API key has been revoked")
    left = max(row.budget - row.spent - row.reserved, Decimal(0)) if row.budget is not None else Decimal(0)
    return BudgetExceededError(
        f"this request may cost up to ${money_text(amount)} and the key has ${money_text(left)} of its budget left"
    )


def _apply(conn: Connection, ops: Sequence[_Op]) -> list[object]:
    """Run one batch inside its transaction; one outcome per op (None, a bool, or the op's error)."""
    now = datetime.now(UTC)
    outcomes: list[object] = [None] * len(ops)
    settles = sorted(
        ((i, op) for i, op in enumerate(ops) if isinstance(op, _Settle)), key=lambda p: p[1].params["b_id"]
    )
    released = _finish_rows(conn, settles, now, outcomes)
    keyless: list[_Begin] = []
    begins: dict[str, list[tuple[int, _Begin]]] = defaultdict(list)
    for i, op in enumerate(ops):
        if isinstance(op, _Begin):
            if op.key_id is None:
                keyless.append(op)
            else:
                begins[op.key_id].append((i, op))
    admitted = keyless + _touch_keys(conn, released, begins, outcomes)
    if admitted:
        conn.execute(_INSERT, [{**op.row, "created_at": now} for op in admitted])
    return outcomes


def _finish_rows(
    conn: Connection, settles: list[tuple[int, _Settle]], now: datetime, outcomes: list[object]
) -> dict[str, tuple[Decimal, Decimal]]:
    """Finish the pending rows; per key, the reservations to release and the costs to add."""
    released: dict[str, tuple[Decimal, Decimal]] = {}
    for i, op in settles:
        row = conn.execute(_FINISH, {**op.params, "b_finished": now}).first()
        outcomes[i] = row is not None
        if row is not None and op.stored is not None:
            conn.execute(STORE_RESPONSE, op.stored)
        if row is not None and row.key_id is not None:
            reserved, spent = released.get(row.key_id, (Decimal(0), Decimal(0)))
            released[row.key_id] = (reserved + row.reserved, spent + op.cost)
    return released


def _touch_keys(
    conn: Connection,
    released: dict[str, tuple[Decimal, Decimal]],
    begins: dict[str, list[tuple[int, _Begin]]],
    outcomes: list[object],
) -> list[_Begin]:
    """Per key, in key order: release what settled, then reserve each begin in arrival order.
    Returns the admitted begins; a refused one gets its error as its outcome."""
    admitted: list[_Begin] = []
    for key_id in sorted(released.keys() | begins.keys()):
        if key_id in released:
            reserved, spent = released[key_id]
            conn.execute(_RELEASE, {"b_key": key_id, "b_released": reserved, "b_cost": spent})
        for i, op in begins.get(key_id, []):
            if conn.execute(_RESERVE, {"b_key": key_id, "b_amount": op.reserved}).rowcount == 1:
                admitted.append(op)
            else:
                outcomes[i] = _refusal(conn, key_id, op.reserved)
    return admitted


def _log_failure(settled: asyncio.Future[object]) -> None:
    if not settled.cancelled() and settled.exception() is not None:
        log.warning("could not settle an abandoned ledger row; reconciliation will: %s", settled.exception())


async def _release(conn: AsyncConnection, key_id: str, reserved: Decimal, cost: Decimal) -> None:
    await conn.execute(_RELEASE, {"b_key": key_id, "b_released": reserved, "b_cost": cost})


async def _release_claims(conn: AsyncConnection, request_ids: list[str]) -> None:
    """Drop the in-progress Idempotency-Key claims of reconciled requests: they will never complete,
    so the client may retry with the same key."""
    t = idempotency.c
    for start in range(0, len(request_ids), 500):
        chunk = request_ids[start : start + 500]
        await conn.execute(delete(idempotency).where(t.state == "in_progress", t.request_id.in_(chunk)))


class Ledger:
    """`group_commit` (the default, on SQLite and PostgreSQL alike; see docs/benchmarks.md) sends
    `begin` and `settle` through one writer; False runs each in its own transaction (same SQL)."""

    def __init__(self, db: Database, group_commit: bool = True) -> None:
        self._db = db
        self._writer: BatchWriter[_Op] | None = BatchWriter(db, _apply) if group_commit else None

    @property
    def writer(self) -> BatchWriter[_Op] | None:
        """The group-commit writer (None when every operation runs in its own transaction)."""
        return self._writer

    async def aclose(self) -> None:
        """Flush: operations already queued are committed before this returns."""
        if self._writer is not None:
            await self._writer.aclose()

    async def _write(self, op: _Op) -> object:
        if self._writer is None:
            outcome = (await self._db.run_write(lambda conn: _apply(conn, [op])))[0]
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return await asyncio.shield(self._writer.submit(op))

    async def begin(self, entry: LedgerEntry, budget_key: ApiKey | None = None) -> None:
        """Reserve `entry.reserved` on the key and write the pending row, atomically; returns after the commit.

        Raises `BudgetExceededError` when the key's budget cannot cover the reservation and
        `AuthenticationError` when the key was revoked since it was authenticated. A caller
        cancelled while its row is being committed gets the row settled as `cancelled` (nothing was
        called upstream), so the reservation does not wait for reconciliation.
        """
        op = _begin_op(entry, budget_key)
        if self._writer is None:
            await self._write(op)
            return
        future = self._writer.submit(op)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(lambda done: self._abandoned(done, entry.request_id))
            raise

    def _abandoned(self, begun: asyncio.Future[object], request_id: str) -> None:
        if self._writer is not None and not begun.cancelled() and begun.exception() is None:
            cancelled = Settlement("cancelled", None, 0, None, None, [], Decimal(0), "cancelled", None)
            self._writer.submit(_settle_op(request_id, cancelled)).add_done_callback(_log_failure)

    async def settle(self, request_id: str, settlement: Settlement, stored: StoredResponse | None = None) -> bool:
        """Finish a pending row and move its money on the key, and store `stored` (an Idempotency-Key's
        response) in the same transaction. False (and no change) if the row was not pending.

        Shielded: a caller cancelled meanwhile does not stop the write."""
        op = _settle_op(request_id, settlement, stored)
        if self._writer is None:  # a transaction of its own, shielded as the writer's future is
            return bool(await asyncio.shield(self._write(op)))
        return bool(await self._write(op))

    async def reconcile(self, instance: str | None, older_than: timedelta | None) -> int:
        """Mark pending rows `reconciled` (cost unknown) and release their reservations.

        Selects the rows written by `instance` (any age) and/or older than `older_than` (any
        instance). Returns how many rows were reconciled.
        """
        now = datetime.now(UTC)
        r = requests.c
        which: list[ColumnElement[bool]] = []
        if instance is not None:
            which.append(r.instance == instance)
        if older_than is not None:
            which.append(r.created_at < now - older_than)
        if not which:
            raise ValueError("reconcile needs an instance or an age")
        live_job = exists().where(jobs.c.request_id == r.id, jobs.c.status.in_(("queued", "running")))
        stmt = (
            update(requests)
            .where(r.status == "pending", or_(*which), ~live_job)  # a live job's row is settled by its worker
            .values(status="reconciled", cost=None, finished_at=now)
            .returning(r.id, r.key_id, r.reserved)
        )
        async with self._db.transaction() as conn:
            rows = (await conn.execute(stmt)).all()
            released: dict[str, Decimal] = defaultdict(Decimal)
            for row in rows:
                if row.key_id is not None:
                    released[row.key_id] += row.reserved
            for key_id in sorted(released):  # a fixed lock order
                await _release(conn, key_id, released[key_id], Decimal(0))
            await _release_claims(conn, [row.id for row in rows])
        return len(rows)

    async def list_requests(
        self,
        key_id: str | None,
        since: datetime | None = None,
        until: datetime | None = None,
        model: str | None = None,
        provider: str | None = None,
        status: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Ledger rows, newest first, `limit` (1..100) at a time; the second item is the next page's
        cursor (None on the last page). `key_id` None means every key. Rows are JSON-ready: money as
        decimal strings, times as ISO 8601."""
        r = requests.c
        limit = max(1, min(limit, MAX_PAGE))
        where = _filters(key_id, since, until, model, provider, status)
        if cursor is not None:
            created, last_id = _decode_cursor(cursor)
            where.append(or_(r.created_at < created, and_(r.created_at == created, r.id < last_id)))
        stmt = select(requests).where(*where).order_by(r.created_at.desc(), r.id.desc()).limit(limit + 1)
        async with self._db.transaction(readonly=True) as conn:
            rows = (await conn.execute(stmt)).all()
        page = rows[:limit]
        next_cursor = _encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return [_row_dict(row) for row in page], next_cursor

    async def usage(
        self, key_id: str | None, since: datetime | None = None, until: datetime | None = None
    ) -> dict[str, Any]:
        """Totals (requests, succeeded, images, cost) overall and by UTC day, model and provider."""
        where = _filters(key_id, since, until, None, None, None)
        groups = {"by_day": self._day_expression(), "by_model": requests.c.model, "by_provider": requests.c.provider}
        names = {"by_day": "day", "by_model": "model", "by_provider": "provider"}
        async with self._db.transaction(readonly=True) as conn:
            total = (await conn.execute(select(*_measures()).where(*where))).one()
            result: dict[str, Any] = {
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
                "totals": _measure_dict(total),
            }
            for group, expression in groups.items():
                stmt = (
                    select(expression.label("g"), *_measures()).where(*where).group_by(expression).order_by(expression)
                )
                rows = (await conn.execute(stmt)).all()
                result[group] = [{names[group]: row.g, **_measure_dict(row)} for row in rows]
        return result

    def _day_expression(self) -> ColumnElement[Any]:
        created = requests.c.created_at
        if self._db.dialect == "sqlite":  # stored as naive UTC "YYYY-MM-DD HH:MM:SS.ffffff"
            return func.substr(created, 1, 10)
        utc = func.timezone(literal_column("'UTC'"), created)
        return func.to_char(utc, literal_column("'YYYY-MM-DD'"))


def _filters(
    key_id: str | None,
    since: datetime | None,
    until: datetime | None,
    model: str | None,
    provider: str | None,
    status: str | None,
) -> list[ColumnElement[bool]]:
    r = requests.c
    where: list[ColumnElement[bool]] = []
    if key_id is not None:
        where.append(r.key_id == key_id)
    if since is not None:
        where.append(r.created_at >= since)
    if until is not None:
        where.append(r.created_at < until)
    if model is not None:
        where.append(r.model == model)
    if provider is not None:
        where.append(r.provider == provider)
    if status is not None:
        where.append(r.status == status)
    return where


def _measures() -> tuple[ColumnElement[Any], ...]:
    r = requests.c
    return (
        func.count().label("requests"),
        func.sum(case((r.status == "succeeded", 1), else_=0)).label("succeeded"),
        func.sum(r.images).label("images"),
        func.sum(r.cost).label("cost"),  # NULL costs (unknown) are not counted
    )


def _measure_dict(row: Any) -> dict[str, Any]:
    return {
        "requests": int(row.requests or 0),
        "succeeded": int(row.succeeded or 0),
        "images": int(row.images or 0),
        "cost": money_text(row.cost if row.cost is not None else Decimal(0)),
    }


def _encode_cursor(created_at: datetime, request_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), request_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_text, request_id = json.loads(raw)
        created = datetime.fromisoformat(created_text)
        if created.tzinfo is None or not isinstance(request_id, str):
            raise ValueError("bad cursor")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequestError("invalid pagination cursor", param="cursor") from None
    return created, request_id


def _row_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "key_id": row.key_id,
        "instance": row.instance,
        "model": row.model,
        "provider": row.provider,
        "mode": row.mode,
        "status": row.status,
        "n": row.n,
        "images": row.images,
        "size": row.size,
        "quality": row.quality,
        "attempts": orjson.loads(row.attempts) if row.attempts else [],
        "reserved": money_text(row.reserved),
        "cost": money_text(row.cost) if row.cost is not None else None,
        "error_code": row.error_code,
        "latency_ms": row.latency_ms,
        "idempotency_key": row.idempotency_key,
        "created_at": row.created_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }
