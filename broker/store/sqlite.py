"""The embedded metadata store: SQLite in WAL mode, the plans of transactions.py run synchronously on the thread
each kind of work belongs to (sqlite_connections.py)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

from broker.store import queries
from broker.store import transactions as tx
from broker.store.directory_cache import DirectoryCache
from broker.store.rows import from_micros, to_micros
from broker.store.sql_store import PlanFunction, SqlStore
from broker.store.sqlite_connections import CACHE_KIB, SqliteConnections

T = TypeVar("T")
Q = queries.load("sqlite")
#: The blocks written as several statements (sqlite.sql says why), each with how many parameters it binds.
STEPS = {
    name: tuple((statement, queries.parameter_count(statement)) for statement in queries.statements(sql))
    for name, sql in Q.items()
    if len(queries.statements(sql)) > 1
}


class SqliteStore(SqlStore):
    """Times are kept as microseconds since the epoch (INTEGER), dates as ISO text, lists of IDs bound as one
    JSON array (json_each in the SQL)."""

    def __init__(self, path: Path, *, readers: int = 2, busy_timeout_ms: int = 10_000, cache_kib: int = CACHE_KIB):
        super().__init__(DirectoryCache(path.with_name(f"{path.stem}-directory.stamp")), from_micros)
        self._connections = SqliteConnections(
            path, readers=readers, busy_timeout_ms=busy_timeout_ms, cache_kib=cache_kib
        )

    async def open(self) -> None:
        await self._connections.open()

    async def close(self) -> None:
        await self._connections.close()

    # The runners (sql_store.py) --------------------------------------------------------------------------
    async def _lookup(self, plan: PlanFunction[T], *args: Any) -> T:
        answer: T = self._connections.lookup(run, plan, args)
        return answer

    def _scan(self, plan: PlanFunction[T], *args: Any) -> Awaitable[T]:
        return self._connections.read(run, plan, args)

    def _change(self, plan: PlanFunction[T], *args: Any) -> Awaitable[T]:
        return self._connections.write(run, plan, args)

    _single = _change  # in-process statements: one transaction on the writer thread costs no round trips

    def _note(self, plan: PlanFunction[T], *args: Any) -> Awaitable[T]:
        return self._connections.write(run, plan, args, durable=False)

    def _token(self, plan: PlanFunction[T], *args: Any) -> Awaitable[T]:
        return self._connections.write_tokens(run, plan, args)

    # Figures ---------------------------------------------------------------------------------------------
    def pool_usage(self) -> tuple[int, int] | None:
        return None

    def directory_listening(self) -> bool | None:
        return None  # the stamp file, not a connection, tells this store of changes

    async def storage_bytes(self) -> dict[str, int]:
        main, tokens = self._connections.path, self._connections.tokens_path
        files = {
            "database": main,
            "wal": main.with_name(main.name + "-wal"),
            "tokens": tokens,
            "tokens_wal": tokens.with_name(tokens.name + "-wal"),
        }
        return await asyncio.get_running_loop().run_in_executor(None, _file_sizes, files)


def run(conn: sqlite3.Connection, plan: Callable[..., tx.Plan[T]], args: Sequence[Any]) -> T:
    """Run a plan to its end on one connection (inside the caller's transaction, if any)."""
    steps = plan(*args)
    result: Any = None
    try:
        while True:
            result = _execute(conn, steps.send(result))
    except StopIteration as done:
        answer: T = done.value
        return answer


def _execute(conn: sqlite3.Connection, statement: tx.Statement) -> Any:
    sql = statement.query if statement.built else Q[statement.query]
    if statement.fetch is tx.Fetch.MANY:
        conn.executemany(sql, [_bind(params) for params in statement.params])
        return None
    steps = None if statement.built else STEPS.get(statement.query)
    if steps is not None:
        # Several statements, in order, each binding the leading parameters it numbers; the last one answers.
        params = _bind(statement.params)
        for sql, count in steps:
            cursor = conn.execute(sql, params[:count])
    else:
        cursor = conn.execute(sql, _bind(statement.params))
    if statement.fetch is tx.Fetch.ROW:
        return cursor.fetchone()
    if statement.fetch is tx.Fetch.ROWS:
        return cursor.fetchall()
    return cursor.rowcount


def _iso(value: date) -> str:
    return value.isoformat()


def _json_list(values: list[Any]) -> str:
    """A list as one JSON array (json_each in the SQL), its times as microseconds like every time column."""
    return json.dumps([to_micros(v) if type(v) is datetime else v for v in values])


#: How values the driver cannot take as they are get bound (by exact type: datetime is a subclass of date).
_ADAPTERS: dict[type, Callable[[Any], Any]] = {datetime: to_micros, date: _iso, list: _json_list}


def _bind(params: Sequence[Any]) -> Sequence[Any]:
    for value in params:
        if type(value) in _ADAPTERS:
            return [_ADAPTERS[type(v)](v) if type(v) in _ADAPTERS else v for v in params]
    return params  # most statements bind only text and numbers: nothing to copy


def _file_sizes(files: dict[str, Path]) -> dict[str, int]:
    """Each file's size; 0 for one that is not there (a WAL exists only while connections are open)."""
    sizes = {}
    for part, path in files.items():
        try:
            sizes[part] = path.stat().st_size
        except FileNotFoundError:
            sizes[part] = 0
    return sizes
