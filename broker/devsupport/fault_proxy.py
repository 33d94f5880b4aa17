"""A TCP proxy on 127.0.0.1 that plays a failing dependency between the broker and a server (moto's S3 in the
fault tests): it passes bytes through, adds latency, resets connections, or answers HTTP 500 or 503 itself, in
whichever mode it is switched to while it runs, from any thread.

    with fault_proxy.running("http://127.0.0.1:5000") as proxy:   # proxy.url goes where the server's URL went
        proxy.switch(Mode.HTTP_503)                               # every request now gets S3's SlowDown answer
        proxy.switch(Mode.PASS, fail_next=2, fault=Mode.RESET)     # the next two connections are reset, then pass
        proxy.cut_after(3_000_000)                                 # a download is reset midway (3 MB in), once
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

HOST = "127.0.0.1"
#: Bytes read at a time in either direction.
PIECE = 64 * 1024
#: A request head larger than this is not HTTP this proxy needs to understand: the connection is reset.
MAX_HEAD = 64 * 1024


class Mode(enum.Enum):
    PASS = "pass"
    #: Every piece, either way, waits `delay` seconds before it is forwarded.
    LATENCY = "latency"
    #: Connections are reset (TCP RST) as soon as they are accepted.
    RESET = "reset"
    #: Each request is read and answered by the proxy itself, with S3's own error bodies, then the connection closes.
    HTTP_500 = "http-500"
    HTTP_503 = "http-503"


_ANSWERS = {
    Mode.HTTP_500: (
        "500 Internal Server Error",
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
    Mode.HTTP_503: ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
}


@dataclass
class Counts:
    """What the proxy has done since it started: a test reads these to see that retries happened."""

    connections: int = 0
    resets: int = 0
    answered: int = 0
    #: Connections reset midway by cut_after.
    cuts: int = 0


class FaultProxy:
    """Listens on 127.0.0.1 and forwards each connection to upstream, or plays the fault of its mode.

    A switch to a fault mode also cuts the connections already open, so a client's pooled connections meet the
    fault at once rather than after their keep-alive ends. `fail_next=n` plays `fault` on the next n connections
    only, then the mode switched to: a flaky dependency, which a client that retries should never notice.
    """

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream must be a URL with a host and a port, not {upstream!r}")
        self._upstream = (parts.hostname, parts.port)
        self._mode = Mode.PASS
        self._delay = 0.0
        self._fail_next = 0
        self._fault = Mode.RESET
        #: Bytes still to pass from server to client before the connection carrying them is reset (cut_after).
        self._cut_left: int | None = None
        self._after_cut = Mode.PASS
        self._open: set[asyncio.BaseTransport] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counts = Counts()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._cut_all()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def switch(self, mode: Mode, *, delay: float = 0.0, fail_next: int = 0, fault: Mode = Mode.RESET) -> None:
        """Change the mode; safe to call from any thread (the change is made on the proxy's own loop)."""
        if fault in (Mode.PASS, Mode.LATENCY):
            raise ValueError("fail_next needs a fault that fails: RESET, HTTP_500 or HTTP_503")

        def apply() -> None:
            self._mode, self._delay, self._fail_next, self._fault = mode, delay, fail_next, fault
            if fail_next or mode not in (Mode.PASS, Mode.LATENCY):
                self._cut_all()

        self._on_own_loop(apply)

    def cut_after(self, nbytes: int, *, then: Mode = Mode.PASS) -> None:
        """Pass the next nbytes from the server to the client (counted from now, over whichever connections carry
        them), then reset the connection carrying the next byte, once: a response broken midway, as by a server
        that crashed or a network that dropped. The mode is then `then` (HTTP_503, say: a server that stays down).
        Safe to call from any thread."""
        if nbytes < 0:
            raise ValueError("nbytes must be 0 or more")

        def apply() -> None:
            self._cut_left, self._after_cut = nbytes, then

        self._on_own_loop(apply)

    def _on_own_loop(self, change: Callable[[], None]) -> None:
        """Make a change on the proxy's loop (its state is the loop's alone); from another thread, wait for it."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the proxy is not running")
        if _on_loop(loop):
            change()
            return
        done = threading.Event()

        def apply() -> None:
            change()
            done.set()

        loop.call_soon_threadsafe(apply)
        done.wait(5)

    def _cut_all(self) -> None:
        for transport in list(self._open):
            _reset(transport)
        self._open.clear()

    def _mode_for_new_connection(self) -> Mode:
        if self._fail_next:
            self._fail_next -= 1
            return self._fault
        return self._mode

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        self.counts.connections += 1
        client = writer.transport
        mode = self._mode_for_new_connection()
        try:
            if mode is Mode.RESET:
                self.counts.resets += 1
                _reset(client)
            elif mode in _ANSWERS:
                await self._answer(reader, writer, mode)
            else:
                await self._pipe(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            _reset(client)
        except asyncio.CancelledError:
            # Only close() cancels a connection's task; ending quietly spares asyncio's server a noisy callback
            # (it asks every finished handler for its exception, and a cancelled one raises there).
            _reset(client)
        finally:
            self._open.discard(client)
            if not client.is_closing():
                client.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: Mode) -> None:
        """Read one request (its body too, unless the client waits for 100-continue) and answer it as S3 would."""
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            raise ConnectionResetError("request head too large")
        lines = head.decode("latin-1").split("\r\n")
        method = lines[0].split(" ", 1)[0]
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        if fields.get("expect", "").lower() != "100-continue":
            remaining = int(fields.get("content-length") or 0)
            while remaining > 0:
                piece = await reader.read(min(PIECE, remaining))
                if not piece:
                    raise ConnectionResetError("request body cut short")
                remaining -= len(piece)
        status, code, message = _ANSWERS[mode]
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            "<RequestId>fault-proxy</RequestId></Error>"
        ).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        if method != "HEAD":
            writer.write(body)
        self.counts.answered += 1
        await writer.drain()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        self._open.update((writer.transport, upstream_writer.transport))
        copies = [
            asyncio.ensure_future(self._copy(reader, upstream_writer)),
            asyncio.ensure_future(self._copy(upstream_reader, writer, downstream=True)),
        ]
        try:
            # Each direction ends on its own (a half-close is passed on); the first to fail ends both.
            done, _ = await asyncio.wait(copies, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for copy in copies:
                copy.cancel()
            await asyncio.gather(*copies, return_exceptions=True)
            self._open.discard(upstream_writer.transport)
            if not upstream_writer.transport.is_closing():
                upstream_writer.close()
        for copy in done:
            copy.result()

    async def _copy(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, downstream: bool = False
    ) -> None:
        while piece := await source.read(PIECE):
            if self._mode is Mode.LATENCY and self._delay:
                await asyncio.sleep(self._delay)
            if downstream and self._cut_left is not None:
                if len(piece) > self._cut_left:
                    await self._cut(piece[: self._cut_left], sink)
                self._cut_left -= len(piece)
            sink.write(piece)
            await sink.drain()
        if sink.can_write_eof() and not sink.transport.is_closing():
            sink.write_eof()

    async def _cut(self, head: bytes, sink: asyncio.StreamWriter) -> None:
        """Pass head on, then end the connection with a reset (raised, so that _serve resets both sides)."""
        self._cut_left = None
        self._mode = self._after_cut
        self.counts.cuts += 1
        if head:
            sink.write(head)
            await sink.drain()
        raise ConnectionResetError("cut midway by the fault proxy")


def _reset(transport: asyncio.BaseTransport) -> None:
    """Close with a TCP RST rather than a FIN: the peer sees "connection reset", as when a server crashes."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


@contextlib.contextmanager
def running(upstream: str) -> Iterator[FaultProxy]:
    """A FaultProxy serving on a thread of its own (for callers without an event loop, or with their own)."""
    proxy = FaultProxy(upstream)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(proxy.start())
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(proxy.close())
        loop.close()

    thread = threading.Thread(target=serve, name="fault-proxy", daemon=True)
    thread.start()
    started.wait(10)
    if failure:
        raise failure[0]
    try:
        yield proxy
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
