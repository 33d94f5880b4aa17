"""Hears of directory changes on PostgreSQL, so that a node may serve mailboxes and workflows from memory.

Every authenticated request looks up its caller's mailbox, and a send also the recipient and the workflow: two
to four database round trips per request for facts that change a few times a day. Kept in memory
(DirectoryCache), they cost a dictionary lookup; with PostgreSQL and S3 on the benchmark machine that was about a
fifth more requests a second (benchmarks/README.md). The catch is the other nodes: a mailbox deactivated
through one node, the CLI or plain SQL must stop working on all of them.

Migration 0006 adds triggers that NOTIFY mesh_directory whenever a cached column of mailboxes, workflows or
workflow_members changes. Each node LISTENs on a connection of its own (not one of the pool's) and forgets its
entries on every notification, a few milliseconds after the change commits. The cache is trusted only while
that connection is up:

- at start, until LISTEN is in place (and not at all if the triggers are missing, say a node newer than its
  schema with MESH_DB_MIGRATE=off);
- when the connection drops, the cache is suspended at once and every lookup goes to the database until a
  new connection is listening, retried with backoff.

A notification lost without the connection dropping (a network path that silently fails) is covered by the
cache's maximum age: no entry is served more than 5 s after it was read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from broker.store.directory_cache import DirectoryCache

try:
    import asyncpg
except ImportError:  # pragma: no cover - PostgresStore refuses to start without it
    asyncpg = None

CHANNEL = "mesh_directory"
#: The triggers migration 0006 creates; without all of them the cache stays off.
TRIGGERS = ("mailboxes_directory_changed", "workflows_directory_changed", "workflow_members_directory_changed")
#: How the listening connection shows in pg_stat_activity.
APPLICATION_NAME = "mesh-broker directory listener"
#: Seconds between attempts to listen again after the connection was lost (the last one repeats).
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)

log = logging.getLogger("broker.store")


class DirectoryListener:
    def __init__(self, dsn: str, cache: DirectoryCache, *, retry_seconds: tuple[float, ...] = RETRY_SECONDS):
        self._dsn = dsn
        self._cache = cache
        self._retry = retry_seconds
        self._conn: Any = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Listen, or leave the cache suspended (retrying in the background) if that fails."""
        self._cache.suspend()
        if not await self._settled():
            self._reconnect_later()

    async def stop(self) -> None:
        self._stopped = True
        self._cache.suspend()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)

    async def _settled(self) -> bool:
        """One attempt: connect, check the triggers, LISTEN, then trust the cache. False when it is worth trying
        again later (the database could not be reached); True when listening, or when the schema has no triggers
        and only a migration and a restart can change that (the cache then stays off)."""
        conn = None
        try:
            conn = await asyncpg.connect(self._dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME})
            present = await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname = ANY($1::text[])", TRIGGERS)
            if present != len(TRIGGERS):
                log.warning(
                    "directory cache off: the database does not announce directory changes (run mesh-broker migrate)",
                    extra={"action": "directory_cache_off"},
                )
                await conn.close()
                return True
            await conn.add_listener(CHANNEL, self._notified)
            conn.add_termination_listener(self._lost)
        except Exception as exc:  # whatever the reason, the answer is the same: stay suspended and try again later
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=5)
            log.warning(
                "directory cache suspended: cannot listen for directory changes",
                extra={"action": "directory_listen_failed", "error": str(exc)},
            )
            return False
        self._conn = conn
        self._cache.resume()
        return True

    def _notified(self, _conn: Any, _pid: int, _channel: str, _payload: str) -> None:
        self._cache.forget()

    def _lost(self, _conn: Any) -> None:
        self._conn = None
        self._cache.suspend()
        if self._stopped:
            return
        log.warning("directory cache suspended: lost the listening connection", extra={"action": "directory_lost"})
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
                    log.info("directory cache listening again", extra={"action": "directory_listening"})
                return
