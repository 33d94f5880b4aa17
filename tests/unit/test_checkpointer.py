"""The checkpointer's choice each round: PASSIVE always, RESTART once the log is past its limit."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from broker.store.sqlite_writer import Checkpointer


class RecordingConnection:
    """Answers wal_checkpoint like SQLite, (busy, log frames, frames copied), and records each mode asked for."""

    def __init__(self, log_frames: int):
        self.log_frames = log_frames
        self.modes: list[str] = []

    def execute(self, sql: str) -> Any:
        mode = sql.split("(")[1].rstrip(")")
        self.modes.append(mode)
        frames = self.log_frames if mode == "PASSIVE" else 0
        cursor = type("Cursor", (), {})()
        cursor.fetchone = lambda: (0, frames, frames)
        cursor.fetchall = lambda: [(0, frames, frames)]
        return cursor


def test_a_short_log_is_only_copied() -> None:
    conn = RecordingConnection(log_frames=99)
    assert Checkpointer(lambda: conn, restart_frames=100).checkpoint(conn) is False  # type: ignore[arg-type]
    assert conn.modes == ["PASSIVE"]


def test_a_log_past_the_limit_is_started_over() -> None:
    conn = RecordingConnection(log_frames=100)
    assert Checkpointer(lambda: conn, restart_frames=100).checkpoint(conn) is True  # type: ignore[arg-type]
    assert conn.modes == ["PASSIVE", "RESTART"]


@pytest.mark.parametrize("restart_frames", [10, 10**9])
def test_under_readers_only_a_restart_round_starts_the_log_over(tmp_path: Path, restart_frames: int) -> None:
    """Against real SQLite, as under load: a reader holds a snapshot while the round runs, so PASSIVE cannot copy
    everything, and readers keep the log from starting over. Without the RESTART round the log keeps growing;
    with it, the round waits for the reader, copies the rest, and the next write starts the log from the top."""
    path = tmp_path / "wal.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (x INTEGER)")
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    rounds = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()  # pins a snapshot before the inserts
        for n in range(50):
            writer.execute("INSERT INTO t VALUES (?)", (n,))

        def reader_moves_on() -> None:
            reader.execute("COMMIT")
            reader.execute("SELECT count(*) FROM t").fetchone()  # and reads again at once, briefly, as under load

        timer = threading.Timer(0.2, reader_moves_on)
        timer.start()
        restarted = Checkpointer(lambda: rounds, restart_frames=restart_frames).checkpoint(rounds)
        timer.join()
        writer.execute("INSERT INTO t VALUES (-1)")
        log_frames = rounds.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]

        assert restarted is (restart_frames == 10)
        if restarted:
            assert log_frames <= 2  # the insert after the round went to the top of the log
        else:
            assert log_frames > 50
        assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 51
    finally:
        for conn in (writer, reader, rounds):
            conn.close()
