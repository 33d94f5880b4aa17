"""The embedded store's reader threads: scans (lists, counts) run off the event loop, each thread on its own
connection.

A plain queue and one `call_soon_threadsafe` per answer, rather than `loop.run_in_executor` on a
ThreadPoolExecutor: the executor's round trip (its work item and concurrent Future, the semaphore it checks on
every submit, the asyncio Future chained to it both ways) cost about 40 microseconds of CPU against 7 for this one,
measured on the shared 2-core machine, and every inbox list is two scans (benchmarks/README.md, 2026-12-01
session 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, cast

from broker.store.sqlite_writer import resolve

_STOP = object()
_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class ReaderThreads:
    """Runs `fn(conn, *args)` on one of `threads` threads, each holding a connection from `connect`; a
    sqlite3.Error becomes `translate(error)`, anything else is raised to the caller as it is."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        translate: Callable[[sqlite3.Error], Exception],
        *,
        threads: int,
        name: str = "sqlite-reader",
    ):
        self._connect = connect
        self._translate = translate
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}_{n}", daemon=True) for n in range(max(1, threads))
        ]
        self._started = threading.Barrier(len(self._threads) + 1)
        self._startup_errors: list[BaseException] = []

    def start(self) -> None:
        """Open every thread's connection; raises (translated) if one cannot be opened, with all threads stopped."""
        for thread in self._threads:
            thread.start()
        self._started.wait()
        if self._startup_errors:
            self.stop()
            error = self._startup_errors[0]
            raise self._translate(error) if isinstance(error, sqlite3.Error) else error

    def stop(self) -> None:
        """Finish the scans already queued, then end the threads."""
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    async def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((fn, args, future, loop))
        return await future

    def _serve(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # surfaced by start()
            self._startup_errors.append(exc)
            self._started.wait()
            return
        self._started.wait()
        if self._startup_errors:
            return  # another thread could not open its connection: start() stops the pool
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            fn, args, future, loop = cast(_Job, job)
            ok = True
            try:
                value: Any = fn(conn, *args)
            except sqlite3.Error as exc:
                ok, value = False, self._translate(exc)
                value.__cause__ = exc
            except Exception as exc:
                ok, value = False, exc
            with contextlib.suppress(RuntimeError):  # a closed loop has no one left to tell
                loop.call_soon_threadsafe(resolve, future, ok, value)
