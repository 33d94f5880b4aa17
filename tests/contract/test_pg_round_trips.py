"""PostgreSQL: the store calls a request makes are one round trip each (a message read with its events, the download's
read, an acknowledgement, a chunk), counted on the wire by benchmarks/pg_round_trips.py's proxy. A request then costs
its token's write and these: 2 for an acknowledgement or a download, 3 for a chunk upload (its read, then its write).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from broker.devsupport import pg_server
from broker.store.postgres import PostgresStore
from broker.store.protocol import ChunkOutcome
from tests.contract.factories import EXPIRY, T0, ack_event, chunk, deliver, delivery_event, message_id, uploading

_PROXY = Path(__file__).resolve().parents[2] / "benchmarks" / "pg_round_trips.py"


def _proxy_module() -> Any:
    spec = importlib.util.spec_from_file_location("pg_round_trips", _PROXY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("pg_round_trips", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def counted(pg_admin_dsn: str) -> AsyncIterator[tuple[PostgresStore, Callable[[], int]]]:
    """A store on one pooled connection through the counting proxy (no directory listener), and the proxy's count."""
    dsn = await pg_server.clone_database(pg_admin_dsn)
    async with _proxy_module().counting_proxy(dsn) as proxy:
        store = PostgresStore(proxy.dsn, min_size=1, max_size=1, directory_cache=False)
        await store.open()
        try:
            yield store, lambda: int(proxy.round_trips)
        finally:
            await store.close()


async def _trips(count: Callable[[], int], call: Awaitable[Any]) -> tuple[int, Any]:
    before = count()
    answer = await call
    return count() - before, answer


async def test_reads_and_writes_of_a_request_are_one_round_trip_each(
    counted: tuple[PostgresStore, Callable[[], int]],
) -> None:
    store, count = counted
    for n in (1, 2, 3):  # the first of each statement on the connection also prepares it: not what is counted
        await deliver(store, message_id(n))
        await store.create_message(uploading(message_id(10 + n), 3), chunk(message_id(10 + n), 1))
    await store.get_message(message_id(1))
    await store.get_message_and_chunk(message_id(1), 1)
    await store.acknowledge(message_id(1), "BOB", ack_event(T0))
    await store.add_chunk(chunk(message_id(11), 2), delivery_event(T0), T0 + EXPIRY)

    assert await _trips(count, store.get_message(message_id(2))) == (1, await store.get_message(message_id(2)))
    trips, (message, got) = await _trips(count, store.get_message_and_chunk(message_id(2), 1))
    assert (trips, got) == (1, chunk(message_id(2), 1, message.file_size))
    assert await _trips(count, store.acknowledge(message_id(2), "BOB", ack_event(T0))) == (1, "WF")
    assert await _trips(count, store.acknowledge(message_id(3), "CAROL", ack_event(T0))) == (1, None)
    stored = store.add_chunk(chunk(message_id(12), 2), delivery_event(T0), T0 + EXPIRY)
    assert await _trips(count, stored) == (1, ChunkOutcome.STORED)
