"""Pacing: request bodies read under the idle timeout and the time allowance, and the watch on a response's bytes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.test_utils import make_mocked_request

from broker.errors import BrokerError, ErrorCode
from broker.metrics import Metrics
from broker.pacing import MB, Pace, Pacer


def test_the_allowance_is_a_floor_plus_time_per_mb() -> None:
    pace = Pace(idle=60, floor=60, per_mb=10)
    assert pace.allowance(0) == 60
    assert pace.allowance(100 * MB) == 1060


def upload(declared: int | None = None) -> tuple[web.Request, StreamReader]:
    content = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    headers = {} if declared is None else {"Content-Length": str(declared)}
    return make_mocked_request("POST", "/outbox", headers=headers, payload=content), content


async def read_all(pacer: Pacer, request: web.Request) -> bytes:
    return b"".join([piece async for piece in pacer.body(request)])


async def test_a_body_that_keeps_coming_is_read_whole() -> None:
    pacer = Pacer(Pace(idle=0.2, floor=5, per_mb=1), Metrics(), largest_body=MB)
    request, content = upload(declared=6)

    async def client() -> None:
        for piece in (b"ab", b"cd", b"ef"):
            await asyncio.sleep(0.05)
            content.feed_data(piece)
        content.feed_eof()

    sending = asyncio.ensure_future(client())
    assert await read_all(pacer, request) == b"abcdef"
    await sending


async def test_pieces_are_handed_on_as_they_arrived_not_copied() -> None:
    # A piece read whole is the very bytes object the parser fed: no cut, no join, no copy of the body.
    pacer = Pacer(Pace(idle=5, floor=5, per_mb=1), Metrics(), largest_body=MB)
    request, content = upload(declared=3 * 300_000)
    fed = [bytes([n]) * 300_000 for n in range(3)]
    for piece in fed:
        content.feed_data(piece)
    content.feed_eof()
    pieces = [piece async for piece in pacer.body(request)]
    assert [id(piece) for piece in pieces] == [id(piece) for piece in fed]


async def test_small_pieces_already_buffered_are_joined() -> None:
    # A client sending 1-byte HTTP chunks does not make 1-byte pieces downstream.
    pacer = Pacer(Pace(idle=5, floor=5, per_mb=1), Metrics(), largest_body=MB)
    request, content = upload()
    for n in range(3000):
        content.begin_http_chunk_receiving()
        content.feed_data(bytes([n % 256]))
        content.end_http_chunk_receiving()
    content.feed_eof()
    pieces = [piece async for piece in pacer.body(request)]
    assert b"".join(pieces) == bytes(n % 256 for n in range(3000))
    assert len(pieces) == 1


async def test_a_chunked_body_reads_on_past_the_ends_of_its_chunks() -> None:
    # Transfer-Encoding: chunked: the reader marks where each HTTP chunk ended, and a chunk's end found after its
    # bytes were already taken comes back as no bytes, which is not the end of the body.
    pacer = Pacer(Pace(idle=5, floor=5, per_mb=1), Metrics(), largest_body=MB)
    request, content = upload()

    async def client() -> None:
        for piece in (b"ab", b"cd", b"ef"):
            content.begin_http_chunk_receiving()
            content.feed_data(piece)
            await asyncio.sleep(0.02)  # the reader takes the bytes before the chunk's end is known
            content.end_http_chunk_receiving()
        content.feed_eof()

    sending = asyncio.ensure_future(client())
    assert await read_all(pacer, request) == b"abcdef"
    await sending


async def test_an_empty_body_ends_however_often_it_is_read() -> None:
    # aiohttp's reader of an empty body says "end of a chunk, no bytes" after its first answer, for ever.
    class Counted:
        """EMPTY_PAYLOAD, failing the test (not hanging it) if asked more than a few times."""

        asked = 0

        async def readchunk(self) -> tuple[bytes, bool]:
            self.asked += 1
            assert self.asked < 10, "read on past the end"
            return await EMPTY_PAYLOAD.readchunk()

        def at_eof(self) -> bool:
            return EMPTY_PAYLOAD.at_eof()

    pacer = Pacer(Pace(idle=5, floor=5, per_mb=1), Metrics(), largest_body=MB)
    request = make_mocked_request("POST", "/outbox", headers={"Content-Length": "0"}, payload=Counted())
    for _ in range(3):
        assert await read_all(pacer, request) == b""


async def test_a_body_that_stops_is_408_after_the_idle_timeout() -> None:
    metrics = Metrics()
    pacer = Pacer(Pace(idle=0.1, floor=1000, per_mb=1), metrics, largest_body=MB)
    request, content = upload(declared=100)
    content.feed_data(b"x")
    with pytest.raises(BrokerError) as ended:
        await asyncio.wait_for(read_all(pacer, request), 10)  # ended by the idle timeout, long before 1000 s
    assert ended.value.code is ErrorCode.REQUEST_TIMEOUT
    assert ended.value.description == "No byte of the request body arrived for 0.1 seconds"
    assert metrics.transfers_cut.labels("upload", "idle")._value.get() == 1


async def test_a_body_that_drags_is_408_past_its_allowance() -> None:
    """Each byte within the idle timeout, but 10 bytes may take only 0.3 s (+ a negligible per-MB part)."""
    metrics = Metrics()
    pacer = Pacer(Pace(idle=0.2, floor=0.3, per_mb=1), metrics, largest_body=MB)
    request, content = upload(declared=10)

    async def client() -> None:
        for _ in range(100):
            content.feed_data(b"d")
            await asyncio.sleep(0.1)

    dripping = asyncio.ensure_future(client())
    with pytest.raises(BrokerError) as ended:
        await asyncio.wait_for(read_all(pacer, request), 5)
    dripping.cancel()
    assert ended.value.code is ErrorCode.REQUEST_TIMEOUT
    assert "took longer than the 0.3 seconds allowed" in ended.value.description
    assert metrics.transfers_cut.labels("upload", "total")._value.get() == 1


class FakeTransport:
    """What the watch reads of a connection: the bytes aiohttp holds for the client."""

    def __init__(self) -> None:
        self.waiting = 0
        self.aborted = False
        self.socket = mock.Mock()

    def get_write_buffer_size(self) -> int:
        return self.waiting

    def is_closing(self) -> bool:
        return self.aborted

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.socket if name == "socket" else default

    def abort(self) -> None:
        self.aborted = True


def download() -> tuple[web.Request, FakeTransport, SimpleNamespace]:
    transport = FakeTransport()
    writer = SimpleNamespace(output_size=0)
    route = SimpleNamespace(resource=SimpleNamespace(canonical="/inbox/{message_id}"))
    request = SimpleNamespace(transport=transport, writer=writer, method="GET", match_info=SimpleNamespace(route=route))
    return cast(web.Request, request), transport, writer


async def test_a_client_that_takes_nothing_is_cut_after_the_idle_timeout() -> None:
    metrics = Metrics()
    pacer = Pacer(Pace(idle=0.1, floor=60, per_mb=10), metrics, largest_body=MB)
    request, transport, writer = download()
    with pacer.watch(request) as watch:
        writer.output_size, transport.waiting = 300_000, 200_000  # 100 kB taken, the rest waits for the client
        await asyncio.sleep(0.3)
    assert transport.aborted and watch.cut == "idle"
    transport.socket.setsockopt.assert_called()  # a reset (SO_LINGER 0), not a close that keeps sending
    assert metrics.transfers_cut.labels("download", "idle")._value.get() == 1


async def test_a_client_that_keeps_taking_bytes_is_not_cut() -> None:
    pacer = Pacer(Pace(idle=0.1, floor=60, per_mb=10), Metrics(), largest_body=MB)
    request, transport, writer = download()
    with pacer.watch(request) as watch:
        for _ in range(10):
            writer.output_size += 10_000  # the client takes what is written, slowly
            transport.waiting = 5_000
            await asyncio.sleep(0.04)
    assert not transport.aborted and watch.cut is None


async def test_a_broker_that_is_slow_itself_is_not_the_clients_fault() -> None:
    pacer = Pacer(Pace(idle=0.05, floor=60, per_mb=10), Metrics(), largest_body=MB)
    request, transport, _writer = download()
    with pacer.watch(request) as watch:
        await asyncio.sleep(0.2)  # nothing written, nothing waiting: the blob store is slow
    assert not transport.aborted and watch.cut is None


async def test_a_client_behind_its_allowance_is_cut() -> None:
    pacer = Pacer(Pace(idle=10, floor=0.1, per_mb=1), Metrics(), largest_body=100 * MB)
    request, transport, writer = download()
    with pacer.watch(request) as watch:
        for _ in range(20):
            writer.output_size += 100  # always some progress: never idle, but far below 1 MB a second
            transport.waiting = 50
            await asyncio.sleep(0.05)
            if watch.cut:
                break
    assert transport.aborted and watch.cut == "total"
