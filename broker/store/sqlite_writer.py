"""The embedded store's single writer thread, committing concurrent writes together (group commit).

SQLite allows one writer at a time, and with synchronous=FULL every commit is a WAL fsync. One transaction per
operation made every request (each one records its auth token) queue for its own commit. Here the thread takes
whatever writes are waiting, runs them in one transaction and commits once (twice when bookkeeping that needs no
fsync waits beside durable writes): a write that fails is retried alone after the batch rolls back, so it fails
alone, and no caller hears success before the COMMIT that carries its write is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Writes joined into one commit at most; bounds how long the first of them waits for the others to run.
MAX_BATCH = 64


@dataclass(slots=True)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    durable: bool
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class _RolledBack(Exception):
    """A job raised, so its transaction was rolled back; error is what its caller is told."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class GroupCommitWriter:
    """Runs `fn(conn, *args)` write functions on one thread; see the module docstring."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        translate: Callable[[sqlite3.Error], Exception],
        *,
        name: str = "sqlite-writer",
    ):
        self._connect = connect
        self._translate = translate
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        error = self._startup_error
        if isinstance(error, sqlite3.Error):
            raise self._translate(error)
        if error is not None:
            raise error

    def stop(self) -> None:
        """Finish the writes already queued, then close the connection."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    async def run(self, fn: Callable[..., Any], args: tuple[Any, ...], durable: bool) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Job(fn, args, durable, future, loop))
        return await future

    # The thread --------------------------------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # surfaced by start()
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        synchronous_full = True
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stop = True
                        break
                    batch.append(more)
                jobs = [job for job in batch if isinstance(job, _Job)]
                # Bookkeeping (auth tokens, handshakes) commits first and without an fsync, so every request's
                # token check does not wait for the WAL fsync of the message writes queued beside it; those then
                # commit together with synchronous=FULL. Jobs of one drain come from different requests (a
                # request awaits each write), so committing them in two groups reorders nothing that matters.
                for durable in (False, True):
                    group = [job for job in jobs if job.durable is durable]
                    if not group:
                        continue
                    if durable != synchronous_full:
                        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                        synchronous_full = durable
                    self._commit(conn, group)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        """Run the jobs in one transaction. If one raises, the transaction is rolled back and each job runs again
        in a transaction of its own, so the failure stays with its job. Failures are rare (a clashing message
        ID), and the common path then needs no SAVEPOINT and RELEASE around every job: two statements fewer
        each, and every statement costs this thread a wait for the GIL the event loop holds."""
        try:
            outcomes = self._together(conn, jobs)
        except _RolledBack as failed:
            if len(jobs) == 1:  # it already ran alone
                self._settle([(jobs[0], False, failed.error)])
                return
            outcomes = []
            for job in jobs:
                try:
                    outcomes += self._together(conn, [job])
                except _RolledBack as failed:
                    outcomes.append((job, False, failed.error))
        self._settle(outcomes)

    def _together(self, conn: sqlite3.Connection, jobs: list[_Job]) -> list[tuple[_Job, bool, Any]]:
        """The outcome of each job, all committed together. Raises _RolledBack (nothing kept) if a job raised."""
        outcomes: list[tuple[_Job, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                try:
                    outcomes.append((job, True, job.fn(conn, *job.args)))
                except Exception as exc:
                    conn.execute("ROLLBACK")
                    raise _RolledBack(self._translate(exc) if isinstance(exc, sqlite3.Error) else exc) from exc
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # BEGIN, COMMIT or a ROLLBACK failed: nothing of the batch is kept.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = self._translate(exc)
            return [(job, False, error) for job in jobs]
        return outcomes

    def _settle(self, outcomes: list[tuple[_Job, bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, settled in by_loop.items():
            # One wake-up of the event loop per batch, not one per write. A closed loop has no one left to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[tuple[_Job, bool, Any]]) -> None:
    for job, ok, value in outcomes:
        resolve(job.future, ok, value)


def resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """Give a waiting caller its result (ok) or exception, on its event loop; one whose caller was cancelled is left
    alone (the work stands, as it would have anyway)."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


#: WAL frames (pages) past which the checkpointer restarts the log; see Checkpointer.
RESTART_FRAMES = 8192


class Checkpointer:
    """Copies the WAL back into the database file from its own thread and connection.

    SQLite's automatic checkpoint runs inside whichever commit crosses the threshold, so every thousandth
    write or so paid for copying and fsyncing the database file (the 100 ms+ p99 spikes under load). The
    writer turns that off and this thread runs PASSIVE checkpoints, which never block readers or the writer.

    A PASSIVE checkpoint copies frames but never rewinds the log: SQLite starts writing the WAL from its
    beginning again only after a checkpoint that caught up with every frame, which under steady writes never
    happens. The log then grew without bound (400 MB in 20 s of load), and every read got slower as it
    searched a longer WAL index. So once the log passes restart_frames, a RESTART checkpoint makes the next
    write start the log over. It waits for the writer's transaction under way and holds the next one back
    while it copies what the PASSIVE rounds left (a quarter of a second's worth at most) and fsyncs.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        interval_seconds: float = 0.25,
        restart_frames: int = RESTART_FRAMES,
    ):
        self._connect = connect
        self._interval = interval_seconds
        self._restart_frames = restart_frames
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sqlite-checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _serve(self) -> None:
        conn = self._connect()
        try:
            while not self._stopping.wait(self._interval):
                with contextlib.suppress(sqlite3.Error):  # busy or locked: the next round catches up
                    self.checkpoint(conn)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> bool:
        """One round: PASSIVE, then RESTART if the log is past restart_frames. True when it restarted."""
        _busy, log_frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if log_frames < self._restart_frames:
            return False
        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        return True
