"""Connection limits of the MESH port: at most so many connections open on the node, and from one client address.

aiohttp accepts every connection it is offered, so the limit sits in front of its protocol: a connection past a
limit is answered at once with a MESH-shaped 503 (Retry-After, Connection: close) and closed, without a request
handler, a parser or a read of what it sends. The limits count connections, idle keep-alive ones included; a
connection that never sends a whole request head is closed by MESH_HEADER_TIMEOUT_SECONDS.

A site may also speak TLS and plain HTTP on one port (demo mode, broker/tls.py): each connection's first byte says
which (a TLS record of type handshake, 0x16, cannot begin an HTTP request line), so the JavaScript client's and
the sandbox image's `https://localhost:8700` and the README's `http://127.0.0.1:8700` both reach the same broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from asyncio import sslproto
from collections.abc import Callable
from http import HTTPStatus
from ssl import SSLContext
from typing import cast

from aiohttp import web
from yarl import URL

from broker import views
from broker.errors import BrokerError, ErrorCode
from broker.headers import V1
from broker.metrics import Metrics

log = logging.getLogger("broker.gate")

#: A refused connection is read (and what it sends dropped) this long after its answer before it is closed: closing
#: at once, with the client's request still arriving, would reset the connection and lose the answer.
REFUSAL_LINGER_SECONDS = 1.0
#: Connections the kernel queues before the node accepts them: aiohttp's 128 drops a burst of new clients' SYNs.
BACKLOG = 1024
#: The bytes a connection's transport may hold for its client before the writer waits (until all are sent).
WRITE_BUFFER_HIGH = 16 * 1024
#: Refusals are logged at most this often per limit (with how many there were), never once per connection.
LOG_EVERY_SECONDS = 60.0
#: The first byte of every TLS connection: a record of content type 22, handshake (RFC 8446 section 5.1).
TLS_HANDSHAKE_RECORD = 0x16


def refusal() -> bytes:
    """The whole HTTP answer to a connection past a limit: 503 with the MESH v1 error body (no request was read,
    so no Accept header says which version the client wants)."""
    response = views.error(BrokerError(ErrorCode.TOO_MANY_CONNECTIONS), V1)
    assert isinstance(response.body, bytes)
    status = HTTPStatus(response.status)
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items() if name.lower() != "content-length"]
    lines += [f"Content-Length: {len(response.body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


class ConnectionGate:
    """Counts the open connections of one node, in all and by client address (0: no limit)."""

    def __init__(self, metrics: Metrics, *, max_connections: int, max_per_address: int):
        self._metrics = metrics
        self._max = max_connections
        self._max_per_address = max_per_address
        self._open = 0
        self._by_address: dict[str, int] = {}
        self._refusal = refusal()
        self._refused_since_log: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}

    @property
    def open(self) -> int:
        return self._open

    def open_from(self, address: str) -> int:
        return self._by_address.get(address, 0)

    def wrap(
        self, factory: Callable[[], asyncio.BaseProtocol], *, tls_or_plain: _EitherWay | None = None
    ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for loop.create_server: factory's protocol for each connection the gate lets in,
        behind TLS or not as each connection's first byte says when tls_or_plain is given."""
        return lambda: _Gated(self, factory, tls_or_plain)

    def enter(self, address: str) -> str | None:
        """Count a new connection from address in, or name the limit that refuses it ("node" or "address")."""
        if self._max and self._open >= self._max:
            return self._refuse("node")
        held = self._by_address.get(address, 0)
        if self._max_per_address and held >= self._max_per_address:
            return self._refuse("address")
        self._open += 1
        self._by_address[address] = held + 1
        self._metrics.connections_open.set(self._open)
        return None

    def leave(self, address: str) -> None:
        self._open -= 1
        held = self._by_address[address] - 1
        if held:
            self._by_address[address] = held
        else:
            del self._by_address[address]
        self._metrics.connections_open.set(self._open)

    def _refuse(self, limit: str) -> str:
        self._metrics.connections_refused.labels(limit).inc()
        count = self._refused_since_log.get(limit, 0) + 1
        now = time.monotonic()
        if now - self._logged_at.get(limit, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            log.warning(
                "connections refused",
                extra={
                    "action": "connections_refused",
                    "limit": limit,
                    "refused": count,
                    "open": self._open,
                    "max": self._max if limit == "node" else self._max_per_address,
                },
            )
            self._logged_at[limit] = now
            count = 0
        self._refused_since_log[limit] = count
        return limit

    @property
    def refusal_bytes(self) -> bytes:
        return self._refusal


class _EitherWay:
    """TLS and plain HTTP on one port: the TLS context, and how long a connection may stay silent before its first
    byte says which it speaks (aiohttp's own header timeout only starts once it has the connection)."""

    def __init__(self, context: SSLContext, *, silence_seconds: float):
        self.context = context
        self.silence_seconds = silence_seconds


class _Gated(asyncio.Protocol):
    """One connection: passed through to aiohttp's protocol if the gate let it in, else answered 503 and closed.
    With tls_or_plain, the connection waits for its first bytes, then goes to aiohttp's protocol directly or
    through asyncio's TLS protocol (fed those bytes too: they are the client's hello)."""

    def __init__(
        self, gate: ConnectionGate, factory: Callable[[], asyncio.BaseProtocol], tls_or_plain: _EitherWay | None
    ):
        self._gate = gate
        self._factory = factory
        self._tls_or_plain = tls_or_plain
        #: Where the connection's events go once it is let in: aiohttp's protocol, or the TLS protocol in front of it.
        self._inner: asyncio.Protocol | asyncio.BufferedProtocol | None = None
        self._receive: Callable[[bytes], None] | None = None
        #: A connection let in whose first bytes have not come yet (tls_or_plain only).
        self._undecided: asyncio.Transport | None = None
        self._address = ""
        self._linger: asyncio.TimerHandle | None = None
        self._silence: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if self._gate.enter(self._address) is not None:
            self._refuse(transport)
            return
        # Pause the writer past a little and resume it only once all is sent: a client that stops reading then holds
        # at most one piece of a download in the broker's memory, not the unsent tail of one and the whole next one
        # (the kernel's socket buffer, megabytes on a fast link, keeps the connection busy meanwhile).
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH, low=0)
        if self._tls_or_plain is not None:
            self._undecided = transport
            silence = self._tls_or_plain.silence_seconds
            self._silence = asyncio.get_running_loop().call_later(silence, transport.close)
            return
        self._plain(transport)

    def _plain(self, transport: asyncio.Transport) -> None:
        self._inner = inner = cast(asyncio.Protocol, self._factory())
        self._receive = inner.data_received
        inner.connection_made(transport)

    def _decide(self, transport: asyncio.Transport, first: bytes) -> None:
        """Connect aiohttp's protocol, behind TLS if first (the connection's first bytes) opens a TLS handshake."""
        assert self._tls_or_plain is not None and self._silence is not None
        self._silence.cancel()
        self._undecided = None
        if first[0] != TLS_HANDSHAKE_RECORD:
            self._plain(transport)
            cast(asyncio.Protocol, self._inner).data_received(first)
            return
        loop = asyncio.get_running_loop()
        # Told how the handshake went; a failed one has already closed the connection, so its error is only read.
        handshake: asyncio.Future[None] = loop.create_future()
        handshake.add_done_callback(lambda done: done.cancelled() or done.exception())
        tls = sslproto.SSLProtocol(
            loop,
            cast(asyncio.Protocol, self._factory()),
            self._tls_or_plain.context,
            handshake,
            server_side=True,
            ssl_handshake_timeout=max(1, round(self._tls_or_plain.silence_seconds)),
        )
        self._inner = tls
        self._receive = lambda data: _feed(tls, data)
        tls.connection_made(transport)
        _feed(tls, first)

    def _refuse(self, transport: asyncio.Transport) -> None:
        transport.write(self._gate.refusal_bytes)
        if transport.can_write_eof():
            transport.write_eof()
            self._linger = asyncio.get_running_loop().call_later(REFUSAL_LINGER_SECONDS, transport.close)
        else:  # TLS: the close sends what is buffered, then close_notify
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self._receive is not None:
            self._receive(data)
        elif self._undecided is not None and data:
            self._decide(self._undecided, data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None  # a refused client, or one that sent nothing, has finished sending: close

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        if self._silence is not None:
            self._silence.cancel()
        if self._inner is not None or self._undecided is not None:
            self._gate.leave(self._address)
        if self._inner is not None:
            self._inner.connection_lost(exc)


def _feed(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    """Hand bytes received to a buffered protocol (asyncio's TLS protocol), in pieces of the buffer it offers."""
    view = memoryview(data)
    while view:
        buffer = memoryview(protocol.get_buffer(len(view)))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        protocol.buffer_updated(size)
        view = view[size:]


class GatedSite(web.BaseSite):
    """aiohttp's TCP site with its connections passed through a ConnectionGate."""

    def __init__(
        self,
        runner: web.BaseRunner,
        gate: ConnectionGate,
        host: str,
        port: int,
        *,
        ssl_context: SSLContext | None = None,
        tls_beside_plain: SSLContext | None = None,
        silence_seconds: float = 30.0,
        backlog: int = BACKLOG,
    ):
        """ssl_context: TLS only; tls_beside_plain: TLS or plain HTTP, as each connection begins (demo mode), with
        silence_seconds for a connection to say which."""
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._gate = gate
        self._host = host
        self._port = port
        self._either = (
            None if tls_beside_plain is None else _EitherWay(tls_beside_plain, silence_seconds=silence_seconds)
        )

    @property
    def name(self) -> str:
        return str(URL.build(scheme="https" if self._ssl_context else "http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._gate.wrap(server, tls_or_plain=self._either),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
        )
