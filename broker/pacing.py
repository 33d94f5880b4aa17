"""Time limits on a transfer's bytes: a body may not pause longer than the idle timeout, nor take longer in all than a
floor plus an allowance per MB. An upload past either is answered 408; a download is cut off.

Only waits on the client count as idle: an upload waits on it in each read, a download while bytes it was given sit
unsent because the client takes none. The broker's own waits (its disk, the database, the memory budget) do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from aiohttp import web

from broker.errors import BrokerError, ErrorCode
from broker.metrics import Metrics

log = logging.getLogger("broker.pacing")

MB = 1000 * 1000
#: Request body pieces smaller than this are joined with what else is buffered, up to BODY_PIECE (Pacer.body).
SMALL_PIECE = 16 * 1024
BODY_PIECE = 256 * 1024
#: A download's progress is looked at every quarter of the idle timeout (or of the floor, if shorter), and at least
#: this often, so it is cut within a quarter more than its limit.
LONGEST_CHECK = 5.0


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast a transfer's client must keep up (MESH_BODY_IDLE_TIMEOUT_SECONDS, MESH_REQUEST_TIME_*)."""

    #: The longest pause, in seconds, with no byte moving because of the client.
    idle: float
    #: Seconds any transfer may take, whatever its size.
    floor: float
    #: Seconds more for each MB (10^6 bytes) of its body.
    per_mb: float

    def allowance(self, nbytes: int) -> float:
        """The seconds a transfer of nbytes may take in all."""
        return self.floor + self.per_mb * nbytes / MB


class Pacer:
    """Reads request bodies and watches responses under the node's Pace, counting and logging what it ends."""

    def __init__(self, pace: Pace, metrics: Metrics, *, largest_body: int):
        self.pace = pace
        self._metrics = metrics
        #: No transfer may outlast the allowance of the largest body a request may carry.
        self._cap = pace.allowance(largest_body)

    async def body(self, request: web.Request, message_id: str | None = None) -> AsyncIterator[bytes]:
        """The request body in pieces, each read timed: BrokerError(REQUEST_TIMEOUT) when no byte comes for the
        idle timeout, or when the body outlasts the allowance for its declared size (or the bytes so far)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        declared = request.content_length or 0
        received = 0
        while True:
            allowed = self.pace.allowance(max(declared, received))
            left = started + allowed - loop.time()
            try:
                async with asyncio.timeout(min(self.pace.idle, left)):
                    # The pieces as aiohttp's parser made them, taken whole: read(n) cut and joined them to n
                    # bytes, a copy of every byte of every upload. aiohttp's flow control bounds what it buffers,
                    # so a piece is never larger than that (a few hundred KiB).
                    piece, boundary = await request.content.readchunk()
                    if 0 < len(piece) < SMALL_PIECE:
                        # A small piece (a tiny HTTP chunk, a slow sender) is joined with whatever else is buffered,
                        # as read(n) did: downstream each piece costs far more than its bytes (an object, a hash
                        # update, a place in the blob store's list of pieces to write).
                        piece += request.content.read_nowait(BODY_PIECE - len(piece))
            except TimeoutError:
                reason = "idle" if self.pace.idle < left else "total"
                self._ended(request, "upload", reason, received)
                description = (
                    f"No byte of the request body arrived for {self.pace.idle:g} seconds"
                    if reason == "idle"
                    else f"The request body took longer than the {allowed:.4g} seconds allowed for its size"
                )
                raise BrokerError(ErrorCode.REQUEST_TIMEOUT, message_id=message_id, description=description) from None
            if not piece:
                # No bytes at the end of a chunk of `Transfer-Encoding: chunked`: read on. An empty body's reader
                # answers the same after its end, every time it is asked, so the end is checked too.
                if boundary and not request.content.at_eof():
                    continue
                return
            received += len(piece)
            yield piece

    @contextlib.contextmanager
    def watch(self, request: web.Request) -> Iterator[_Watch]:
        """Watch the response's bytes for the block: a client that takes none of what is waiting for it for the
        idle timeout, or falls behind the allowance for what it has taken, has its connection cut (abort), so the
        handler's next write fails and everything the download held is let go. `cut` says why, if it was."""
        watch = _Watch(request, self.pace, self._cap, self._ended)
        try:
            yield watch
        finally:
            watch.stop()

    def _ended(self, request: web.Request, direction: str, reason: str, nbytes: int) -> None:
        self._metrics.transfers_cut.labels(direction, reason).inc()
        route = request.match_info.route.resource
        log.info(
            "transfer timed out",
            extra={
                "action": "transfer_timed_out",
                "direction": direction,
                "reason": reason,
                "route": route.canonical if route is not None else "unmatched",
                "method": request.method,
                "bytes": nbytes,
            },
        )


class _Watch:
    """Looks at one response's progress every so often (a timer, no task): the bytes the kernel has taken, and
    the bytes aiohttp holds for a client that takes none."""

    def __init__(
        self, request: web.Request, pace: Pace, cap: float, ended: Callable[[web.Request, str, str, int], None]
    ):
        self._loop = asyncio.get_running_loop()
        self._request = request
        self._pace = pace
        self._cap = cap
        self._ended = ended
        self._started = self._moved_at = self._loop.time()
        self._sent = 0
        self._interval = max(0.01, min(pace.idle / 4, pace.floor / 4, LONGEST_CHECK))
        self.cut: str | None = None
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(self._interval, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        transport = self._request.transport
        if transport is None or transport.is_closing():
            return
        now = self._loop.time()
        waiting = transport.get_write_buffer_size()
        sent = self._request.writer.output_size - waiting
        if not waiting or sent != self._sent:
            # Nothing waits on the client (the broker is the slow one, or all is sent), or it took some.
            self._sent, self._moved_at = sent, now
        reason = None
        if now - self._moved_at >= self._pace.idle:
            reason = "idle"
        elif (waiting and now - self._started > self._pace.allowance(sent)) or now - self._started > self._cap:
            reason = "total"
        if reason is None:
            self._handle = self._loop.call_later(self._interval, self._check)
            return
        self.cut = reason
        self._ended(self._request, "download", reason, max(0, sent))
        _reset(transport)


def _reset(transport: asyncio.Transport) -> None:
    """Close the connection with a reset: a plain close would leave the kernel pushing what is queued to a client
    that takes none of it, for minutes, in memory outside the broker's budget."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
