"""Idempotency-Key: the first request with a key runs; repeats get its stored response.

The row's primary key (key_id, idem_key) is the lock: whoever inserts it first owns the request.
Keys are scoped per API key ("" when the request carried none), so two callers never collide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, delete, exists, select, update
from sqlalchemy.exc import IntegrityError

from imagegate.storage.db import Database
from imagegate.storage.schema import idempotency, requests

MAX_KEY_CHARS = 255
_CLAIM_TRIES = 3
ClaimState = Literal["new", "replay", "conflict", "in_progress"]


@dataclass(frozen=True)
class Claim:
    """`new`: the caller owns the key and must `complete` or `release` it. `replay`: `status`,
    `headers` and `body` are the stored response. `conflict`: same key, different body.
    `in_progress`: same key and body, still running elsewhere."""

    state: ClaimState
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    request_id: str | None = None


@dataclass(frozen=True)
class StoredResponse:
    """The response of an Idempotency-Key request, stored in the transaction that settles its ledger
    row (or creates its job), so a crash never leaves a charged request whose key says "in progress"."""

    key_id: str | None
    idem_key: str
    status: int
    headers: dict[str, str]
    body: bytes

    def params(self) -> dict[str, Any]:
        """`STORE_RESPONSE`'s parameters."""
        return {
            "s_owner": self.key_id or "",
            "s_key": self.idem_key,
            "s_status": self.status,
            "s_headers": json.dumps(self.headers),
            "s_body": self.body,
        }


_t = idempotency.c
STORE_RESPONSE = (
    update(idempotency)
    .where(_t.key_id == bindparam("s_owner"), _t.idem_key == bindparam("s_key"), _t.state == "in_progress")
    .values(
        state="completed",
        response_status=bindparam("s_status"),
        response_headers=bindparam("s_headers"),
        response_body=bindparam("s_body"),
    )
)


def _check_key(idem_key: str) -> None:
    if not idem_key or len(idem_key) > MAX_KEY_CHARS:
        raise ValueError(f"an idempotency key must be 1-{MAX_KEY_CHARS} characters")


def _verdict(row: Any, body_hash: str) -> Claim:
    if row.body_hash != body_hash:
        return Claim("conflict", request_id=row.request_id)
    if row.state != "completed":
        return Claim("in_progress", request_id=row.request_id)
    headers = json.loads(row.response_headers) if row.response_headers else {}
    return Claim("replay", row.response_status, headers, bytes(row.response_body or b""), row.request_id)


class IdempotencyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, key_id: str | None, idem_key: str, body_hash: str, request_id: str) -> Claim:
        """Claim `idem_key` for `request_id`, or say why not (replay, conflict, in progress)."""
        _check_key(idem_key)
        owner = key_id or ""
        for _ in range(_CLAIM_TRIES):
            if await self._insert(owner, idem_key, body_hash, request_id):
                return Claim("new", request_id=request_id)
            row = await self._read(owner, idem_key)
            if row is not None:
                return _verdict(row, body_hash)
            # released between our insert and our read: try again
        return Claim("in_progress")

    async def _insert(self, owner: str, idem_key: str, body_hash: str, request_id: str) -> bool:
        values = {
            "key_id": owner,
            "idem_key": idem_key,
            "body_hash": body_hash,
            "request_id": request_id,
            "state": "in_progress",
            "created_at": datetime.now(UTC),
        }
        try:
            async with self._db.transaction() as conn:
                await conn.execute(idempotency.insert().values(values))
        except IntegrityError:
            return False
        return True

    async def _read(self, owner: str, idem_key: str) -> Any:
        t = idempotency.c
        async with self._db.transaction(readonly=True) as conn:
            result = await conn.execute(select(idempotency).where(t.key_id == owner, t.idem_key == idem_key))
            return result.first()

    async def complete(
        self, key_id: str | None, idem_key: str, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        """Store the response of a claimed request; later claims with the same body replay it."""
        _check_key(idem_key)
        t = idempotency.c
        stmt = (
            update(idempotency)
            .where(t.key_id == (key_id or ""), t.idem_key == idem_key, t.state == "in_progress")
            .values(state="completed", response_status=status, response_headers=json.dumps(headers), response_body=body)
        )
        async with self._db.transaction() as conn:
            await conn.execute(stmt)

    async def release(self, key_id: str | None, idem_key: str) -> None:
        """Drop an in-progress claim (the request failed), so the client can retry with the same key."""
        _check_key(idem_key)
        t = idempotency.c
        stmt = delete(idempotency).where(t.key_id == (key_id or ""), t.idem_key == idem_key, t.state == "in_progress")
        async with self._db.transaction() as conn:
            await conn.execute(stmt)

    async def release_orphans(self, older_than: timedelta) -> int:
        """Drop in-progress claims older than `older_than` that have no ledger row: their instance died
        between the claim and the admission (a live request writes its row right after claiming), so
        the client may retry with the same key."""
        cutoff = datetime.now(UTC) - older_than
        t = idempotency.c
        admitted = exists().where(requests.c.id == t.request_id)
        stmt = delete(idempotency).where(t.state == "in_progress", t.created_at < cutoff, ~admitted)
        async with self._db.transaction() as conn:
            return int((await conn.execute(stmt)).rowcount)

    async def purge(self, older_than: timedelta) -> int:
        """Delete claims older than `older_than` (stored replays and abandoned in-progress ones)."""
        cutoff = datetime.now(UTC) - older_than
        async with self._db.transaction() as conn:
            result = await conn.execute(delete(idempotency).where(idempotency.c.created_at < cutoff))
            return result.rowcount
