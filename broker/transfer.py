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
import zlib
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

from aiohttp import web

from broker.blobs.protocol import BlobError, BlobStore
from broker.budget import MemoryBudget
from broker.integrity import ChunkCorrupted, descriptor_matches, verified
from broker.metrics import Metrics
from broker.models import Chunk

log = logging.getLogger("broker.download")

#: Bytes read from the blob store per write to the socket; each streamed download holds about this much.
PIECE = 256 * 1024
#: On-the-fly gzip favours speed: the client asked for gzip to save bandwidth, not for the smallest file.
GZIP_LEVEL = 1
GZIP_WBITS = 31  # gzip container


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
        if coding is Coding.AS_STORED:
            response.content_length = chunk.size  # only the bytes as stored have a length known up front
        started = time.perf_counter()
        await response.prepare(request)
        try:
            if not await self._send_file(request, response, chunk, coding):
                await self._stream(response, chunk, coding)
        except (ChunkCorrupted, BlobError) as exc:
            if isinstance(exc, ChunkCorrupted):
                self._metrics.chunks_corrupt.inc()
            log.exception("download aborted", extra={"action": "download_aborted", "message_id": chunk.message_id})
            response.force_close()
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        self._metrics.chunk_download_duration.observe(time.perf_counter() - started)
        return response

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

    async def _stream(self, response: web.StreamResponse, chunk: Chunk, coding: Coding) -> None:
        # The budget is taken before the first read, so under load a download waits here with its socket idle
        # instead of growing memory.
        async with self._budget.reserve(PIECE):
            async for piece in _coded(verified(self._stored(chunk), chunk), coding):
                await response.write(piece)
                self._metrics.bytes_sent.inc(len(piece))

    def _stored(self, chunk: Chunk) -> AsyncIterator[bytes]:
        """The chunk's bytes as stored, not yet checked: from its row (a small chunk) or from its blob."""
        if chunk.data is not None:
            return _once(chunk.data)
        return self._blobs.get(chunk.blob_key, piece_size=PIECE)


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


def _coded(pieces: AsyncIterator[bytes], coding: Coding) -> AsyncIterator[bytes]:
    if coding is Coding.GZIP:
        encoder = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
        return _transcoded(pieces, encoder.compress, encoder.flush)
    if coding is Coding.GUNZIP:
        decoder = zlib.decompressobj(wbits=GZIP_WBITS)
        return _transcoded(pieces, decoder.decompress, decoder.flush)
    return pieces


async def _transcoded(
    pieces: AsyncIterator[bytes], feed: Callable[[bytes], bytes], flush: Callable[[], bytes]
) -> AsyncIterator[bytes]:
    """Run a zlib codec over a stream off the event loop, piece by piece (zlib releases the GIL)."""
    loop = asyncio.get_running_loop()
    async for piece in pieces:
        out = await loop.run_in_executor(None, feed, piece)
        if out:
            yield out
    tail = flush()
    if tail:
        yield tail


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
