"""Hears of inbox arrivals at every node on PostgreSQL, for the long-poll inbox (`GET .../inbox?wait=N`).

Migration 0008's triggers NOTIFY mesh_inbox with the recipient whenever a message becomes accepted (a send, a
last chunk, a report), whichever node committed it. A node LISTENs on a connection of its own (as the directory
cache does, broker/store/pg_directory.py) and hands each recipient to broker/arrivals.py, which wakes the requests
waiting on that mailbox. While the connection is down, `listening` is False and waiters poll the store instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

try:
    import asyncpg
except ImportError:  # pragma: no cover - PostgresStore refuses to start without it
    asyncpg = None

CHANNEL = "mesh_inbox"
APPLICATION_NAME = "mesh-broker arrivals listener"
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)

log = logging.getLogger("broker.store")


class ArrivalsListener:
    def __init__(
        self, dsn: str, on_arrival: Callable[[str], None], *, retry_seconds: tuple[float, ...] = RETRY_SECONDS
    ):
        self._dsn = dsn
        self._on_arrival = on_arrival
        self._retry = retry_seconds
        self._conn: Any = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Listen, or keep trying in the background (waiters poll meanwhile)."""
        if not await self._listen():
            self._reconnect_later()

    async def stop(self) -> None:
        self._stopped = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)

    async def _listen(self) -> bool:
        conn = None
        try:
            conn = await asyncpg.connect(self._dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME})
            await conn.add_listener(CHANNEL, self._notified)
            conn.add_termination_listener(self._lost)
        except Exception as exc:  # any failure means the same: poll, and try again later
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=5)
            log.warning(
                "long polls fall back to polling: cannot listen for arrivals",
                extra={"action": "arrivals_listen_failed", "error": str(exc)},
            )
            return False
        self._conn = conn
        return True

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_arrival(payload)

    def _lost(self, _conn: Any) -> None:
        self._conn = None
        if self._stopped:
            return
        log.warning("long polls fall back to polling: lost the arrivals listener", extra={"action": "arrivals_lost"})
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
            if await self._listen():
                log.info("listening for arrivals again", extra={"action": "arrivals_listening"})
                return
