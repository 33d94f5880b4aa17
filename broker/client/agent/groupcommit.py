"""Group commit: one fsync (and one thread hop) for everyone who asked while the previous one ran.

The agent moves many small files at once; an fsync per file and per folder per file, each waited for on its own
(some on the event loop itself), was what held it to a few dozen files a second. Both helpers here batch by
arrival: what is asked for while a flush runs goes into the next one. Under no load a flush covers one caller and
starts at once (no added latency); under load one flush covers a whole batch.

- GroupCommit: a caller's wait ends once a flush that *began after its call* has finished, so whatever it staged
  before calling is covered (the journal's log).
- Batch: items go to one blocking function together, in a thread, each with its own result (renames into a
  folder and that folder's one fsync).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit:
    """Run `flush` for every caller of `wait`, at most one at a time, each covering all calls before it began."""

    def __init__(self, flush: Callable[[], Awaitable[None]]):
        self._flush = flush
        self._requested = 0  # calls of wait so far
        self._covered = 0  # calls that a finished flush began after
        self._running: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        self._requested += 1
        ticket = self._requested
        while self._covered < ticket:
            if self._running is None:
                self._running = asyncio.ensure_future(self._run())
            # shield: a caller cancelled while it waits does not cancel the flush others are waiting on
            await asyncio.shield(self._running)

    async def _run(self) -> None:
        covers = self._requested  # every call so far was made before this flush began
        try:
            await self._flush()
            self._covered = max(self._covered, covers)
        finally:
            self._running = None


class Batch(Generic[T, R]):
    """Items handed in while the previous batch ran go to `process` together, in one thread hop: for steps whose
    cost is mostly a shared fsync (of a folder) or the hop itself. `process` returns one result per item, in
    order; if it raises, every caller of that batch gets the exception."""

    def __init__(self, process: Callable[[list[T]], list[R]]):
        self._process = process
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def run(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._drainer is None:
            self._drainer = asyncio.ensure_future(self._drain())
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await asyncio.to_thread(self._process, [item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._drainer = None
