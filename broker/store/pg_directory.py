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

import logging
from typing import Any

from broker.store.directory_cache import DirectoryCache
from broker.store.pg_listener import RETRY_SECONDS, ChannelListener

CHANNEL = "mesh_directory"
#: The triggers migration 0006 creates; without all of them the cache stays off.
TRIGGERS = ("mailboxes_directory_changed", "workflows_directory_changed", "workflow_members_directory_changed")
#: How the listening connection shows in pg_stat_activity.
APPLICATION_NAME = "mesh-broker directory listener"

log = logging.getLogger("broker.store")


def listen_for_directory_changes(
    dsn: str, cache: DirectoryCache, *, retry_seconds: tuple[float, ...] = RETRY_SECONDS
) -> ChannelListener:
    """Forget the cache on every notification; suspend it while not listening; resume it once listening."""
    return ChannelListener(
        dsn,
        CHANNEL,
        application_name=APPLICATION_NAME,
        name="directory",
        down="directory cache suspended",
        on_notify=lambda _payload: cache.forget(),
        on_up=cache.resume,
        on_down=cache.suspend,
        ready=_triggers_present,
        retry_seconds=retry_seconds,
    )


async def _triggers_present(conn: Any) -> bool:
    """Without the triggers (a node newer than its schema, MESH_DB_MIGRATE=off) no change would be announced, so
    the cache stays off; only a migration and a restart can change that."""
    present = await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname = ANY($1::text[])", TRIGGERS)
    if present == len(TRIGGERS):
        return True
    log.warning(
        "directory cache off: the database does not announce directory changes (run mesh-broker migrate)",
        extra={"action": "directory_cache_off"},
    )
    return False
