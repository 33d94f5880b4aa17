"""PostgreSQL: the store calls a request makes are one round trip each (a message read with its events, the download's
read, an acknowledgement, a chunk), counted on the wire by benchmarks/pg_round_trips.py's proxy. A request then costs
its token's write and these: 2 for an acknowledgement, a download or a chunk upload with a small Content-Length
(add_chunk alone), 3 for a larger or unknown-length chunk (its message read first, then its write).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from broker.app import create_app
from broker.devsupport import pg_server
from broker.settings import Settings
from broker.store.postgres import PostgresStore
from broker.store.protocol import ChunkOutcome
from tests.api.helpers import start_chunked
from tests.conftest import SHARED_KEY
from tests.contract.factories import (
    EXPIRY,
    T0,
    ack_event,
    chunk,
    deliver,
    delivery_event,
    message_id,
    upload,
    uploading,
)
from tests.support import Mesh

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
    await store.add_chunk(chunk(message_id(11), 2), upload(3), delivery_event(T0), T0 + EXPIRY)

    assert await _trips(count, store.get_message(message_id(2))) == (1, await store.get_message(message_id(2)))
    trips, (message, got) = await _trips(count, store.get_message_and_chunk(message_id(2), 1))
    assert (trips, got) == (1, chunk(message_id(2), 1, message.file_size))
    assert await _trips(count, store.acknowledge(message_id(2), "BOB", ack_event(T0))) == (1, "WF")
    assert await _trips(count, store.acknowledge(message_id(3), "CAROL", ack_event(T0))) == (1, None)
    stored = store.add_chunk(chunk(message_id(12), 2), upload(3), delivery_event(T0), T0 + EXPIRY)
    trips, answer = await _trips(count, stored)
    assert (trips, answer.outcome) == (1, ChunkOutcome.STORED)


async def test_the_tokens_of_concurrent_requests_are_one_round_trip(
    counted: tuple[PostgresStore, Callable[[], int]],
) -> None:
    """The replay cache's write is every request's first statement: those of requests arriving together go as one
    (TokenBatch), a token twice in them a replay the second time, as across batches."""
    store, count = counted
    await store.use_token("warm-up", T0 + EXPIRY)  # prepares the statement on the connection
    keys = [f"MB:nonce:{n}" for n in range(20)] + ["MB:nonce:3", "warm-up"]
    trips, answers = await _trips(count, asyncio.gather(*(store.use_token(key, T0 + EXPIRY) for key in keys)))
    assert trips == 1
    assert answers == [True] * 20 + [False, False]
    assert await store.use_token("MB:nonce:7", T0 + EXPIRY) is False


async def _post_chunk(client: TestClient, mesh: Mesh, message_id: str, data: bytes, *, streamed: bool) -> int:
    async def pieces() -> AsyncIterator[bytes]:
        yield data

    headers = mesh.headers({"mex-Chunk-Range": "2:2", "Content-Type": "application/octet-stream"})
    body: Any = pieces() if streamed else data
    response = await client.post(f"{mesh.base}/outbox/{message_id}/2", data=body, headers=headers)
    return response.status


async def test_a_small_chunk_upload_is_two_round_trips_a_large_one_three(pg_admin_dsn: str, tmp_path: Path) -> None:
    """Through the app: the token's write and add_chunk for a body with a small Content-Length; without one (or past
    BODY_FIRST_BYTES) the message is read first. Blobs on the file store: only the database's trips are counted."""
    dsn = await pg_server.clone_database(pg_admin_dsn)
    async with _proxy_module().counting_proxy(dsn) as proxy:
        settings = Settings(data_dir=tmp_path / "data", shared_key=SHARED_KEY, demo=True, database_url=proxy.dsn)
        async with TestClient(TestServer(create_app(settings))) as client:
            sender = Mesh(client, "X26ABC1")
            ids = [await start_chunked(sender, "X26ABC2", b"first", 2) for _ in range(4)]
            trips = []
            for message_id, streamed in zip(ids, (False, False, True, True), strict=True):
                before = proxy.round_trips
                assert await _post_chunk(client, sender, message_id, b"second", streamed=streamed) == 202
                trips.append(proxy.round_trips - before)
    assert trips == [2, 2, 3, 3]
