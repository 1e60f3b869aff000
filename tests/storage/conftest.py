"""A migrated `Database` on SQLite (a temporary file) and on PostgreSQL (a fresh schema per test).

PostgreSQL is taken from ``IMAGEGATE_TEST_POSTGRES`` (default: the local ``test`` database). When
it is unreachable the PostgreSQL half is skipped, except with ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from imagegate.accounting.idempotency import IdempotencyStore
from imagegate.accounting.keys import KeyStore
from imagegate.accounting.ledger import Ledger
from imagegate.storage.db import Database

PG_DSN = os.environ.get("IMAGEGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PEPPER = b"test-pepper"


async def _admin_connection() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI and is unreachable at {PG_DSN}: {exc!r}")
        pytest.skip(f"PostgreSQL unreachable at {PG_DSN}: {exc!r}")


def postgres_url(schema: str | None = None) -> str:
    url = PG_DSN.replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{url}?search_path={schema}" if schema else url


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'imagegate.db'}")
        try:
            await database.migrate()
            yield database
        finally:
            await database.close()
        return
    admin = await _admin_connection()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    database = await Database.connect(postgres_url(schema))
    try:
        await database.migrate()
        yield database
    finally:
        await database.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest.fixture
def keys(db: Database) -> KeyStore:
    return KeyStore(db, PEPPER)


@pytest.fixture
async def ledger(db: Database) -> AsyncIterator[Ledger]:
    ledger = Ledger(db)
    try:
        yield ledger
    finally:
        await ledger.aclose()


@pytest.fixture
def idempotency(db: Database) -> IdempotencyStore:
    return IdempotencyStore(db)
