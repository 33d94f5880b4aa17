"""The transfer room: one stored chunk's bytes out to a client, checked on the way, in the coding asked for.

Handlers decide what to send (which chunk, which headers, which coding); this module decides how. Zero-copy by
the kernel's sendfile where the blob store has a local file and the event loop can send one; streamed in pieces
otherwise (uvloop has no sendfile, nor has TLS, nor S3 a local file). Either way the chunk's recorded size and
SHA-256 are checked before its last byte leaves, streaming holds memory from the node's budget, and what was
sent is counted in the metrics.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import BinaryIO

from aiohttp import web
from aiohttp.http import StreamWriter

from broker.blobs.protocol import BlobError, BlobNotFound, BlobStore
from broker.budget import MemoryBudget
from broker.gzipstream import Deflater, Inflater, NotGzip, gzip_small
from broker.integrity import ChunkCorrupted, check_whole, descriptor_matches, verified
from broker.metrics import Metrics
from broker.models import Chunk

log = logging.getLogger("broker.download")

#: Bytes read from the blob store per write to the socket: what a streamed download reserves from the memory
#: budget, and only while it reads that piece and hands it to the connection.
PIECE = 256 * 1024
#: A coded download's step holds the stored piece being coded and at most one piece of output (the codec caps
#: each step's output at PIECE, whatever the compression ratio), so it reserves both.
CODED_STEP = 2 * PIECE
#: A stored piece at most this long has its first coding step run on the event loop: a typical message is one
#: small piece, coded without a thread hop. Every other step runs on a worker thread (zlib releases the GIL).
INLINE_CODING = 64 * 1024
#: Why the broker cut a download it could not finish (its blob store failed, the stored bytes did not verify): the
#: status was already sent, so the request counts as status class 5xx by this mark (broker/middlewares.py).
DOWNLOAD_ABORTED = web.RequestKey("download_aborted", str)
#: On-the-fly gzip favours speed: the client asked for gzip to save bandwidth, not for the smallest file.
GZIP_LEVEL = 1


class Coding(enum.Enum):
    """What happens to a chunk's stored bytes on the way out (the handler negotiates it with the client)."""

    AS_STORED = "as stored"
    #: gzip plain bytes for a client that asked for it.
    GZIP = "gzip"
    #: Undo the sender's gzip for a client that did not ask for it.
    GUNZIP = "gunzip"

    def gzipped(self, stored_gzip: bool) -> bool:
        """Whether the body that leaves is gzip, given whether the stored bytes are."""
        return self is Coding.GZIP or (self is Coding.AS_STORED and stored_gzip)


class Transfer:
    """Sends stored chunks as response bodies. Holds nothing between downloads but what it is given."""

    def __init__(self, blobs: BlobStore, budget: MemoryBudget, metrics: Metrics):
        self._blobs = blobs
        self._budget = budget
        self._metrics = metrics

    async def send(
        self, request: web.Request, response: web.StreamResponse, chunk: Chunk, coding: Coding
    ) -> web.StreamResponse:
        """Prepare response (its headers as the handler built them) and send the chunk as its body.

        The blob is opened only once the headers are on their way, so a blob that is missing or damaged shows
        as a body cut short: with the status already sent, that is the only honest signal left.
        """
        started = time.perf_counter()
        if chunk.data is not None and len(chunk.data) <= INLINE_CODING and coding is not Coding.GUNZIP:
            return await self._send_small(request, response, chunk, chunk.data, coding, started)
        if coding is Coding.AS_STORED:
            response.content_length = chunk.size  # only the bytes as stored have a length known up front
        await response.prepare(request)
        try:
            if not await self._send_file(request, response, chunk, coding):
                await self._stream(_Outlet(request, response), chunk, coding)
        except (ChunkCorrupted, BlobError, NotGzip) as exc:
            return self._abort(request, response, exc, chunk.message_id)
        await response.write_eof()
        self._metrics.chunk_download_duration.observe(time.perf_counter() - started)
        return response

    async def _send_small(
        self,
        request: web.Request,
        response: web.StreamResponse,
        chunk: Chunk,
        data: bytes,
        coding: Coding,
        started: float,
    ) -> web.StreamResponse:
        """A chunk from its row, small, as stored or gzipped: checked and coded whole before anything is sent, then
        headers and body leave in one write with a Content-Length (aiohttp joins them), where streaming takes a
        deflate stream's setup and two writes with chunked framing: a typical message is such a chunk. The bytes
        came in memory with the row and the coded copy is no larger than them plus a few bytes, so nothing is drawn
        from the budget. Decoding stays on the streamed path: its output is bounded per step, not by the input."""
        try:
            check_whole(data, chunk)
        except ChunkCorrupted as exc:
            # As on the streamed path: the status leaves, then the connection is cut.
            await response.prepare(request)
            return self._abort(request, response, exc, chunk.message_id)
        body = data if coding is Coding.AS_STORED else gzip_small(data, GZIP_LEVEL)
        response.content_length = len(body)
        await response.prepare(request)
        await response.write_eof(body)
        self._metrics.bytes_sent.inc(len(body))
        self._metrics.chunk_download_duration.observe(time.perf_counter() - started)
        return response

    async def send_chunks(
        self, request: web.Request, response: web.StreamResponse, chunks: Sequence[Chunk], coding: Coding
    ) -> web.StreamResponse:
        """A whole message as one body (the web page's download): its chunks in order, each verified as in send,
        through one codec (a gzip message's chunks decode as one member after another)."""
        if coding is Coding.AS_STORED:
            response.content_length = sum(chunk.size for chunk in chunks)
        await response.prepare(request)
        try:
            await self._pump(_Outlet(request, response), self._each_verified(chunks), coding)
        except (ChunkCorrupted, BlobError, NotGzip) as exc:
            return self._abort(request, response, exc, chunks[0].message_id if chunks else None)
        await response.write_eof()
        return response

    def _abort(
        self, request: web.Request, response: web.StreamResponse, exc: Exception, message_id: str | None
    ) -> web.StreamResponse:
        """Cut the connection of a download that cannot be finished, its status already sent: the only honest
        signal left. Counted and logged as the broker's failure (status class 5xx), never as the client's."""
        if isinstance(exc, ChunkCorrupted):
            reason = "corrupt"
            self._metrics.chunks_corrupt.inc()
        elif isinstance(exc, NotGzip):
            # A chunk stored as gzip before uploads were checked (integrity.GzipCheck) that is not gzip.
            reason = "not_gzip"
        elif isinstance(exc, BlobNotFound):
            reason = "missing"  # a row that points at no bytes: a fault of ours, no outage
        else:
            reason = "blob_store"
        self._metrics.downloads_aborted.labels(reason).inc()
        request[DOWNLOAD_ABORTED] = reason
        where = {"action": "download_aborted", "reason": reason, "message_id": message_id}
        if isinstance(exc, BlobError):
            # The blob store failed past its retries (broker/blobs/s3.py resumes a broken stream), or has no such
            # blob: one line says it.
            log.error("download aborted", extra={**where, "cause": str(exc)})
        else:
            log.exception("download aborted", extra=where)
        response.force_close()
        if request.transport is not None:
            request.transport.abort()
        return response

    async def _each_verified(self, chunks: Sequence[Chunk]) -> AsyncIterator[bytes]:
        for chunk in chunks:
            async for piece in verified(self._stored(chunk), chunk):
                yield piece

    async def _send_file(
        self, request: web.Request, response: web.StreamResponse, chunk: Chunk, coding: Coding
    ) -> bool:
        """Send the chunk zero-copy where it can go so; False, with nothing sent, where the caller must stream.

        A coded body passes through zlib, an inline chunk is already in memory, an empty one has nothing to
        send, and an event loop without sendfile (uvloop) or a store without local files (S3) cannot.
        """
        if coding is not Coding.AS_STORED or chunk.data is not None or not chunk.size:
            return False
        loop = asyncio.get_running_loop()
        if type(loop).sendfile is asyncio.AbstractEventLoop.sendfile:
            return False  # the abstract method only raises NotImplementedError
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        handle = await self._blobs.open_file(chunk.blob_key)
        if handle is None:
            return False
        with handle:
            await _send_checked(loop, transport, response, handle, chunk)
        self._metrics.bytes_sent.inc(chunk.size)
        return True

    async def _stream(self, outlet: _Outlet, chunk: Chunk, coding: Coding) -> None:
        await self._pump(outlet, verified(self._stored(chunk), chunk), coding)

    async def _pump(self, outlet: _Outlet, pieces: AsyncIterator[bytes], coding: Coding) -> None:
        """Read, code and send stored bytes a piece (a coding step) at a time, reserving the memory budget only
        while a piece is read, coded and handed to the connection. The wait for the client to take it, and the
        wait between pieces, hold none: a client that reads slowly or not at all holds back no other transfer,
        and under load a download waits for budget with its socket idle instead of growing memory.

        What a stalled client leaves behind is outside the budget: the part of one piece its connection could not
        yet send (and, coding, what is left of the stored piece being coded). That is bounded per connection, the
        connections by MESH_MAX_CONNECTIONS, and the stall by the idle timeout (broker/pacing.py)."""
        if coding is Coding.AS_STORED:
            while True:
                async with self._budget.reserve(PIECE):
                    piece = await anext(pieces, None)
                    if piece is None:
                        return
                    await self._write(outlet, piece)
                    del piece
                await outlet.drained()
        codec: Inflater | Deflater = Deflater(PIECE, GZIP_LEVEL) if coding is Coding.GZIP else Inflater(PIECE)
        loop = asyncio.get_running_loop()
        inline = False
        while True:
            async with self._budget.reserve(CODED_STEP):
                if not codec.more:
                    piece = await anext(pieces, None)
                    if piece is None:
                        # The encoder's last output is what deflate held back (at most its pending buffer) and the
                        # trailer; the decoder's is nothing, but it fails a stream cut short.
                        await self._write(outlet, codec.finish())
                        return
                    inline = len(piece) <= INLINE_CODING
                    codec.feed(piece)
                    del piece  # the codec holds what is left of it
                if codec.more:
                    out = codec.step() if inline else await loop.run_in_executor(None, codec.step)
                    inline = False
                    await self._write(outlet, out)
                    del out
            await outlet.drained()

    async def _write(self, outlet: _Outlet, data: bytes) -> None:
        if data:
            await outlet.put(data)
            self._metrics.bytes_sent.inc(len(data))

    def _stored(self, chunk: Chunk) -> AsyncIterator[bytes]:
        """The chunk's bytes as stored, not yet checked: from its row (a small chunk) or from its blob."""
        if chunk.data is not None:
            return _once(chunk.data)
        return self._blobs.get(chunk.blob_key, piece_size=PIECE)


class _Outlet:
    """A response's body as two steps: hand bytes to the connection, then wait for its client to take them. aiohttp's
    response.write does both at once, and a transfer must hold its budget for the first only."""

    def __init__(self, request: web.Request, response: web.StreamResponse):
        self._response = response
        # The response's own writer (aiohttp gives the request's to the response it prepares).
        writer = request.writer
        self._writer = writer if isinstance(writer, StreamWriter) else None

    async def put(self, data: bytes) -> None:
        """Queue data on the connection without waiting for the client to take it."""
        if self._writer is None:
            await self._response.write(data)  # a writer of another kind: both steps in one
        else:
            await self._writer.write(data, drain=False)

    async def drained(self) -> None:
        """Wait until the connection has room again (at once if it has): the client has taken what was queued."""
        if self._writer is not None:
            await self._writer.drain()


async def _send_checked(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    response: web.StreamResponse,
    handle: BinaryIO,
    chunk: Chunk,
) -> None:
    """Send an open file with the kernel's sendfile, all but its last byte; the last byte goes only once a
    check on a worker thread, run alongside, has found the file's size and SHA-256 intact."""
    check = _check_alongside(loop, handle, chunk)
    if chunk.size > 1:
        await loop.sendfile(transport, handle, 0, chunk.size - 1)
    if not await check:
        raise ChunkCorrupted(f"{chunk.message_id} chunk {chunk.number}")
    await response.write(os.pread(handle.fileno(), 1, chunk.size - 1))


def _check_alongside(loop: asyncio.AbstractEventLoop, handle: BinaryIO, chunk: Chunk) -> asyncio.Future[bool]:
    """Start checking an open file against its chunk's record on a worker thread.

    The thread reads a duplicate of the file's descriptor, and closes it itself: should the send fail and the
    handle be closed while the check still runs, the thread goes on reading the same file, never whatever file
    the operating system gives the freed number next.
    """
    fd = os.dup(handle.fileno())
    try:
        return loop.run_in_executor(None, _matches_then_close, fd, chunk)
    except BaseException:
        os.close(fd)
        raise


def _matches_then_close(fd: int, chunk: Chunk) -> bool:
    try:
        return descriptor_matches(fd, chunk)
    finally:
        os.close(fd)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
