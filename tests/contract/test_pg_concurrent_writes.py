"""PostgreSQL: the writes of a send, a chunk and an acknowledgement are single statements (sql/postgres.sql), each
reading a snapshot taken before it waited for another writer's row lock. Many writers on one message at once, each
on its own connection, must still number the message's events 1, 2, 3, ... without a repeat or a gap, count its
chunks exactly (one delivery, when the last one lands), and queue every replaced chunk's blob as an orphan.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from typing import Any

import pytest

from broker.devsupport import pg_server
from broker.models import Event, Status
from broker.store.postgres import PostgresStore
from broker.store.protocol import ChunkOutcome
from tests.contract.factories import EXPIRY, T0, chunk, deliver, delivery_event, upload, uploading

SECOND = timedelta(seconds=1)

#: Writers at once, each on a connection of its own: enough that statements queue on the message's row lock.
WRITERS = 16


@pytest.fixture
async def store(pg_admin_dsn: str) -> AsyncIterator[PostgresStore]:
    dsn = await pg_server.clone_database(pg_admin_dsn)
    store = PostgresStore(dsn, min_size=WRITERS, max_size=WRITERS, directory_cache=False)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _seqs(store: PostgresStore, message_id: str) -> list[int]:
    found = await store.pool.fetch("SELECT seq FROM message_events WHERE message_id = $1 ORDER BY seq", message_id)
    return [r[0] for r in found]


async def _event_count(store: PostgresStore, message_id: str) -> int:
    return int(await store.pool.fetchval("SELECT event_count FROM messages WHERE message_id = $1", message_id))


async def _together(*writes: Awaitable[Any]) -> list[Any]:
    """Run the writes at once (a barrier first, so none has finished before the last has started)."""
    start = asyncio.Event()

    async def when_started(write: Awaitable[Any]) -> Any:
        await start.wait()
        return await write

    tasks = [asyncio.ensure_future(when_started(w)) for w in writes]
    await asyncio.sleep(0)
    start.set()
    return list(await asyncio.gather(*tasks))


async def test_concurrent_events_on_one_message_are_numbered_without_repeat_or_gap(store: PostgresStore) -> None:
    mid = "20250304050607000001_000001"
    await deliver(store, mid)
    rounds = 3
    for r in range(rounds):
        events = [Event(Status.ACCEPTED, T0 + (r * WRITERS + n) * SECOND, "NOTE", f"{n:02d}") for n in range(WRITERS)]
        assert await _together(*(store.append_event(mid, e) for e in events)) == [True] * WRITERS
    expected = list(range(1, 1 + rounds * WRITERS + 1))  # the delivery's event, then every appended one
    assert await _seqs(store, mid) == expected
    assert await _event_count(store, mid) == expected[-1]
    message = await store.get_message(mid)
    assert message is not None and len(message.events) == len(expected)


async def test_an_acknowledgement_racing_appended_events_takes_the_next_number(store: PostgresStore) -> None:
    mid = "20250304050607000002_000002"
    await deliver(store, mid)
    acks = [store.acknowledge(mid, "BOB", Event(Status.ACKNOWLEDGED, T0 + SECOND)) for _ in range(WRITERS // 2)]
    notes = [store.append_event(mid, Event(Status.ACCEPTED, T0, "NOTE")) for _ in range(WRITERS // 2)]
    results = await _together(*acks, *notes)
    # An append may put the message back in accepted after an acknowledgement, letting a later one win again.
    won = sum(1 for r in results[: len(acks)] if r)
    assert won >= 1 and all(results[len(acks) :])
    assert await _seqs(store, mid) == list(range(1, 1 + 1 + won + len(notes)))


async def test_concurrent_chunks_of_one_message_deliver_it_once(store: PostgresStore) -> None:
    mid = "20250304050607000003_000003"
    total = WRITERS + 1
    await store.create_message(uploading(mid, total), chunk(mid, 1, 1))
    outcomes = await _together(
        *(
            store.add_chunk(chunk(mid, n, n), upload(total), delivery_event(T0 + SECOND), T0 + EXPIRY)
            for n in range(2, total + 1)
        )
    )
    assert sorted(o.outcome.value for o in outcomes) == sorted(
        [ChunkOutcome.COMPLETED.value] + [ChunkOutcome.STORED.value] * (total - 2)
    )
    message = await store.get_message(mid)
    assert message is not None and message.status is Status.ACCEPTED
    assert message.file_size == sum(range(1, total + 1))
    assert [e.status for e in message.events] == [Status.UPLOADING, Status.ACCEPTED]
    assert await _seqs(store, mid) == [1, 2]


async def test_one_chunk_sent_again_and_again_at_once_leaves_every_replaced_blob_queued(store: PostgresStore) -> None:
    mid = "20250304050607000004_000004"
    await store.create_message(uploading(mid, 3), chunk(mid, 1, 1))
    copies = [chunk(mid, 2, 20, suffix=f"copy{n}") for n in range(WRITERS)]
    outcomes = await _together(*(store.add_chunk(c, upload(3), delivery_event(T0), T0 + EXPIRY) for c in copies))
    assert [o.outcome for o in outcomes] == [ChunkOutcome.STORED] * WRITERS
    kept = await store.pool.fetchval(
        "SELECT blob_key FROM message_chunks WHERE message_id = $1 AND chunk_number = 2", mid
    )
    queued = {r[0] for r in await store.pool.fetch("SELECT blob_key FROM orphan_blobs")}
    assert queued == {c.blob_key for c in copies} - {kept}
    message = await store.get_message(mid)
    assert message is not None and message.status is Status.UPLOADING and message.file_size == 1 + 20
