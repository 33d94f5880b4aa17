"""A counting proxy on 127.0.0.1 in front of PostgreSQL: how many round trips the broker's connections make.

A round trip is one exchange the client waits for: a simple query ('Q') or an extended-protocol batch ending in
Sync ('S'), each answered by exactly one ReadyForQuery ('Z'). BEGIN and COMMIT are round trips of their own, and
so is a statement's first Parse when asyncpg has not prepared it on that connection yet. The proxy counts the
server's ReadyForQuery messages, so what it counts is what the wire carried, whatever the driver's API looks like.

    async with counting_proxy(dsn) as proxy:    # proxy.dsn goes where dsn went
        before = proxy.round_trips
        ...
        print(proxy.round_trips - before)
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

HOST = "127.0.0.1"
PIECE = 64 * 1024
#: The startup packet's code asking for TLS (the proxy answers "no" itself, so the stream stays readable).
SSL_REQUEST = 80877103
GSS_REQUEST = 80877104


class CountingProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.round_trips = 0
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        server_out: asyncio.StreamWriter | None = None
        try:
            startup = await _startup(client_in, client_out)
            server_in, server_out = await asyncio.open_connection(*self._upstream)
            server_out.write(startup)
            upward = asyncio.ensure_future(_pipe(client_in, server_out))
            try:
                await self._count(server_in, client_out)
            finally:
                upward.cancel()
                await asyncio.gather(upward, return_exceptions=True)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            client_out.close()
            if server_out is not None:
                server_out.close()
            self._tasks.discard(task)

    async def _count(self, server_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        """Forward the server's messages, counting ReadyForQuery (every server message after startup is typed)."""
        while True:
            head = await server_in.readexactly(5)
            kind, length = head[:1], struct.unpack("!I", head[1:])[0]
            body = await server_in.readexactly(length - 4)
            if kind == b"Z":
                self.round_trips += 1
            client_out.write(head + body)
            await client_out.drain()


async def _startup(client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> bytes:
    """The client's startup packet, after refusing TLS or GSS encryption requests ourselves (answer 'N')."""
    while True:
        length = struct.unpack("!I", await client_in.readexactly(4))[0]
        body = await client_in.readexactly(length - 4)
        code = struct.unpack("!I", body[:4])[0]
        if code in (SSL_REQUEST, GSS_REQUEST):
            client_out.write(b"N")
            await client_out.drain()
            continue
        return struct.pack("!I", length) + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while piece := await reader.read(PIECE):
            writer.write(piece)
            await writer.drain()


@contextlib.asynccontextmanager
async def counting_proxy(dsn: str) -> AsyncIterator[ProxiedDatabase]:
    parts = urlsplit(dsn)
    proxy = CountingProxy(parts.hostname or HOST, parts.port or 5432)
    await proxy.start()
    try:
        yield ProxiedDatabase(proxy, _with_port(dsn, proxy.port))
    finally:
        await proxy.stop()


class ProxiedDatabase:
    def __init__(self, proxy: CountingProxy, dsn: str):
        self.proxy, self.dsn = proxy, dsn

    @property
    def round_trips(self) -> int:
        return self.proxy.round_trips


def _with_port(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    credentials, _, _ = parts.netloc.rpartition("@")
    netloc = f"{credentials}@{HOST}:{port}" if credentials else f"{HOST}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))
