"""What only the PostgreSQL store promises about its directory cache: nodes serve mailboxes and workflows from
memory, and a change made anywhere (another node, the CLI, plain SQL) reaches every node well inside the cache's
5 s maximum age; a node that cannot hear of changes does not trust what it holds."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from importlib import resources

import asyncpg
import pytest

from broker.devsupport import pg_server
from broker.models import Workflow
from broker.store import queries
from broker.store.pg_directory import APPLICATION_NAME, CHANNEL
from broker.store.postgres import PostgresStore
from tests.contract.factories import mailbox

#: Well inside the cache's 5 s maximum age: a change seen within this was announced, not aged out.
WITHIN_S = 2.0


@pytest.fixture
async def dsn(pg_admin_dsn: str) -> str:
    return await pg_server.clone_database(pg_admin_dsn)


@pytest.fixture
async def open_store(dsn: str) -> AsyncIterator[Callable[..., Awaitable[PostgresStore]]]:
    stores: list[PostgresStore] = []

    async def open_one(**options: object) -> PostgresStore:
        store = PostgresStore(dsn, min_size=1, max_size=2, directory_retry_seconds=(0.05,), **options)  # type: ignore[arg-type]
        await store.open()
        stores.append(store)
        return store

    yield open_one
    for store in stores:
        await store.close()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = WITHIN_S) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.01)


async def _true(value: bool) -> bool:
    return value


async def sql(dsn: str, statement: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


async def unannounced(dsn: str, assignments: str) -> None:
    """Change ALICE with the mailbox trigger disabled: a change no node hears of."""
    await sql(
        dsn,
        "ALTER TABLE mailboxes DISABLE TRIGGER mailboxes_directory_changed;"
        f"UPDATE mailboxes SET {assignments} WHERE mailbox_id = 'ALICE';"
        "ALTER TABLE mailboxes ENABLE TRIGGER mailboxes_directory_changed",
    )


async def test_a_node_serves_the_directory_from_memory(
    dsn: str, open_store: Callable[..., Awaitable[PostgresStore]]
) -> None:
    node = await open_store()
    assert node.directory_listening() is True
    heard = node._directory.generation + 2  # the put's own forget, then its notification coming back
    await node.put_mailbox(mailbox("ALICE"))
    # Read only once the put's own notification is in: heard after the read (a busy machine), it would forget the
    # entry and the read below would fetch the unannounced change.
    await eventually(lambda: _true(node._directory.generation >= heard))
    assert (await node.get_mailbox("ALICE")) is not None
    # Behind the triggers' back (which only an operator disabling them could do), the node keeps what it read.
    await unannounced(dsn, "password = 'changed'")
    cached = await node.get_mailbox("ALICE")
    assert cached is not None and cached.password == "pw-ALICE"


async def test_a_change_through_one_node_reaches_another_that_cached_it(
    open_store: Callable[..., Awaitable[PostgresStore]],
) -> None:
    one, other = await open_store(), await open_store()
    await one.put_mailbox(mailbox("ALICE"))
    before = await other.get_mailbox("ALICE")
    assert before is not None and before.active

    await one.put_mailbox(replace(before, active=False, password="new"))
    assert (found := await one.get_mailbox("ALICE")) is not None and not found.active  # its own change: at once

    async def deactivated() -> bool:
        found = await other.get_mailbox("ALICE")
        return found is not None and not found.active and found.password == "new"

    await eventually(deactivated)


async def test_plain_sql_reaches_every_node(dsn: str, open_store: Callable[..., Awaitable[PostgresStore]]) -> None:
    node = await open_store()
    await node.put_mailbox(mailbox("ALICE"))
    assert (await node.get_mailbox("ALICE")) is not None
    await sql(dsn, "UPDATE mailboxes SET active = false WHERE mailbox_id = 'ALICE'")

    async def deactivated() -> bool:
        found = await node.get_mailbox("ALICE")
        return found is not None and not found.active

    await eventually(deactivated)
    await sql(dsn, "DELETE FROM mailboxes WHERE mailbox_id = 'ALICE'")

    async def gone() -> bool:
        return await node.get_mailbox("ALICE") is None

    await eventually(gone)


async def test_workflow_membership_reaches_every_node(open_store: Callable[..., Awaitable[PostgresStore]]) -> None:
    one, other = await open_store(), await open_store()
    await one.put_workflow(Workflow("WF", restricted=True, senders=("ALICE",), receivers=("BOB",)))
    assert (found := await other.get_workflow("WF")) is not None and found.senders == ("ALICE",)
    await one.put_workflow(Workflow("WF", restricted=True, senders=("ALICE", "CAROL"), receivers=()))

    async def widened() -> bool:
        found = await other.get_workflow("WF")
        return found is not None and found.senders == ("ALICE", "CAROL") and not found.receivers

    await eventually(widened)


async def test_a_node_that_cannot_hear_changes_does_not_trust_its_cache(
    dsn: str, open_store: Callable[..., Awaitable[PostgresStore]]
) -> None:
    node = await open_store()
    await node.put_mailbox(mailbox("ALICE"))
    assert (await node.get_mailbox("ALICE")) is not None
    await sql(
        dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME
    )

    async def suspended() -> bool:
        return not node.directory_listening()

    await eventually(suspended)
    # While it is deaf, every lookup goes to the database: a change nobody announces is seen at once.
    await unannounced(dsn, "password = 'unannounced'")
    if not node.directory_listening():  # it may already be listening again (retries every 0.05 s here)
        assert (found := await node.get_mailbox("ALICE")) is not None and found.password == "unannounced"

    async def listening_again() -> bool:
        return node.directory_listening() is True

    await eventually(listening_again)
    # Back to listening it starts from an empty cache, so nothing read before the gap survives it.
    assert (found := await node.get_mailbox("ALICE")) is not None and found.password == "unannounced"


async def test_without_the_triggers_the_cache_stays_off(
    dsn: str, open_store: Callable[..., Awaitable[PostgresStore]]
) -> None:
    await sql(dsn, "DROP TRIGGER mailboxes_directory_changed ON mailboxes")
    node = await open_store(migrate=False)
    assert node.directory_listening() is False  # an alert-worthy state: it should be listening
    await node.put_mailbox(mailbox("ALICE"))
    assert (await node.get_mailbox("ALICE")) is not None
    await sql(dsn, "UPDATE mailboxes SET active = false WHERE mailbox_id = 'ALICE'")
    assert (found := await node.get_mailbox("ALICE")) is not None and not found.active


async def test_turned_off_the_node_always_asks_the_database(
    dsn: str, open_store: Callable[..., Awaitable[PostgresStore]]
) -> None:
    node = await open_store(directory_cache=False)
    assert node.directory_listening() is None  # nothing to listen for: no gauge, no alert
    await node.put_mailbox(mailbox("ALICE"))
    assert (await node.get_mailbox("ALICE")) is not None
    await unannounced(dsn, "active = false")
    assert (found := await node.get_mailbox("ALICE")) is not None and not found.active


async def test_a_handshake_announces_nothing_and_a_directory_change_does(dsn: str) -> None:
    """Clients handshake often (the Java client on every run); that must not empty every node's cache."""
    heard: list[str] = []
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener(CHANNEL, lambda _c, _p, _ch, payload: heard.append(payload))
        await sql(dsn, "INSERT INTO mailboxes (mailbox_id, password) VALUES ('ALICE', 'pw')")
        await eventually(lambda: _true(bool(heard)))
        heard.clear()
        await sql(dsn, "UPDATE mailboxes SET last_seen_at = now(), last_client = 'x' WHERE mailbox_id = 'ALICE'")
        await sql(dsn, "UPDATE mailboxes SET mailbox_name = 'Alice' WHERE mailbox_id = 'ALICE'")
        await eventually(lambda: _true(bool(heard)))
        assert heard == ["mailboxes"]  # only the second update
    finally:
        await listener.close()


async def _true(value: bool) -> bool:
    return value


def test_the_trigger_covers_every_cached_mailbox_column() -> None:
    """A column added to the cached mailbox must also be added to the trigger of migration 0006."""
    select = queries.load("postgres")["get_mailbox"]
    cached = {c.strip() for c in re.search(r"SELECT(.*?)FROM", select, re.S).group(1).split(",")}  # type: ignore[union-attr]
    migration = resources.files("broker.store").joinpath("migrations", "postgres", "0006_directory_notify.sql")
    listed = re.search(r"UPDATE OF (.*?)\s+ON mailboxes", migration.read_text(), re.S).group(1)  # type: ignore[union-attr]
    assert cached <= {c.strip() for c in listed.split(",")}
