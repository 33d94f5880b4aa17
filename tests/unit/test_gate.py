"""The connection gate: counts by node and by client address, and a connection past a limit answered 503 at once."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from broker import gate
from broker.gate import ConnectionGate, refusal
from broker.metrics import Metrics


class FakeTransport:
    def __init__(self, address: str, *, tls: bool = False):
        self.peer = (address, 40000)
        self.tls = tls
        self.written = bytearray()
        self.eof_written = False
        self.closed = False
        self.limits: dict[str, int] = {}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += data

    def can_write_eof(self) -> bool:
        return not self.tls

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        self.closed = True

    def _force_close(self, exc: Exception | None) -> None:
        """What asyncio's TLS protocol calls on a failed handshake (asyncio's and uvloop's transports have it)."""
        self.closed = True

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.limits = {"high": high, "low": low}


class FakeProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.calls.append("made")

    def data_received(self, data: bytes) -> None:
        self.calls.append(f"data {data!r}")

    def eof_received(self) -> bool | None:
        self.calls.append("eof")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("lost")


def test_connections_are_counted_by_node_and_by_address() -> None:
    metrics = Metrics()
    limits = ConnectionGate(metrics, max_connections=3, max_per_address=2)
    assert limits.enter("10.0.0.1") is None
    assert limits.enter("10.0.0.1") is None
    assert limits.enter("10.0.0.1") == "address"
    assert limits.enter("10.0.0.2") is None
    assert limits.enter("10.0.0.3") == "node"
    assert (limits.open, limits.open_from("10.0.0.1")) == (3, 2)
    limits.leave("10.0.0.1")
    assert limits.enter("10.0.0.3") is None
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        limits.leave(address)
    assert limits.open == 0 and limits._by_address == {}
    assert metrics.connections_open._value.get() == 0
    assert metrics.connections_refused.labels("address")._value.get() == 1
    assert metrics.connections_refused.labels("node")._value.get() == 1


def test_zero_is_no_limit() -> None:
    limits = ConnectionGate(Metrics(), max_connections=0, max_per_address=0)
    assert all(limits.enter("10.0.0.1") is None for _ in range(10_000))


def test_the_refusal_is_a_whole_mesh_503() -> None:
    head, _, body = refusal().partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert headers["connection"] == "close"
    assert headers["retry-after"] == "1"
    assert headers["content-type"].startswith("application/")
    assert int(headers["content-length"]) == len(body)
    assert orjson.loads(body) == {
        "errorEvent": "",
        "errorCode": "TooManyConnections",
        "errorDescription": "Too many connections; try again later",
    }


async def test_a_connection_let_in_is_aiohttps_and_counted_until_it_closes() -> None:
    limits = ConnectionGate(Metrics(), max_connections=1, max_per_address=1)
    inner = FakeProtocol()
    protocol = limits.wrap(lambda: inner)()
    transport = FakeTransport("10.0.0.1")
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    assert protocol.eof_received() is True
    assert limits.open == 1
    protocol.connection_lost(None)
    assert inner.calls == ["made", "data b'GET / HTTP/1.1\\r\\n'", "eof", "lost"]
    assert limits.open == 0 and not transport.written
    # The writer waits once a little is held for the client, and goes on only when all of it has gone.
    assert transport.limits == {"high": gate.WRITE_BUFFER_HIGH, "low": 0}


async def test_a_connection_past_the_limit_is_answered_and_closed_without_aiohttp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gate, "REFUSAL_LINGER_SECONDS", 0.01)
    limits = ConnectionGate(Metrics(), max_connections=0, max_per_address=1)
    limits.enter("10.0.0.1")
    made: list[FakeProtocol] = []
    protocol = limits.wrap(lambda: made.append(FakeProtocol()) or made[-1])()
    transport = FakeTransport("10.0.0.1")
    protocol.connection_made(transport)  # type: ignore[arg-type]
    assert bytes(transport.written) == refusal()
    assert transport.eof_written and not transport.closed  # half-closed: the client's request is read and dropped
    protocol.data_received(b"POST /messageexchange/X26ABC1/outbox HTTP/1.1\r\n")
    await asyncio.sleep(0.05)
    assert transport.closed
    protocol.connection_lost(None)
    assert not made  # no request handler was ever built
    assert limits.open == 1  # only the connection let in is counted


async def test_a_tls_connection_past_the_limit_is_closed_after_its_answer() -> None:
    limits = ConnectionGate(Metrics(), max_connections=1, max_per_address=0)
    limits.enter("10.0.0.9")
    protocol = limits.wrap(FakeProtocol)()
    transport = FakeTransport("10.0.0.1", tls=True)
    protocol.connection_made(transport)  # type: ignore[arg-type]
    assert bytes(transport.written) == refusal() and transport.closed


def either_way(silence: float = 5.0) -> tuple[ConnectionGate, list[FakeProtocol], asyncio.Protocol, FakeTransport]:
    """A gate that lets TLS or plain HTTP in (a connection silent for `silence` seconds closed), one connection
    made through it: (gate, aiohttp's protocols built so far, the connection's protocol, its transport)."""
    import ssl

    limits = ConnectionGate(Metrics(), max_connections=0, max_per_address=0)
    either = gate._EitherWay(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), silence_seconds=silence)
    made: list[FakeProtocol] = []
    protocol = limits.wrap(lambda: made.append(FakeProtocol()) or made[-1], tls_or_plain=either)()
    transport = FakeTransport("10.0.0.1")
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return limits, made, protocol, transport


async def test_with_tls_beside_plain_a_plain_request_goes_to_aiohttp_once_its_first_bytes_come() -> None:
    limits, made, protocol, _ = either_way()
    assert not made and limits.open == 1  # counted, but nothing built before its first byte
    protocol.data_received(b"GET /_ping HTTP/1.1\r\n")
    protocol.data_received(b"\r\n")
    protocol.connection_lost(None)
    assert made[0].calls == ["made", "data b'GET /_ping HTTP/1.1\\r\\n'", "data b'\\r\\n'", "lost"]
    assert limits.open == 0


async def test_with_tls_beside_plain_a_tls_hello_goes_to_the_tls_protocol_in_front_of_aiohttp() -> None:
    limits, made, protocol, transport = either_way()
    # A record header of type handshake (22), TLS 1.0 in the record layer, then a hello that is not one.
    protocol.data_received(bytes([22, 3, 1, 0, 5]) + b"junk!")
    assert isinstance(protocol._inner, asyncio.sslproto.SSLProtocol)  # type: ignore[attr-defined]
    assert made and made[0].calls == []  # aiohttp hears of the connection only after a handshake
    assert transport.closed  # that one failed
    protocol.connection_lost(None)
    assert limits.open == 0


async def test_with_tls_beside_plain_a_silent_connection_is_closed_and_uncounted() -> None:
    limits, made, protocol, transport = either_way(0.02)
    await asyncio.sleep(0.1)
    assert transport.closed
    assert protocol.eof_received() is None
    protocol.connection_lost(None)
    assert not made and limits.open == 0
