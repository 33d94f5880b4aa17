"""Requests waiting for mail (the long-poll inbox, `GET .../inbox?wait=N`), woken when their mailbox gets some.

A node hears of an arrival in one of two ways: its own deliveries (Messaging calls notify after a send or a last
chunk commits), and on PostgreSQL every node's, through LISTEN/NOTIFY (broker/store/pg_arrivals.py). Where the
second is missing (SQLite, whose file other processes may share; a PostgreSQL listener that is down) a waiter
also looks at the store every `poll_seconds`, so an arrival is never missed for longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

#: How often a waiter looks whether its node has begun to drain.
STOP_CHECK_SECONDS = 1.0


class Arrivals:
    """One per app: mailbox ID -> the futures of the requests waiting on it. Holds no memory budget: a waiting
    request has read nothing and will send one page of IDs."""

    def __init__(self, *, poll_seconds: float = 1.0, stopping: Callable[[], bool] = lambda: False):
        self._poll_seconds = poll_seconds
        #: The node is draining (broker/drain.py): waiters answer within STOP_CHECK_SECONDS.
        self._stopping = stopping
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._closed = False
        self._heard_everywhere: Callable[[], bool] = lambda: False

    def hear_from(self, listening: Callable[[], bool]) -> None:
        """A source of every node's arrivals (the PostgreSQL listener): while it listens, waiters need not poll."""
        self._heard_everywhere = listening

    @property
    def poll_seconds(self) -> float | None:
        """How long a waiter may sleep before it looks at the store itself; None while every arrival is heard."""
        return None if self._heard_everywhere() else self._poll_seconds

    @property
    def waiting(self) -> int:
        return sum(len(futures) for futures in self._waiting.values())

    @property
    def closed(self) -> bool:
        return self._closed or self._stopping()

    def expect(self, mailbox_id: str) -> asyncio.Future[None]:
        """Register for the mailbox's next arrival before looking at its inbox, so one that lands in between is
        not missed; the future is done when it comes. Pair with forget()."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(mailbox_id, set()).add(future)
        return future

    def forget(self, mailbox_id: str, future: asyncio.Future[None]) -> None:
        waiters = self._waiting.get(mailbox_id)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiting[mailbox_id]

    def notify(self, mailbox_id: str) -> None:
        """Wake every request waiting on the mailbox (they list the inbox again)."""
        for future in self._waiting.pop(mailbox_id, ()):
            if not future.done():
                future.set_result(None)

    async def wait(self, arrival: asyncio.Future[None], seconds: float) -> bool:
        """Sleep until the expected arrival (True) or for that many seconds (False); at once once closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not arrival.done() and not self.closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            # In slices, so a drain that begins meanwhile is noticed without anyone having to call close().
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, STOP_CHECK_SECONDS)):
                    await asyncio.shield(arrival)
        return arrival.done()

    def close(self) -> None:
        """Wake everyone and wait no more: a node shutting down answers its long polls with what it has."""
        self._closed = True
        for mailbox_id in list(self._waiting):
            self.notify(mailbox_id)
