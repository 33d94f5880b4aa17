"""What only the embedded SQLite store promises: replayable migrations and several processes on one file."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker.models import Workflow
from broker.store import queries
from broker.store.protocol import DuplicateMessageId
from broker.store.rows import mailbox_values, to_micros
from broker.store.sqlite import Q, SqliteStore
from tests.contract.factories import T0, accepted, ack_event, chunk, deliver, mailbox, message_id

#: A little over the directory cache's check interval (0.1 s).
CHECK_INTERVAL = 0.15


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


@contextlib.asynccontextmanager
async def two_stores(path: Path) -> AsyncIterator[tuple[SqliteStore, SqliteStore]]:
    """Two stores on one file, as a broker and a CLI process have."""
    a, b = SqliteStore(path), SqliteStore(path)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    async with two_stores(tmp_path / "mesh.sqlite3") as (a, b):
        await a.put_mailbox(mailbox("MB1"))
        assert await b.get_mailbox("MB1") == mailbox("MB1")

        message = await deliver(b, message_id(1))
        assert await a.get_message(message_id(1)) == message
        assert await a.list_inbox("BOB", 10) == ([message_id(1)], None)

        assert await a.acknowledge(message_id(1), "BOB", ack_event(T0)) == "WF"
        assert await b.acknowledge(message_id(1), "BOB", ack_event(T0)) is None
        assert await b.count_inbox("BOB") == 0

        # A token used through one process is a replay through the other.
        assert await a.use_token("MB1:n:0", T0) is True
        assert await b.use_token("MB1:n:0", T0) is False


async def test_concurrent_writes_share_commits_and_a_failure_stays_its_own(tmp_path: Path) -> None:
    """Group commit: writes queued together commit together, and one that fails (a duplicate message ID) rolls
    back alone: its neighbours in the same batch are kept and answered, and it gets its own error."""
    store = SqliteStore(tmp_path / "mesh.sqlite3")
    await store.open()
    try:
        await deliver(store, message_id(0))
        ids = [message_id(n % 40) for n in range(1, 81)]  # IDs 1..39 twice, and ID 0 (taken) twice
        results = await asyncio.gather(
            *(store.create_message(accepted(mid), chunk(mid, 1, 11)) for mid in ids), return_exceptions=True
        )
        failures = [ids[n] for n, r in enumerate(results) if isinstance(r, DuplicateMessageId)]
        assert [r for r in results if r is not None and not isinstance(r, DuplicateMessageId)] == []
        assert sorted(failures) == sorted([message_id(0)] * 2 + [message_id(n) for n in range(1, 40)])
        assert await store.count_inbox("BOB") == 40
        for n in range(40):
            message = await store.get_message(message_id(n))
            assert message is not None and len(message.events) == 1  # no half-written duplicate survived
    finally:
        await store.close()


async def test_a_write_raising_in_python_is_rolled_back_alone(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "mesh.sqlite3")
    await store.open()

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute(Q["put_mailbox"], mailbox_values(mailbox("HALF")))
        raise LookupError("boom")

    try:
        outcomes = await asyncio.gather(
            store.put_mailbox(mailbox("BEFORE")),
            store._connections.write(half_then_fail),
            store.put_mailbox(mailbox("AFTER")),
            return_exceptions=True,
        )
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], LookupError)
        assert await store.get_mailbox("HALF") is None  # the failed write left nothing behind
        assert await store.get_mailbox("BEFORE") == mailbox("BEFORE")
        assert await store.get_mailbox("AFTER") == mailbox("AFTER")
    finally:
        await store.close()


async def test_the_checkpointer_moves_committed_writes_into_the_database_file(tmp_path: Path) -> None:
    """The writer does not checkpoint (wal_autocheckpoint=0); the checkpointer thread must, or the WAL would
    grow without bound. A connection that ignores the WAL (immutable=1) sees only what was checkpointed."""
    path = tmp_path / "mesh.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        for n in range(20):
            await deliver(store, message_id(n))
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            checkpointed = _rows_in_database_file(path)
            if checkpointed == 20 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert checkpointed == 20
    finally:
        await store.close()


def _rows_in_database_file(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    except sqlite3.OperationalError:  # not even the schema has been checkpointed yet
        return 0
    finally:
        conn.close()


async def test_tokens_live_in_their_own_file_and_survive_the_move(tmp_path: Path) -> None:
    """The replay cache has its own file (its writes never wait for a message commit). A store from before the
    move kept tokens in the main file: opening it copies them over, so a token used before an upgrade is still
    a replay after it, and migration 0006 then drops the old table."""
    path = tmp_path / "mesh.sqlite3"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    (tmp_path / "mesh-tokens.sqlite3").unlink()
    with sqlite3.connect(path) as conn:  # back to the state before 0006: tokens in the main file
        conn.execute("CREATE TABLE auth_tokens (token_key TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)")
        conn.execute("INSERT INTO auth_tokens VALUES ('MB1:old:1', ?)", (to_micros(T0),))
        conn.execute("DELETE FROM schema_migrations WHERE name LIKE '%tokens_file%'")
    conn.close()

    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.use_token("MB1:old:1", T0) is False
        assert await store.use_token("MB1:new:1", T0) is True
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'auth_tokens'").fetchone()[0] == 0
    conn.close()
    with sqlite3.connect(tmp_path / "mesh-tokens.sqlite3") as conn:
        keys = {row[0] for row in conn.execute("SELECT token_key FROM auth_tokens")}
    conn.close()
    assert keys == {"MB1:old:1", "MB1:new:1"}


async def test_a_directory_change_by_another_process_is_seen_within_the_check_interval(tmp_path: Path) -> None:
    """The broker keeps mailboxes and workflows in memory; a change committed by another process (the CLI)
    replaces the directory stamp, so the first lookup after the check interval (0.1 s) reads the new row."""
    async with two_stores(tmp_path / "mesh.sqlite3") as (broker, cli):
        await broker.put_mailbox(mailbox("MB1"))
        assert await broker.get_mailbox("MB1") == mailbox("MB1")  # now cached
        deactivated = replace(mailbox("MB1"), active=False, password="changed")
        await cli.put_mailbox(deactivated)
        await asyncio.sleep(CHECK_INTERVAL)
        assert await broker.get_mailbox("MB1") == deactivated

        await cli.put_workflow(Workflow("WF", senders=("MB1",)))
        assert (await broker.get_workflow("WF")).senders == ("MB1",)  # type: ignore[union-attr]
        await cli.put_workflow(Workflow("WF", senders=("MB2",)))
        await asyncio.sleep(CHECK_INTERVAL)
        assert (await broker.get_workflow("WF")).senders == ("MB2",)  # type: ignore[union-attr]

        await broker.put_mailbox(mailbox("MB1"))  # through the broker's own store: seen at once
        assert await broker.get_mailbox("MB1") == mailbox("MB1")


async def test_a_failing_write_alone_in_its_batch_runs_once(tmp_path: Path) -> None:
    """A batch is retried write by write only when it held several: one that already ran alone is not run again."""
    store = SqliteStore(tmp_path / "mesh.sqlite3")
    await store.open()
    calls: list[int] = []

    def fail(conn: sqlite3.Connection) -> None:
        calls.append(1)
        raise LookupError("boom")

    try:
        with pytest.raises(LookupError):
            await store._connections.write(fail)
        assert calls == [1]
    finally:
        await store.close()
