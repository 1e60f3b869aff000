"""The database: one async SQLAlchemy engine (SQLite by default, PostgreSQL for several instances).

Every statement runs inside `Database.transaction()`, the one place where a connection failure
(refused, timed out, unwritable file, lost server) becomes `ServiceUnavailableError` (503).

SQLite: WAL, synchronous=FULL, a 10 s busy timeout and foreign keys on every connection. Write
transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead
of failing to upgrade a read lock; read-only ones use a plain (deferred) BEGIN and never block.
`run_write` (the ledger's group commit, see storage.writer) runs a synchronous function in one write
transaction: for a SQLite file on a dedicated thread with its own (stdlib sqlite3) connection, so a
whole batch costs one thread hop instead of several per statement through aiosqlite; elsewhere on
the async engine through `AsyncConnection.run_sync`.

PostgreSQL: a ``search_path`` query parameter in the URL (``...?search_path=imagegate``) selects a
schema; other query parameters go to asyncpg unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, exc, make_url, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from imagegate.errors import ServiceUnavailableError
from imagegate.storage.direct import DirectConnection

log = logging.getLogger("imagegate.storage")
T = TypeVar("T")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_IMMEDIATE = "imagegate_sqlite_immediate"
_MIGRATION_LOCK = 0x1A6E6A7E  # pg_advisory_xact_lock id: one migrator at a time across instances
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
)


def _unavailable_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [
        OSError,
        TimeoutError,
        exc.OperationalError,
        exc.InterfaceError,
        exc.TimeoutError,
    ]
    try:
        import asyncpg
    except ImportError:  # SQLite-only installs
        return tuple(types)
    types += [asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError]
    return tuple(types)


_UNAVAILABLE = _unavailable_types()


def _is_unavailable(error: BaseException) -> bool:
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, _UNAVAILABLE)


@contextmanager
def _unavailable_as_503() -> Iterator[None]:
    """The boundary: connection-level failures become `ServiceUnavailableError`, others pass through."""
    try:
        yield
    except Exception as error:
        if not _is_unavailable(error):
            raise
        log.warning("database unavailable: %s: %s", type(error).__name__, _short(error))
        raise ServiceUnavailableError("database unavailable") from error


@dataclass
class WriteHooks:
    """Test points of the SQLite writer: commits counted, and a hook run before each statement (it may
    raise, as a failing disk would)."""

    commits: int = 0
    before_statement: Callable[[str], None] | None = None


class _SqliteWriter:
    """One thread and one stdlib sqlite3 connection for a SQLite file's write batches: the statements
    run through `DirectConnection` (storage.direct), without SQLAlchemy's per-statement machinery.

    The thread takes jobs from a `queue.SimpleQueue` and hands each result back with one
    ``call_soon_threadsafe`` (no executor: its work items, concurrent futures and chained asyncio
    futures cost more of the event loop's time than the hop itself). A job whose waiter was
    cancelled still runs to its end, as in an executor."""

    def __init__(self, url: URL) -> None:
        self.path = url.database or ""
        self.hooks = WriteHooks()
        self._conn: sqlite3.Connection | None = None
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._thread: threading.Thread | None = None

    async def run(self, work: Callable[[Any], T]) -> T:
        return await self._call(self._transaction, work)

    def _call(self, fn: Callable[[Any], T], arg: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=_serve_jobs, args=(self._jobs,), name="imagegate-sqlite-writer", daemon=True
            )
            self._thread.start()
            weakref.finalize(self, self._jobs.put, None)  # unclosed and gone: the thread ends too
        self._jobs.put((fn, arg, loop, future))
        return future

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
                for pragma in _SQLITE_PRAGMAS:
                    conn.execute(pragma)
            except sqlite3.Error as error:
                raise exc.DBAPIError.instance("connect", None, error, sqlite3.Error) from error
            self._conn = conn
        return self._conn

    def _transaction(self, work: Callable[[Any], T]) -> T:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise exc.DBAPIError.instance("BEGIN IMMEDIATE", None, error, sqlite3.Error) from error
        try:
            result = work(DirectConnection(conn, self.hooks.before_statement))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self.hooks.commits += 1
        return result

    def _dispose(self, _: object = None) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        jobs, thread = self._jobs, self._thread
        if jobs is None or thread is None:
            return
        await self._call(self._dispose, None)  # the connection is closed by the thread that opened it
        self._jobs = self._thread = None
        jobs.put(None)
        thread.join()


_Job = tuple[Callable[[Any], Any], Any, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _serve_jobs(jobs: queue.SimpleQueue[_Job | None]) -> None:
    """The writer thread: run each job and hand its outcome to its loop; stop at None (put by `close`,
    or when the writer is garbage-collected unclosed). Holds no job between jobs, so an unclosed
    writer can be collected."""
    while True:
        job = jobs.get()
        if job is None:
            return
        _run_job(*job)
        del job


def _run_job(fn: Callable[[Any], Any], arg: Any, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
    try:
        outcome: tuple[Any, BaseException | None] = (fn(arg), None)
    except BaseException as error:  # handed to the waiter, which re-raises it
        outcome = (None, error)
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle_future, future, *outcome)


def _settle_future(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the waiter was cancelled
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class Database:
    """An async engine plus the transaction boundary every query goes through."""

    def __init__(self, engine: AsyncEngine, sqlite_writer: _SqliteWriter | None = None) -> None:
        self._engine = engine
        self._sqlite_writer = sqlite_writer

    @classmethod
    async def connect(cls, url: str) -> Database:
        """Build the engine (no connection is made yet: failures surface from `transaction()`)."""
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            file = bool(parsed.database) and parsed.database != ":memory:"
            return cls(_sqlite_engine(parsed), _SqliteWriter(parsed) if file else None)
        if parsed.get_backend_name() == "postgresql":
            return cls(_postgres_engine(parsed))
        raise ValueError(f"unsupported database URL scheme: {parsed.drivername}")

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def writer_engine(self) -> Engine:
        """The engine whose connections run `run_write` on PostgreSQL (for event hooks in tests)."""
        return self._engine.sync_engine

    @property
    def write_hooks(self) -> WriteHooks | None:
        """The SQLite writer's test points (None on PostgreSQL: use `writer_engine`'s events)."""
        return self._sqlite_writer.hooks if self._sqlite_writer is not None else None

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    @asynccontextmanager
    async def transaction(self, readonly: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block exits normally, rolled back on any exception.

        Connection-level failures anywhere inside (connect, statements, commit) are raised as
        `ServiceUnavailableError`; other exceptions (integrity errors, the caller's own) pass through.
        `readonly` only matters on SQLite, where writers take the write lock up front.
        """
        with _unavailable_as_503():
            async with self._engine.connect() as conn:
                if not readonly:
                    await conn.execution_options(**{_IMMEDIATE: True})
                async with conn.begin():
                    yield conn

    async def run_write(self, work: Callable[[Any], T]) -> T:
        """Run `work(connection)` in one write transaction: committed when it returns, rolled back when
        it raises. Same error boundary as `transaction()`. `work` runs synchronously (on SQLite files in
        the writer thread), so it must not touch the event loop."""
        if self._sqlite_writer is not None:
            with _unavailable_as_503():
                return await self._sqlite_writer.run(work)
        async with self.transaction() as conn:
            return await conn.run_sync(work)

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (alembic ``upgrade head``); a no-op when current."""
        async with self.transaction() as conn:
            if self.dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK})
            await conn.run_sync(_upgrade_head)

    async def ping(self) -> None:
        """Raise `ServiceUnavailableError` unless the database answers."""
        async with self.transaction(readonly=True) as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
        await self._engine.dispose()


def _short(error: BaseException) -> str:
    """The driver's message without SQL text or bound parameters (those may hold request data)."""
    original = getattr(error, "orig", None) or error
    return str(original).splitlines()[0][:200] if str(original) else type(original).__name__


def _upgrade_head(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _sqlite_engine(url: URL) -> AsyncEngine:
    url = url.set(drivername="sqlite+aiosqlite")
    if not url.database or url.database == ":memory:":  # one shared connection (tests, experiments)
        engine = create_async_engine(url)
    else:
        try:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # reported by the first transaction, as 503
            log.warning("cannot create the database directory: %s", error)
        engine = create_async_engine(url, pool_size=5, max_overflow=10, pool_timeout=10)
    event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Autocommit at the driver: transactions are begun explicitly by `_sqlite_on_begin`.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _postgres_engine(url: URL) -> AsyncEngine:
    connect_args: dict[str, Any] = {"timeout": 3, "command_timeout": 30}
    search_path = url.query.get("search_path")
    if search_path is not None:
        connect_args["server_settings"] = {"search_path": str(search_path)}
        url = url.difference_update_query(["search_path"])
    return create_async_engine(
        url.set(drivername="postgresql+asyncpg"),
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args=connect_args,
    )
