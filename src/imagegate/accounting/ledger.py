"""The request ledger and key budgets: durable, crash-safe, and exact.

    begin   one transaction: reserve the estimate on the key (a single conditional UPDATE) and
            write the `pending` row, before any upstream call
    settle  one transaction: finish the row (only while pending), release its reservation and
            add the actual cost to the key's `spent`; settling twice changes nothing
    reconcile  rows left pending by a crash are marked `reconciled` (cost unknown), their
            reservations released and their in-progress Idempotency-Key claims dropped

Money is `Decimal` USD here and whole nano-dollars (BIGINT) in the database (see storage.schema);
every budget change is integer arithmetic inside one SQL statement, so concurrent requests on
any number of instances cannot overspend. Reservations are rounded up to the nano-dollar, costs
to the nearest one.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, delete, func, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from imagegate.accounting.keys import ApiKey
from imagegate.errors import AuthenticationError, BudgetExceededError, InvalidRequestError
from imagegate.storage.db import Database
from imagegate.storage.schema import NANO, Money, api_keys, idempotency, money_text, requests

STATUSES = ("pending", "succeeded", "failed", "cancelled", "reconciled")
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
MAX_PAGE = 100


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


async def _reserve(conn: AsyncConnection, key_id: str, amount: Decimal) -> None:
    """Add `amount` to the key's `reserved` iff the key is active and its budget covers it."""
    k = api_keys.c
    r = bindparam("amount", amount, type_=Money())
    fits = or_(k.budget.is_(None), k.spent + k.reserved + r <= k.budget)
    stmt = update(api_keys).where(k.id == key_id, k.revoked_at.is_(None), fits).values(reserved=k.reserved + r)
    if (await conn.execute(stmt)).rowcount == 1:
        return
    row = (await conn.execute(select(k.revoked_at, k.budget, k.spent, k.reserved).where(k.id == key_id))).first()
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("this API key has been revoked")
    left = max(row.budget - row.spent - row.reserved, Decimal(0))
    raise BudgetExceededError(
        f"this request may cost up to ${money_text(amount)} and the key has ${money_text(left)} of its budget left"
    )


async def _release(conn: AsyncConnection, key_id: str, reserved: Decimal, cost: Decimal) -> None:
    k = api_keys.c
    await conn.execute(
        update(api_keys)
        .where(k.id == key_id)
        .values(
            reserved=k.reserved - bindparam("released", reserved, type_=Money()),
            spent=k.spent + bindparam("cost", cost, type_=Money()),
        )
    )


async def _release_claims(conn: AsyncConnection, request_ids: list[str]) -> None:
    """Drop the in-progress Idempotency-Key claims of reconciled requests: they will never complete,
    so the client may retry with the same key."""
    t = idempotency.c
    for start in range(0, len(request_ids), 500):
        chunk = request_ids[start : start + 500]
        await conn.execute(delete(idempotency).where(t.state == "in_progress", t.request_id.in_(chunk)))


def _settlement_values(settlement: Settlement, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {
        "status": settlement.status,
        "provider": settlement.provider,
        "images": settlement.images,
        "attempts": json.dumps(settlement.attempts, default=str),
        "cost": settlement.cost,
        "error_code": settlement.error_code,
        "latency_ms": settlement.latency_ms,
        "finished_at": now,
    }
    if settlement.size is not None:  # else keep the size that was asked for
        values["size"] = settlement.size
    if settlement.quality is not None:
        values["quality"] = settlement.quality
    return values


class Ledger:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def begin(self, entry: LedgerEntry, budget_key: ApiKey | None = None) -> None:
        """Reserve `entry.reserved` on the key and write the pending row, atomically.

        Raises `BudgetExceededError` when the key's budget cannot cover the reservation and
        `AuthenticationError` when the key was revoked since it was authenticated.
        """
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
            "created_at": datetime.now(UTC),
        }
        async with self._db.transaction() as conn:
            if key_id is not None:
                await _reserve(conn, key_id, reserved)
            await conn.execute(requests.insert().values(row))

    async def settle(self, request_id: str, settlement: Settlement) -> bool:
        """Finish a pending row and move its money on the key. False (and no change) if not pending."""
        _check_settlement(settlement)
        r = requests.c
        stmt = (
            update(requests)
            .where(r.id == request_id, r.status == "pending")
            .values(_settlement_values(settlement, datetime.now(UTC)))
            .returning(r.key_id, r.reserved)
        )
        async with self._db.transaction() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                return False
            if row.key_id is not None:
                await _release(conn, row.key_id, row.reserved, settlement.cost or Decimal(0))
        return True

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
        stmt = (
            update(requests)
            .where(r.status == "pending", or_(*which))
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
        "attempts": json.loads(row.attempts) if row.attempts else [],
        "reserved": money_text(row.reserved),
        "cost": money_text(row.cost) if row.cost is not None else None,
        "error_code": row.error_code,
        "latency_ms": row.latency_ms,
        "idempotency_key": row.idempotency_key,
        "created_at": row.created_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }
