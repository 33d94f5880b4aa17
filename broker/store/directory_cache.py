"""Directory entries (mailboxes, workflows) of one SQLite file kept in memory while a stamp file says unchanged.

Every request looks up its caller's mailbox, and a send also the recipient and the workflow, yet the directory
changes a few times a day. Each of those SQLite lookups released the GIL, and under load getting it back from
the writer threads cost more than the lookup itself (a fifth of the event loop's samples). Kept in memory,
they cost a dictionary lookup: 18 % more message cycles at 64 users (benchmarks/README.md).

Every process that changes the directory through SqliteStore replaces the stamp file after its commit (a new
inode each time). The cache compares the stamp with the one its entries were read under at most every
check_every_seconds (0.1 s), since a stat releases the GIL too. So a mailbox deactivated or given a new
password by the CLI is refused by a live broker within a tenth of a second; a change made through the broker's
own store is seen at once. A process that died between its commit and the stamp would leave the broker stale,
so entries are also dropped after max_age_seconds whatever the stamp says.

The PostgreSQL store uses the same cache without a stamp: there a database trigger announces every directory
change to every node (LISTEN/NOTIFY, broker/store/pg_directory.py), which calls forget(). A lookup that was
already on its way to the database when the news came must not keep what it read, so put() takes the
generation the lookup started under; and while a node cannot hear the news (its listening connection is down)
the cache is suspended and every lookup goes to the database.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: The most entries kept; past it the cache starts again (only found entries are kept, so this is a bound on
#: the directory's size in memory, not something a caller can fill with made-up IDs).
MAX_ENTRIES = 100_000


class DirectoryCache:
    def __init__(
        self,
        stamp: Path | None,
        *,
        max_age_seconds: float = 5.0,
        check_every_seconds: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._stamp = stamp
        self._max_age = max_age_seconds
        self._check_every = check_every_seconds
        self._clock = clock
        self._entries: dict[Hashable, Any] = {}
        self._read_under: tuple[int, int] | None = None
        self._filled_at = self._checked_at = clock()
        self._generation = 0
        self._suspended = False

    @property
    def generation(self) -> int:
        """Changes every time the entries are forgotten; see put()."""
        return self._generation

    def get(self, key: Hashable) -> Any | None:
        """The entry stored under key since the directory last changed, or None."""
        now = self._clock()
        if now - self._checked_at >= self._check_every:
            # At most every check_every seconds: a stat releases the GIL, and under load getting it back cost as
            # much as the lookup it saves.
            self._checked_at = now
            stamp = self._current_stamp()
            if stamp != self._read_under or now - self._filled_at > self._max_age:
                self.forget()
                self._read_under = stamp
        return self._entries.get(key)

    async def through(self, key: Hashable, fetch: Callable[[], Awaitable[T | None]]) -> T | None:
        """The entry under key, else what fetch() finds, kept unless the directory changed while it looked."""
        found: T | None = self.get(key)
        if found is None:
            generation = self._generation
            found = await fetch()
            if found is not None:
                self.put(key, found, generation)
        return found

    def put(self, key: Hashable, value: Any, generation: int | None = None) -> None:
        """Keep a found entry (never a miss: IDs that do not exist are not worth memory). With `generation`
        (read before an awaited lookup), the entry is dropped if the directory changed meanwhile."""
        if self._suspended or (generation is not None and generation != self._generation):
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = value

    def forget(self) -> None:
        """The directory changed: drop every entry, and whatever lookup is under way."""
        self._entries.clear()
        self._generation += 1
        self._filled_at = self._clock()

    def suspend(self) -> None:
        """Keep nothing until resume(): this node cannot hear of changes."""
        self._suspended = True
        self.forget()

    def resume(self) -> None:
        """Changes are announced again; what was kept before may be stale, so start empty."""
        self.forget()
        self._suspended = False

    def changed(self) -> None:
        """This process committed a directory change: forget every entry here and tell the other processes.

        Runs on the caller's thread (a file create and a rename), which is fine for the few directory writes
        a day; the request path only ever stats the stamp."""
        self.forget()
        if self._stamp is None:  # the database tells the other nodes (see the module docstring)
            return
        temporary = self._stamp.with_name(f"{self._stamp.name}.{os.getpid()}.tmp")
        temporary.write_bytes(b"")
        # A fresh inode and a nanosecond time set here, not the kernel's coarse clock: an inode number freed by
        # an earlier stamp can come back, and two changes can fall in one clock tick, but not both with one ns.
        now = time.time_ns()
        os.utime(temporary, ns=(now, now))
        os.replace(temporary, self._stamp)

    def _current_stamp(self) -> tuple[int, int] | None:
        if self._stamp is None:
            return None
        try:
            status = os.stat(self._stamp)
        except FileNotFoundError:
            return None
        return status.st_ino, status.st_mtime_ns
