"""The PostgreSQL store returns connections to its pool without asyncpg's reset round trip (RESET ALL, UNLISTEN *,
...): what that saves, and what it relies on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker.devsupport import pg_server
from broker.store.postgres import PostgresStore


@pytest.fixture
async def one_connection(pg_admin_dsn: str) -> AsyncIterator[PostgresStore]:
    """A store whose pool holds a single connection, so every acquire gets the one released before."""
    store = PostgresStore(await pg_server.clone_database(pg_admin_dsn), min_size=1, max_size=1, directory_cache=False)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_no_reset_query_is_sent_on_release(one_connection: PostgresStore) -> None:
    """Session state survives a release (RESET ALL would have cleared it), which is why the store must never set
    any on a pool connection."""
    async with one_connection.pool.acquire() as conn:
        await conn.execute("SET application_name = 'left behind'")
    async with one_connection.pool.acquire() as conn:
        assert await conn.fetchval("SHOW application_name") == "left behind"


async def test_a_transaction_left_open_is_still_rolled_back(one_connection: PostgresStore) -> None:
    async with one_connection.pool.acquire() as conn:
        await conn.execute("BEGIN")  # not managed, as a bug might leave it
        await conn.execute("INSERT INTO mailboxes (mailbox_id, password) VALUES ('LEFT_OPEN', 'x')")
    async with one_connection.pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM mailboxes WHERE mailbox_id = 'LEFT_OPEN'") == 0
