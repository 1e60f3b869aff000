"""storage.direct: Core statements on a stdlib sqlite3 connection give what SQLAlchemy would."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, create_engine, exc, insert, select, update

from imagegate.storage.direct import DirectConnection
from imagegate.storage.schema import Money, UTCDateTime

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, nullable=False, unique=True),
    Column("cost", Money, nullable=True),
    Column("at", UTCDateTime, nullable=True),
    Column("state", String, nullable=False),
)


@pytest.fixture
def conn(tmp_path):
    path = tmp_path / "direct.db"
    engine = create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    engine.dispose()
    raw = sqlite3.connect(path, isolation_level=None)
    yield raw
    raw.close()


AT = datetime(2026, 12, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_values_go_through_the_column_types_both_ways(conn) -> None:
    direct = DirectConnection(conn)
    statement = insert(items).values(state="pending").returning(items.c.id, items.c.cost, items.c.at)
    row = direct.execute(statement, {"name": "a", "cost": Decimal("0.040000001"), "at": AT}).first()
    assert row.id == 1 and row.cost == Decimal("0.040000001") and row.at == AT
    assert conn.execute("select state, cost from items").fetchone() == ("pending", 40_000_001)  # nano-dollars
    fetched = direct.execute(select(items.c.name, items.c.cost).where(items.c.id == bindparam("id")), {"id": 1})
    assert [tuple(r) for r in fetched.all()] == [("a", Decimal("0.040000001"))]


def test_a_statement_is_compiled_per_set_of_parameter_names(conn) -> None:
    direct = DirectConnection(conn)
    statement = insert(items).values(state="pending")
    direct.execute(statement, {"name": "a"})
    direct.execute(statement, {"name": "b", "cost": Decimal("1.5")})
    assert conn.execute("select name, cost from items order by id").fetchall() == [("a", None), ("b", 1_500_000_000)]


def test_executemany_and_rowcount(conn) -> None:
    direct = DirectConnection(conn)
    result = direct.execute(insert(items).values(state="x"), [{"name": "a"}, {"name": "b"}, {"name": "c"}])
    assert result.rowcount == 3
    changed = direct.execute(update(items).where(items.c.name != bindparam("keep")).values(state="y"), {"keep": "a"})
    assert changed.rowcount == 2


def test_errors_arrive_as_sqlalchemy_would_raise_them(conn) -> None:
    direct = DirectConnection(conn)
    direct.execute(insert(items).values(state="x"), {"name": "a"})
    with pytest.raises(exc.IntegrityError):
        direct.execute(insert(items).values(state="x"), {"name": "a"})
    with pytest.raises(exc.IntegrityError):  # NOT NULL
        direct.execute(insert(items), {"name": "b"})


def test_a_required_parameter_that_is_missing_is_refused_before_sql(conn) -> None:
    seen: list[str] = []
    direct = DirectConnection(conn, seen.append)
    with pytest.raises(exc.InvalidRequestError, match="'name'"):
        direct.execute(select(items.c.id).where(items.c.name == bindparam("name")), {})
    assert seen == []
