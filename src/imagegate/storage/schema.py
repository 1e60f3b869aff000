"""The gateway's tables, as SQLAlchemy Core (the alembic migrations hold the same DDL, written out).

Money is stored as whole nano-dollars (1e-9 USD) in BIGINT columns: integer arithmetic is exact on
SQLite and PostgreSQL alike, so budgets are reserved and settled with plain SQL arithmetic
(``reserved = reserved + :r``) inside conditional UPDATEs. The `Money` type converts at the edge:
Python code sees `Decimal` USD, SQL sees integers. BIGINT holds up to ~9.2 billion USD.

Timestamps are timezone-aware UTC `datetime`s (`UTCDateTime`): TIMESTAMPTZ on PostgreSQL, naive
UTC text on SQLite (whose fixed-width format sorts and compares correctly).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

NANOS_PER_USD = Decimal(1_000_000_000)
NANO = Decimal("1e-9")


def to_nanos(usd: Decimal, rounding: str = ROUND_HALF_EVEN) -> int:
    """USD -> whole nano-dollars, rounded with `rounding` when `usd` is finer than 1e-9."""
    if not isinstance(usd, Decimal) or not usd.is_finite():
        raise ValueError(f"money must be a finite Decimal, not {usd!r}")
    return int((usd * NANOS_PER_USD).to_integral_value(rounding=rounding))


def from_nanos(nanos: int | Decimal) -> Decimal:
    """Whole nano-dollars -> USD, exact and without trailing zeros (``250000000`` -> ``0.25``)."""
    return Decimal(nanos) / NANOS_PER_USD


def money_text(usd: Decimal) -> str:
    """A plain decimal string: no exponent, no trailing zeros (``1E-9`` -> ``0.000000001``, ``0.250`` -> ``0.25``)."""
    return format(usd.normalize(), "f")


class Money(TypeDecorator[Decimal]):
    """`Decimal` USD in Python, BIGINT nano-dollars in the database."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        return None if value is None else to_nanos(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else from_nanos(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; naive values are refused rather than guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True, index=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("budget", Money(), nullable=True),  # NULL: unlimited
    Column("spent", Money(), nullable=False, server_default="0"),
    Column("reserved", Money(), nullable=False, server_default="0"),
    Column("rpm", Integer, nullable=True),
    Column("images_per_day", Integer, nullable=True),
    Column("models", Text, nullable=True),  # JSON list of model ids; NULL: every model
    Column("webhook_url", Text, nullable=True),  # the key's jobs' webhook when a request names none
)

requests = Table(
    "requests",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key_id", String(64), ForeignKey("api_keys.id", ondelete="SET NULL"), nullable=True),
    Column("instance", String(), nullable=False),
    Column("model", String(), nullable=False),
    Column("provider", String(), nullable=True),
    Column("mode", String(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("n", Integer, nullable=False),
    Column("images", Integer, nullable=False, server_default="0"),
    Column("size", String(), nullable=True),
    Column("quality", String(), nullable=True),
    Column("attempts", Text, nullable=True),  # JSON list of attempt dicts
    Column("reserved", Money(), nullable=False, server_default="0"),
    Column("cost", Money(), nullable=True),  # NULL: unknown
    Column("error_code", String(), nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Index("ix_requests_key_created", "key_id", "created_at"),
    Index("ix_requests_status_created", "status", "created_at"),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("key_id", String(64), nullable=False),  # "" when the request carried no key
    Column("idem_key", String(255), nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # in_progress | completed
    Column("response_status", Integer, nullable=True),
    Column("response_headers", Text, nullable=True),  # JSON object
    Column("response_body", LargeBinary, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("key_id", "idem_key", name="pk_idempotency"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),  # job_...
    Column("key_id", String(64), nullable=True),  # the key that may read and cancel it; NULL: anonymous
    Column("request_id", String(64), nullable=False, unique=True),  # its ledger row
    Column("status", String(16), nullable=False),  # queued | running | succeeded | failed | canceled
    Column("model", String(), nullable=False),
    Column("mode", String(), nullable=False),
    Column("params", Text, nullable=False),  # JSON: the validated request parameters
    Column("inputs", Text, nullable=True),  # JSON list of [param, stored file id] (edits)
    Column("base_url", String(), nullable=False),  # for the result's file links
    Column("reserved", Money(), nullable=False, server_default="0"),
    Column("images_reserved", Integer, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("cancel_requested", Integer, nullable=False, server_default="0"),
    Column("result", LargeBinary, nullable=True),  # the usual response body (JSON bytes)
    Column("error", Text, nullable=True),  # JSON: {"status": int, "error": {...}} (OpenAI's error object)
    Column("created_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("webhook_url", Text, nullable=True),
    Column("webhook_state", String(16), nullable=True),  # pending | delivering | delivered | failed
    Column("webhook_attempts", Integer, nullable=False, server_default="0"),
    Column("webhook_next_at", UTCDateTime(), nullable=True),
    Column("webhook_error", Text, nullable=True),
    Index("ix_jobs_status_created", "status", "created_at"),
    Index("ix_jobs_webhook", "webhook_state", "webhook_next_at"),
)
