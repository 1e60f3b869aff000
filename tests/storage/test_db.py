"""The engine, migrations and the one transaction boundary (errors -> 503)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Connection, inspect, select, text
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
