"""LISTEN on one PostgreSQL channel over a connection of its own (not one of the pool's), reconnecting with backoff.

What a node does with the news is its caller's business: the directory cache forgets its entries
(pg_directory.py), the long poll wakes its waiters (pg_arrivals.py). What they share lives here: connecting,
LISTEN, noticing the connection drop, and trying again every RETRY_SECONDS (the last one repeats) until stopped.
While the connection is down, `listening` is False and the caller is told through on_down, so it stops trusting
what it would otherwise have heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

try:
    import asyncpg
except ImportError:  # pragma: no cover - PostgresStore refuses to start without it
    asyncpg = None

#: Seconds between attempts to listen again after the connection was lost (the last one repeats).
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)

log = logging.getLogger("broker.store")


def _nothing() -> None:
    return None


class ChannelListener:
    """`name` prefixes the log actions (`<name>_listen_failed`, `<name>_lost`, `<name>_listening`) and `down` says in
    words what the caller does without the channel. `ready(conn)`, if given, runs before LISTEN: False means listening
    cannot help until a restart (say the triggers are missing), so the listener gives up without retrying."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        *,
        application_name: str,
        name: str,
        down: str,
        on_notify: Callable[[str], None],
        on_up: Callable[[], None] = _nothing,
        on_down: Callable[[], None] = _nothing,
        ready: Callable[[Any], Awaitable[bool]] | None = None,
        retry_seconds: tuple[float, ...] = RETRY_SECONDS,
    ):
        self._dsn = dsn
        self._channel = channel
        self._application_name = application_name
        self._name = name
        self._down = down
        self._on_notify = on_notify
        self._on_up = on_up
        self._on_down = on_down
        self._ready = ready
        self._retry = retry_seconds
        self._conn: Any = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Listen, or keep trying in the background (the caller is down meanwhile)."""
        self._on_down()
        if not await self._settled():
            self._reconnect_later()

    async def stop(self) -> None:
        self._stopped = True
        self._on_down()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)

    async def _settled(self) -> bool:
        """One attempt. False when it is worth trying again later (the database could not be reached); True when
        listening, or when `ready` said listening cannot help."""
        conn = None
        try:
            conn = await asyncpg.connect(
                self._dsn, timeout=10, server_settings={"application_name": self._application_name}
            )
            if self._ready is not None and not await self._ready(conn):
                await conn.close()
                return True
            await conn.add_listener(self._channel, self._notified)
            conn.add_termination_listener(self._lost)
        except Exception as exc:  # whatever the reason, the answer is the same: stay down and try again later
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=5)
            log.warning(
                f"{self._down}: cannot listen on {self._channel}",
                extra={"action": f"{self._name}_listen_failed", "error": str(exc)},
            )
            return False
        self._conn = conn
        self._on_up()
        return True

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_notify(payload)

    def _lost(self, _conn: Any) -> None:
        self._conn = None
        self._on_down()
        if self._stopped:
            return
        log.warning(
            f"{self._down}: lost the connection listening on {self._channel}", extra={"action": f"{self._name}_lost"}
        )
        self._reconnect_later()

    def _reconnect_later(self) -> None:
        if self._stopped or (self._reconnecting is not None and not self._reconnecting.done()):
            return
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._stopped:
            await asyncio.sleep(self._retry[min(attempt, len(self._retry) - 1)])
            attempt += 1
            if await self._settled():
                if self.listening:
                    log.info(f"listening on {self._channel} again", extra={"action": f"{self._name}_listening"})
                return
