"""Which store errors are an outage (StoreUnavailable: 503, retry later) and which a fault of ours (a plain
StoreError: 500), decided where each driver's errors are translated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from broker.store.protocol import DuplicateMessageId, StoreError, StoreUnavailable
from broker.store.sqlite_connections import translate

asyncpg = pytest.importorskip("asyncpg")
from broker.store.postgres import _Translate  # noqa: E402  (needs asyncpg)


def sqlite_error(tmp_path: Path, action: str) -> sqlite3.Error:
    """A real error from SQLite, as its driver raises it."""
    path = tmp_path / "db.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        if action == "locked":
            holder.execute("BEGIN EXCLUSIVE")
            other.execute("INSERT INTO t (v) VALUES ('x')")
        elif action == "cannot open":
            sqlite3.connect(tmp_path / "missing" / "db.sqlite3").execute("SELECT 1")
        elif action == "syntax":
            other.execute("SELEC 1")
        elif action == "no column":
            other.execute("SELECT nope FROM t")
        elif action == "not null":
            other.execute("INSERT INTO t (v) VALUES (NULL)")
    except sqlite3.Error as exc:
        return exc
    finally:
        other.close()
        holder.close()
    raise AssertionError(f"{action} raised nothing")


@pytest.mark.parametrize("action", ["locked", "cannot open"])
def test_sqlite_files_that_cannot_serve_now_are_unavailable(tmp_path: Path, action: str) -> None:
    assert isinstance(translate(sqlite_error(tmp_path, action)), StoreUnavailable)


@pytest.mark.parametrize("action", ["syntax", "no column", "not null"])
def test_sqlite_statements_that_are_wrong_are_plain_store_errors(tmp_path: Path, action: str) -> None:
    error = translate(sqlite_error(tmp_path, action))
    assert type(error) is StoreError


def test_a_disk_io_error_is_unavailable_whatever_its_extended_code() -> None:
    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = 778  # type: ignore[attr-defined]  # SQLITE_IOERR_WRITE
    assert isinstance(translate(error), StoreUnavailable)


async def translated(exc: BaseException) -> StoreError:
    with pytest.raises(StoreError) as caught:
        async with _Translate():
            raise exc
    return caught.value


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.InterfaceError("cannot perform operation: connection is closed"),
        asyncpg.InterfaceError("pool is closing"),
    ],
    ids=lambda exc: type(exc).__name__,
)
async def test_postgresql_connection_failures_are_unavailable(exc: BaseException) -> None:
    assert isinstance(await translated(exc), StoreUnavailable)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.UndefinedColumnError('column "recipent" does not exist'),
        asyncpg.NotNullViolationError('null value in column "workflow_id"'),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.DataError("invalid input for query argument $1"),
    ],
    ids=lambda exc: type(exc).__name__,
)
async def test_postgresql_statement_errors_are_plain_store_errors(exc: BaseException) -> None:
    error = await translated(exc)
    assert type(error) is StoreError
    assert error.__cause__ is exc


async def test_a_duplicate_message_id_stays_what_it_is() -> None:
    exc = asyncpg.UniqueViolationError('duplicate key value violates unique constraint "messages_pkey"')
    assert isinstance(await translated(exc), DuplicateMessageId)
