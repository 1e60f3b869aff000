"""The ledger's group commit (storage.writer): batching, per-operation refusals, failures, flush on close
and cancellation - on SQLite and PostgreSQL. Commits are counted with SQLAlchemy's "commit" event on
the engine that runs the writer's transactions, faults injected with its "before_cursor_execute"."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, exc
from sqlalchemy.exc import IntegrityError

from imagegate.accounting.keys import KeyStore
from imagegate.accounting.ledger import Ledger
from imagegate.errors import AuthenticationError, BudgetExceededError, ServiceUnavailableError
from imagegate.storage.db import Database
from tests.storage.test_ledger import entry, fresh, success


@contextmanager
def counted_commits(db: Database) -> Iterator[list[int]]:
    """Commits of the writer's transactions: the SQLite writer's counter, or PostgreSQL's engine event."""
    commits: list[int] = []
    hooks = db.write_hooks
    if hooks is not None:
        before = hooks.commits
        yield commits
        commits.extend([1] * (hooks.commits - before))
        return

    def on_commit(conn: Any) -> None:
        commits.append(1)

    event.listen(db.writer_engine, "commit", on_commit)
    try:
        yield commits
    finally:
        event.remove(db.writer_engine, "commit", on_commit)


@contextmanager
def failing_once(db: Database, statement_prefix: str) -> Iterator[list[str]]:
    """The first statement starting with `statement_prefix` fails as if the disk or server went away."""
    failed: list[str] = []

    def fail(statement: str) -> None:
        if not failed and statement.lstrip().upper().startswith(statement_prefix):
            failed.append(statement)
            raise exc.OperationalError(statement, None, Exception("disk I/O error (injected)"))

    hooks = db.write_hooks
    if hooks is not None:
        hooks.before_statement = fail
        try:
            yield failed
        finally:
            hooks.before_statement = None
        return

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        fail(statement)

    event.listen(db.writer_engine, "before_cursor_execute", before)
    try:
        yield failed
    finally:
        event.remove(db.writer_engine, "before_cursor_execute", before)


async def outcome(call: Any) -> str:
    try:
        await call
    except BudgetExceededError:
        return "refused"
    except AuthenticationError:
        return "revoked"
    except ServiceUnavailableError as error:
        return f"unavailable {error.status}"
    except IntegrityError:
        return "integrity"
    return "ok"


async def statuses(ledger: Ledger) -> dict[str, str]:
    rows, _ = await ledger.list_requests(None, limit=100)
    return {row["id"]: row["status"] for row in rows}


async def test_fifty_concurrent_begins_commit_in_one_transaction(db: Database, ledger: Ledger) -> None:
    with counted_commits(db) as commits:
        results = await asyncio.gather(*(outcome(ledger.begin(entry(f"req_{i}"), None)) for i in range(50)))
    assert results == ["ok"] * 50
    assert len(commits) == 1  # everything queued when the writer wakes goes into one transaction
    assert ledger.writer is not None and ledger.writer.commits == 1
    assert set((await statuses(ledger)).values()) == {"pending"} and len(await statuses(ledger)) == 50
    with counted_commits(db) as commits:
        settled = await asyncio.gather(*(ledger.settle(f"req_{i}", success("0.01")) for i in range(50)))
    assert settled == [True] * 50 and len(commits) == 1
    assert set((await statuses(ledger)).values()) == {"succeeded"}


async def test_a_refused_operation_does_not_roll_back_the_rest_of_its_batch(keys: KeyStore, ledger: Ledger) -> None:
    tight, _ = await keys.create("tight", Decimal("0.5"), None, None, None)
    loose, _ = await keys.create("loose", None, None, None, None)
    gone, _ = await keys.create("gone", None, None, None, None)
    await ledger.begin(entry("req_done", loose.id, "0.3"), loose)
    await keys.revoke(gone.id)
    calls = [
        ledger.settle("req_done", success("0.2")),
        *(ledger.begin(entry(f"req_t{i}", tight.id, "0.2"), tight) for i in range(4)),  # 2 fit, 2 refused
        ledger.begin(entry("req_gone", gone.id, "0.1"), gone),
        *(ledger.begin(entry(f"req_l{i}", loose.id, "0.1"), loose) for i in range(3)),
        ledger.begin(entry("req_open"), None),
    ]
    assert ledger.writer is not None
    before = ledger.writer.commits
    results = await asyncio.gather(*(outcome(call) for call in calls))
    assert ledger.writer.commits == before + 1
    assert results == ["ok", "ok", "ok", "refused", "refused", "revoked", "ok", "ok", "ok", "ok"]
    tight_now, loose_now = await fresh(keys, tight), await fresh(keys, loose)
    assert (tight_now.reserved, tight_now.spent) == (Decimal("0.4"), 0)
    assert (loose_now.reserved, loose_now.spent) == (Decimal("0.3"), Decimal("0.2"))
    assert (await fresh(keys, gone)).reserved == 0
    assert await statuses(ledger) == {
        "req_done": "succeeded",
        "req_t0": "pending",
        "req_t1": "pending",
        "req_l0": "pending",
        "req_l1": "pending",
        "req_l2": "pending",
        "req_open": "pending",
    }


async def test_a_failing_statement_fails_only_its_own_operation(keys: KeyStore, ledger: Ledger) -> None:
    key, _ = await keys.create("dup", Decimal("1"), None, None, None)
    calls = [ledger.begin(entry(f"req_{i}", key.id, "0.1"), key) for i in range(3)]
    calls.insert(1, ledger.begin(entry("req_0", key.id, "0.1"), key))  # the same request id twice
    results = await asyncio.gather(*(outcome(call) for call in calls))
    assert sorted(results) == ["integrity", "ok", "ok", "ok"]
    assert (await fresh(keys, key)).reserved == Decimal("0.3")  # the refused insert reserved nothing
    assert sorted(await statuses(ledger)) == ["req_0", "req_1", "req_2"]


async def test_a_database_failure_mid_batch_fails_every_waiter_and_the_next_batch_works(
    db: Database, keys: KeyStore, ledger: Ledger
) -> None:
    key, _ = await keys.create("flaky", Decimal("10"), None, None, None)
    await ledger.begin(entry("req_old", key.id, "1"), key)
    with failing_once(db, "INSERT") as failed:  # after the batch's settle and reservations ran
        calls = [ledger.settle("req_old", success("0.5"))]
        calls += [ledger.begin(entry(f"req_{i}", key.id, "1"), key) for i in range(5)]
        results = await asyncio.gather(*(outcome(call) for call in calls))
    assert failed and results == ["unavailable 503"] * 6
    stored = await fresh(keys, key)
    assert (stored.reserved, stored.spent) == (Decimal("1"), 0)  # all of it rolled back
    assert await statuses(ledger) == {"req_old": "pending"}
    assert await ledger.settle("req_old", success("0.5"))
    await ledger.begin(entry("req_after", key.id, "1"), key)
    stored = await fresh(keys, key)
    assert (stored.reserved, stored.spent) == (Decimal("1"), Decimal("0.5"))
    assert await statuses(ledger) == {"req_old": "succeeded", "req_after": "pending"}


async def test_close_flushes_queued_settlements_durably(db: Database, keys: KeyStore, ledger: Ledger) -> None:
    key, _ = await keys.create("flush", Decimal("5"), None, None, None)
    for i in range(10):
        await ledger.begin(entry(f"req_{i}", key.id, "0.5"), key)
    tasks = [asyncio.create_task(ledger.settle(f"req_{i}", success("0.25"))) for i in range(10)]
    await asyncio.sleep(0)  # the settlements are queued, none has run yet
    assert ledger.writer is not None and ledger.writer.queued == 10
    await ledger.aclose()
    assert [task.result() for task in tasks] == [True] * 10
    reopened = Ledger(db)  # a new writer and reads on other connections: what was committed
    try:
        assert set((await statuses(reopened)).values()) == {"succeeded"}
        stored = await fresh(keys, key)
        assert (stored.reserved, stored.spent) == (0, Decimal("2.5"))
        await reopened.begin(entry("req_next", key.id, "0.5"), key)
        await ledger.begin(entry("req_again", key.id, "0.5"), key)  # a closed writer starts again on use
    finally:
        await reopened.aclose()
    assert (await fresh(keys, key)).reserved == Decimal("1")


async def test_a_begin_cancelled_while_committing_is_settled_as_cancelled(keys: KeyStore, ledger: Ledger) -> None:
    key, _ = await keys.create("gone-away", Decimal("1"), None, None, None)
    task = asyncio.create_task(ledger.begin(entry("req_c", key.id, "0.4"), key))
    await asyncio.sleep(0)  # queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await ledger.aclose()  # the begin commits, then its cancellation settles it
    rows, _ = await ledger.list_requests(key.id)
    assert [(r["id"], r["status"], r["cost"]) for r in rows] == [("req_c", "cancelled", "0")]
    stored = await fresh(keys, key)
    assert (stored.reserved, stored.spent) == (0, 0)


async def test_one_transaction_per_operation_keeps_the_same_rules(db: Database, keys: KeyStore) -> None:
    ledger = Ledger(db, group_commit=False)
    assert ledger.writer is None
    key, _ = await keys.create("single", Decimal("0.25"), None, None, None)

    async def one(i: int) -> str:
        return await outcome(ledger.begin(entry(f"req_{i}", key.id, "0.25"), key))

    with counted_commits(db) as commits:
        results = await asyncio.gather(*(one(i) for i in range(10)))
    assert sorted(results) == ["ok"] + ["refused"] * 9 and len(commits) == 10
    assert await ledger.settle("req_" + str(results.index("ok")), success("0.1"))
    assert not await ledger.settle("req_" + str(results.index("ok")), success("0.1"))
    stored = await fresh(keys, key)
    assert (stored.reserved, stored.spent) == (0, Decimal("0.1"))
