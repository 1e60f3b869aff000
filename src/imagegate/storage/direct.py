"""SQLAlchemy Core statements run on a bare stdlib `sqlite3` connection: the SQLite writer's hot path.

The ledger's writes (storage.writer, accounting.ledger) are few statements, built once as SQLAlchemy
Core, run thousands of times a minute on one thread. Through a SQLAlchemy `Connection` each one pays
for an execution context, event dispatch and result wrapping: measured 0.74 ms of CPU for a
`begin` + `settle` pair against 0.31 ms for the same SQL on the stdlib module (docs/benchmarks.md).
`DirectConnection` keeps the statements as they are written and does only what they need: compile
each one once for SQLite (cached by statement and parameter names), convert bound values with the
column types' own bind processors (`Money` to nano-dollars, `UTCDateTime` to text), execute, and
convert RETURNING / SELECT columns back with the types' result processors.

It offers the subset of `Connection` the ledger uses: `execute(statement, params)` with one dict or a
list of dicts, returning a result with `first()`, `all()` and `rowcount`.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import exc
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql import ClauseElement

_DIALECT = sqlite_dialect.dialect(paramstyle="qmark")

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Processor, ...]
    defaults: Mapping[str, Any]  # literal values bound in the statement itself ("pending")
    columns: tuple[str, ...]  # RETURNING / SELECT column names
    results: tuple[Processor, ...]
    row: Callable[..., Any] | None  # the row type of RETURNING / SELECT rows


def _compile(statement: ClauseElement, keys: tuple[str, ...]) -> _Compiled:
    compiled = statement.compile(dialect=_DIALECT, column_keys=list(keys) or None)
    names = tuple(compiled.positiontup or ())
    binds = compiled.binds
    processors = tuple(binds[name].type.dialect_impl(_DIALECT).bind_processor(_DIALECT) for name in names)
    defaults = {
        name: bind.effective_value
        for name, bind in binds.items()
        if name not in keys and not bind.required and bind.callable is None
    }
    exported = getattr(statement, "exported_columns", None) or ()
    columns = tuple(column.name for column in exported)
    results = tuple(column.type.dialect_impl(_DIALECT).result_processor(_DIALECT, None) for column in exported)
    row = namedtuple("Row", columns) if columns else None  # type: ignore[misc]
    return _Compiled(compiled.string, names, processors, defaults, columns, results, row)


class DirectResult:
    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def all(self) -> list[Any]:
        return list(self._rows)


class DirectConnection:
    """`execute` for SQLAlchemy Core statements on a stdlib sqlite3 connection (see the module docstring)."""

    _cache: ClassVar[dict[tuple[int, tuple[str, ...]], tuple[ClauseElement, _Compiled]]] = {}

    def __init__(self, conn: sqlite3.Connection, on_statement: Callable[[str], None] | None = None) -> None:
        self._conn = conn
        self._on_statement = on_statement

    def execute(
        self, statement: ClauseElement, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
    ) -> DirectResult:
        many = isinstance(params, Sequence) and not isinstance(params, Mapping)
        batch: Sequence[Mapping[str, Any]] = params if many else [params or {}]  # type: ignore[assignment]
        compiled = self._compiled(statement, tuple(sorted(batch[0])) if batch else ())
        values = [self._bind(compiled, row) for row in batch]
        if self._on_statement is not None:
            self._on_statement(compiled.sql)
        try:
            if many:
                cursor = self._conn.executemany(compiled.sql, values)
                return DirectResult([], cursor.rowcount)
            cursor = self._conn.execute(compiled.sql, values[0])
        except sqlite3.Error as error:  # as SQLAlchemy would raise it: IntegrityError, OperationalError, ...
            raise exc.DBAPIError.instance(compiled.sql, None, error, sqlite3.Error) from error
        rows: list[Any] = []
        if compiled.row is not None:
            row_type = compiled.row
            for raw in cursor.fetchall():
                rows.append(row_type(*(p(v) if p else v for p, v in zip(compiled.results, raw, strict=True))))
        return DirectResult(rows, cursor.rowcount)

    def _compiled(self, statement: ClauseElement, keys: tuple[str, ...]) -> _Compiled:
        key = (id(statement), keys)
        cached = self._cache.get(key)
        if cached is None or cached[0] is not statement:  # the id of a statement that is gone may be reused
            cached = (statement, _compile(statement, keys))
            self._cache[key] = cached
        return cached[1]

    @staticmethod
    def _bind(compiled: _Compiled, row: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, processor in zip(compiled.names, compiled.processors, strict=True):
            if name in row:
                value = row[name]
            elif name in compiled.defaults:
                value = compiled.defaults[name]
            else:  # as SQLAlchemy says it: never a silent NULL
                raise exc.InvalidRequestError(f"A value is required for bind parameter {name!r}")
            out.append(processor(value) if processor is not None else value)
        return tuple(out)
