"""The engine, migrations and the one transaction boundary (errors -> 503)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, Table, func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from imagegate.errors import ServiceUnavailableError
from imagegate.storage.db import Database
from imagegate.storage.schema import api_keys, from_nanos, metadata, money_text, to_nanos

TABLES = {"api_keys", "requests", "idempotency", "jobs"}


def _layout(conn: Connection) -> dict[str, set[str]]:
    inspector = inspect(conn)
    return {table: {c["name"] for c in inspector.get_columns(table)} for table in inspector.get_table_names()}


async def test_migrate_creates_the_tables_and_is_a_no_op_the_second_time(db: Database) -> None:
    async with db.transaction(readonly=True) as conn:
        before = await conn.run_sync(_layout)
    assert set(before) == TABLES | {"alembic_version"}
    await db.migrate()
    await db.migrate()
    async with db.transaction(readonly=True) as conn:
        assert await conn.run_sync(_layout) == before
        versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    assert versions == ["0003"]


async def test_the_migration_matches_the_live_schema(db: Database) -> None:
    async with db.transaction(readonly=True) as conn:
        layout = await conn.run_sync(_layout)
        indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("requests")})
        unique = await conn.run_sync(lambda c: [i for i in inspect(c).get_indexes("api_keys") if i["unique"]])
        pk = await conn.run_sync(lambda c: inspect(c).get_pk_constraint("idempotency"))
    for table in metadata.sorted_tables:
        assert layout[table.name] == {c.name for c in table.columns}, table.name
    assert {"ix_requests_key_created", "ix_requests_status_created"} <= indexes
    assert [i["column_names"] for i in unique] == [["key_hash"]]
    assert pk["constrained_columns"] == ["key_id", "idem_key"]


async def test_dialect_and_ping(db: Database) -> None:
    assert db.dialect in ("sqlite", "postgresql")
    await db.ping()


async def test_a_failed_block_rolls_back_and_other_errors_pass_through(db: Database) -> None:
    row = {"id": "key_1", "name": "n", "prefix": "igk_x", "key_hash": "h" * 64, "created_at": datetime.now(UTC)}
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute(api_keys.insert().values(row))
            raise RuntimeError("boom")
    async with db.transaction(readonly=True) as conn:
        assert (await conn.execute(select(api_keys))).all() == []
    async with db.transaction() as conn:
        await conn.execute(api_keys.insert().values(row))
    with pytest.raises(IntegrityError):  # not a 503: the database is fine
        async with db.transaction() as conn:
            await conn.execute(api_keys.insert().values(row))


async def test_money_and_time_round_trip_exactly(db: Database) -> None:
    budget = Decimal("12345.123456789")
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    row = {"id": "key_m", "name": "n", "prefix": "igk_m", "key_hash": "m" * 64, "created_at": created, "budget": budget}
    async with db.transaction() as conn:
        await conn.execute(api_keys.insert().values(row))
        stored = (await conn.execute(select(api_keys).where(api_keys.c.id == "key_m"))).one()
    assert stored.budget == budget and stored.spent == 0 and stored.reserved == 0
    assert stored.created_at == created and stored.created_at.tzinfo is not None


def test_nano_dollar_conversions() -> None:
    assert to_nanos(Decimal("0.25")) == 250_000_000
    assert from_nanos(1) == Decimal("0.000000001")
    assert money_text(from_nanos(1)) == "0.000000001"
    assert money_text(from_nanos(250_000_000)) == "0.25"
    assert money_text(from_nanos(10_000_000_000)) == "10"
    assert money_text(Decimal(0)) == "0"
    with pytest.raises(ValueError):
        to_nanos(Decimal("NaN"))


async def test_sqlite_connections_get_the_pragmas(tmp_path: Path) -> None:
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'new' / 'dir' / 'x.db'}")
    try:
        async with db.transaction(readonly=True) as conn:
            values = [
                (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            ]
    finally:
        await db.close()
    assert values == ["wal", 2, 10000, 1]
    assert db.dialect == "sqlite"


async def test_unreachable_postgres_is_service_unavailable() -> None:
    db = await Database.connect("postgresql+asyncpg://postgres@127.0.0.1:1/test")
    try:
        with pytest.raises(ServiceUnavailableError) as caught:
            async with db.transaction() as conn:
                await conn.execute(text("SELECT 1"))
        assert caught.value.status == 503 and caught.value.message == "database unavailable"
        with pytest.raises(ServiceUnavailableError):
            await db.ping()
        with pytest.raises(ServiceUnavailableError):
            await db.migrate()
    finally:
        await db.close()


async def test_unwritable_sqlite_path_is_service_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    db = await Database.connect(f"sqlite+aiosqlite:///{blocker / 'sub' / 'x.db'}")
    try:
        with pytest.raises(ServiceUnavailableError):
            async with db.transaction() as conn:
                await conn.execute(text("SELECT 1"))
        with pytest.raises(ServiceUnavailableError):
            await db.migrate()
    finally:
        await db.close()


async def test_unsupported_url_is_refused() -> None:
    with pytest.raises(ValueError):
        await Database.connect("mysql+aiomysql://u@h/db")


MARKS = Table("marks", MetaData(), Column("n", Integer))


async def test_the_sqlite_writer_thread_outlives_a_cancelled_waiter_and_restarts_after_close(tmp_path: Path) -> None:
    """run_write on a SQLite file runs on one writer thread: a waiter cancelled mid-transaction does not
    stop its transaction (it commits) nor the thread; close() stops the thread; a later write starts
    a new one on a fresh connection."""
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await db.migrate()
    started, release = threading.Event(), threading.Event()

    def slow_insert(conn: Any) -> None:
        started.set()
        release.wait(5)
        conn.execute(text("CREATE TABLE IF NOT EXISTS marks (n INTEGER)"))
        conn.execute(text("INSERT INTO marks VALUES (1)"))

    def count(conn: Any) -> int:
        return conn.execute(select(func.count()).select_from(MARKS)).first()[0]

    before = set(_writer_threads())
    try:
        waiter = asyncio.ensure_future(db.run_write(slow_insert))
        await asyncio.to_thread(started.wait, 5)
        waiter.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await db.run_write(count) == 1  # the cancelled waiter's transaction committed
        with pytest.raises(ZeroDivisionError):
            await db.run_write(lambda conn: 1 / 0)  # an error reaches its waiter; the thread goes on
        threads = set(_writer_threads()) - before
        assert len(threads) == 1
        await db.close()
        assert not threads.pop().is_alive()
        assert await db.run_write(count) == 1  # a new thread and connection
    finally:
        await db.close()
    assert not set(_writer_threads()) - before


async def test_an_unclosed_sqlite_writer_thread_ends_when_its_database_is_collected(tmp_path: Path) -> None:
    before = set(_writer_threads())
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    await db.run_write(lambda conn: None)
    (thread,) = set(_writer_threads()) - before
    await db.engine.dispose()
    del db  # the last reference: freed at once (no collection, which would also reap other tests' leftovers)
    thread.join(5)
    assert not thread.is_alive()


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "imagegate-sqlite-writer"]
