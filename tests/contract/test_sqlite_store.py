"""What only the embedded SQLite store promises: replayable migrations and several processes on one file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from broker.store import queries
from broker.store.sqlite import SqliteStore
from tests.contract.factories import T0, deliver, mailbox, message_id


async def test_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "mesh.sqlite3"
    first = SqliteStore(path)
    await first.open()
    await first.put_mailbox(mailbox("MB1"))
    await first.close()

    again = SqliteStore(path)
    await again.open()
    try:
        assert await again.get_mailbox("MB1") == mailbox("MB1")
    finally:
        await again.close()

    with sqlite3.connect(path) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [version for version, _, _ in queries.migrations("sqlite")]


@pytest.mark.parametrize("attempt", range(5))
async def test_several_stores_opening_one_new_file_at_once(tmp_path: Path, attempt: int) -> None:
    """Nodes and CLI processes may start together on a fresh file: every one opens, migrations run once."""
    path = tmp_path / f"mesh-{attempt}.sqlite3"
    stores = [SqliteStore(path) for _ in range(6)]
    results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
    try:
        assert [r for r in results if r is not None] == []
        await stores[0].put_mailbox(mailbox("MB1"))
        assert [await s.count_mailboxes() for s in stores] == [1] * len(stores)
    finally:
        for store in stores:
            await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(queries.migrations("sqlite"))


async def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "mesh.sqlite3"
    a, b = SqliteStore(path), SqliteStore(path)
    await a.open()
    await b.open()
    try:
        await a.put_mailbox(mailbox("MB1"))
        assert await b.get_mailbox("MB1") == mailbox("MB1")

        message = await deliver(b, message_id(1))
        assert await a.get_message(message_id(1)) == message
        assert await a.list_inbox("BOB", 10) == ([message_id(1)], None)

        assert await a.acknowledge(message_id(1), T0) is True
        assert await b.acknowledge(message_id(1), T0) is False
        assert await b.count_inbox("BOB") == 0

        # A token used through one process is a replay through the other.
        assert await a.use_token("MB1:n:0", T0) is True
        assert await b.use_token("MB1:n:0", T0) is False
    finally:
        await a.close()
        await b.close()
