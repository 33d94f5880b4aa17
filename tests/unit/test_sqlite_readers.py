"""broker/store/sqlite_readers.py: scans on reader threads, answers and errors back on the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from broker.store.protocol import StoreError
from broker.store.sqlite_readers import ReaderThreads


def translate(exc: sqlite3.Error) -> Exception:
    return StoreError(f"translated: {exc}")


def pool(tmp_path: Path, threads: int = 2) -> ReaderThreads:
    def connect() -> sqlite3.Connection:
        return sqlite3.connect(tmp_path / "db.sqlite3", check_same_thread=False)

    readers = ReaderThreads(connect, translate, threads=threads)
    readers.start()
    return readers


def square(conn: sqlite3.Connection, n: int) -> tuple[int, str]:
    (value,) = conn.execute("SELECT ? * ?", (n, n)).fetchone()
    return value, threading.current_thread().name


async def test_each_scan_is_answered_on_a_reader_thread(tmp_path: Path) -> None:
    readers = pool(tmp_path)
    try:
        answers = await asyncio.gather(*(readers.run(square, (n,)) for n in range(50)))
    finally:
        readers.stop()
    assert [value for value, _ in answers] == [n * n for n in range(50)]
    assert {name for _, name in answers} <= {"sqlite-reader_0", "sqlite-reader_1"}
    assert threading.current_thread().name not in {name for _, name in answers}


async def test_a_driver_error_is_translated_and_keeps_its_cause(tmp_path: Path) -> None:
    def bad(conn: sqlite3.Connection) -> Any:
        return conn.execute("SELECT * FROM no_such_table").fetchall()

    readers = pool(tmp_path)
    try:
        with pytest.raises(StoreError, match="translated: no such table") as caught:
            await readers.run(bad, ())
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        assert (await readers.run(square, (3,)))[0] == 9  # the thread goes on serving
    finally:
        readers.stop()


async def test_other_errors_reach_the_caller_as_they_are(tmp_path: Path) -> None:
    def broken(conn: sqlite3.Connection) -> Any:
        raise KeyError("plan bug")

    readers = pool(tmp_path, threads=1)
    try:
        with pytest.raises(KeyError, match="plan bug"):
            await readers.run(broken, ())
    finally:
        readers.stop()


async def test_a_cancelled_caller_leaves_the_thread_serving(tmp_path: Path) -> None:
    release = threading.Event()

    def slow(conn: sqlite3.Connection) -> int:
        release.wait(5)
        return 1

    readers = pool(tmp_path, threads=1)
    try:
        waiting = asyncio.ensure_future(readers.run(slow, ()))
        await asyncio.sleep(0.05)
        waiting.cancel()
        release.set()
        assert (await readers.run(square, (4,)))[0] == 16
        assert waiting.cancelled()
    finally:
        readers.stop()


async def test_stop_finishes_the_scans_already_queued(tmp_path: Path) -> None:
    readers = pool(tmp_path, threads=1)
    queued = [asyncio.ensure_future(readers.run(square, (n,))) for n in range(5)]
    await asyncio.sleep(0)  # each has put its job
    await asyncio.get_running_loop().run_in_executor(None, readers.stop)
    assert [(await q)[0] for q in queued] == [0, 1, 4, 9, 16]


def test_a_connection_that_cannot_open_fails_start(tmp_path: Path) -> None:
    def connect() -> sqlite3.Connection:
        return sqlite3.connect(tmp_path / "missing" / "db.sqlite3")

    readers = ReaderThreads(connect, translate, threads=2)
    with pytest.raises(StoreError, match="translated"):
        readers.start()
