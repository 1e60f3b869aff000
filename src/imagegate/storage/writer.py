"""Group commit: one writer task drains a queue of write operations and runs each batch in ONE transaction.

Callers `submit` an operation and await its future; the writer takes everything queued (up to
`max_batch`), runs `apply(connection, ops)` inside `Database.run_write` (on SQLite: one
``BEGIN IMMEDIATE`` and one fsync for the whole batch, on a dedicated thread and connection) and
resolves each future after the commit. While a batch runs, new operations queue up for the next one,
so the number of transactions falls as concurrency rises.

`apply` returns one outcome per operation: a value, or an exception instance that fails only that
operation (a refusal such as an exceeded budget is an outcome, not a raise, so the rest of the
batch commits). When `apply` itself raises:

- `ServiceUnavailableError` (the database is unreachable; `Database.run_write` is the boundary):
  every waiter of the batch gets a 503; the next batch tries again on a fresh transaction;
- anything else (an integrity error, a deadlock): the batch was rolled back as a whole, so each of
  its operations is run again alone, in its own transaction, and only the faulty one fails.

`aclose` flushes: operations queued before it still run (and commit) before the writer stops. A
writer closed and then used again starts a new task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.engine import Connection

from imagegate.errors import ServiceUnavailableError
from imagegate.storage.db import Database

Op = TypeVar("Op")
Apply = Callable[[Connection, Sequence[Op]], list[object]]
MAX_BATCH = 256


class BatchWriter(Generic[Op]):
    def __init__(self, db: Database, apply: Apply[Op], max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._apply = apply
        self._max_batch = max_batch
        self._queue: deque[tuple[Op, asyncio.Future[object]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0  # transactions committed: batches, plus operations re-run alone

    @property
    def queued(self) -> int:
        """Operations waiting for a batch (not counting the batch running now)."""
        return len(self._queue)

    def submit(self, op: Op) -> asyncio.Future[object]:
        """Queue `op`; the future resolves after the commit of its batch (or fails with its error).

        Cancelling the caller does not withdraw a queued operation: await it through `asyncio.shield`.
        """
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        if self._task is None or self._task.done():  # first use, or used again after `aclose`
            self._wake = asyncio.Event()  # (an Event belongs to the loop that first waits on it)
            self._task = asyncio.create_task(self._run(), name="imagegate-batch-writer")
        self._wake.set()
        return future

    async def aclose(self) -> None:
        """Run (and commit) everything already queued, then stop the writer task."""
        task = self._task
        if task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.shield(task)
        finally:
            self._closing = False

    async def _run(self) -> None:
        batch: list[tuple[Op, asyncio.Future[object]]] = []
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
                await self._execute(batch)
                await asyncio.sleep(0)  # let the waiters' done-callbacks run (they may queue more) first
        finally:  # cancelled (the event loop is going away): nobody may wait forever
            stopped = ServiceUnavailableError("the ledger writer stopped")
            for _, future in [*batch, *self._queue]:
                _fail(future, _unavailable(stopped))
            self._queue.clear()

    async def _execute(self, batch: list[tuple[Op, asyncio.Future[object]]]) -> None:
        ops = [op for op, _ in batch]
        try:
            outcomes = await self._db.run_write(lambda conn: self._apply(conn, ops))
        except ServiceUnavailableError as error:
            for _, future in batch:
                _fail(future, _unavailable(error))
            return
        except Exception as error:
            if len(batch) == 1:
                _fail(batch[0][1], error)
                return
            for item in batch:  # the batch was rolled back as a whole: find the faulty operation
                await self._execute([item])
            return
        self.commits += 1
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                _fail(future, outcome)
            elif not future.done():
                future.set_result(outcome)


def _unavailable(error: ServiceUnavailableError) -> ServiceUnavailableError:
    """A fresh 503 per waiter (one exception object raised in many tasks would share its traceback)."""
    fresh = ServiceUnavailableError(error.message)
    fresh.__cause__ = error.__cause__
    return fresh


def _fail(future: asyncio.Future[object], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
