"""Chunk integrity: size and SHA-256 measured while bytes stream in, and checked while they stream out."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from broker.errors import BrokerError, ErrorCode
from broker.gzipstream import Inflater, NotGzip
from broker.models import Chunk

log = logging.getLogger("broker.integrity")


class ChunkCorrupted(Exception):
    """Stored bytes no longer match the size or SHA-256 recorded when the chunk was accepted."""


class Meter:
    """Passes a request body through, counting and hashing it, failing with 413 past `limit` bytes."""

    def __init__(self, body: AsyncIterable[bytes], limit: int, message_id: str | None = None):
        self._body = body
        self._limit = limit
        self._message_id = message_id
        self._hash = hashlib.sha256()
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._body:
            self.size += len(piece)
            if self.size > self._limit:
                raise BrokerError(ErrorCode.MESSAGE_TOO_LARGE, message_id=self._message_id)
            self._hash.update(piece)
            yield piece


#: Decoded bytes one gzip check step may produce (and drop) before it yields to the event loop or a worker thread.
GZIP_CHECK_STEP = 256 * 1024


class GzipCheck:
    """Passes a body declared `Content-Encoding: gzip` through, checking as it streams that it is whole gzip.

    A piece leaves only once it has decoded cleanly, and the end of the body must be the end of a gzip member,
    else 417 (InvalidGzip) and the caller stores nothing. The decoded bytes are counted (`decoded`) and dropped
    a step at a time, so a small body that inflates enormously costs time, never memory. The first step of each
    piece runs on the event loop (most bodies end there); the rest on a worker thread, zlib releasing the GIL,
    so one body that inflates to gigabytes cannot stall every other request.
    """

    def __init__(self, body: AsyncIterable[bytes], message_id: str | None = None):
        self._body = body
        self._message_id = message_id
        self._inflater = Inflater(GZIP_CHECK_STEP)

    @property
    def decoded(self) -> int:
        return self._inflater.decoded

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:
            async for piece in self._body:
                self._inflater.feed(piece)
                self._inflater.step()
                if self._inflater.more:
                    await loop.run_in_executor(None, self._inflater.drain)
                yield piece
            self._inflater.finish()
        except NotGzip:
            raise BrokerError(ErrorCode.INVALID_GZIP, message_id=self._message_id) from None


def descriptor_matches(fd: int, chunk: Chunk, block: int = 1024 * 1024) -> bool:
    """Whether the open file behind fd has the chunk's recorded size and SHA-256 (blocking: run it on a thread).

    It reads with pread, never moving the file's offset, so it can run while the same open file is being sent
    (sendfile's fallback reads from that offset).
    """
    digest = hashlib.sha256()
    seen = 0
    while data := os.pread(fd, block, seen):
        digest.update(data)
        seen += len(data)
    matches = _as_recorded(chunk, seen, digest)
    if not matches:
        _log_corrupt(chunk, seen)
    return matches


def check_whole(data: bytes, chunk: Chunk) -> None:
    """verified() for a chunk's bytes already whole in memory: ChunkCorrupted unless size and SHA-256 match."""
    if not _as_recorded(chunk, len(data), hashlib.sha256(data)):
        _log_corrupt(chunk, len(data))
        raise ChunkCorrupted(f"{chunk.message_id} chunk {chunk.number}")


def _as_recorded(chunk: Chunk, size: int, digest: Any) -> bool:
    """Whether bytes of this size and hashlib SHA-256 are the chunk as recorded when it was accepted (a chunk from
    before digests were kept has none: its size alone is checked)."""
    return size == chunk.size and (not chunk.sha256 or digest.hexdigest() == chunk.sha256)


def _log_corrupt(chunk: Chunk, seen: int) -> None:
    log.error(
        "stored chunk does not match its record",
        extra={
            "action": "chunk_corrupt",
            "message_id": chunk.message_id,
            "chunk_number": chunk.number,
            "blob_key": chunk.blob_key,
            "expected_size": chunk.size,
            "seen_size": seen,
        },
    )


async def verified(pieces: AsyncIterator[bytes], chunk: Chunk) -> AsyncIterator[bytes]:
    """Yield a stored chunk's bytes, holding back the piece that completes the recorded size until the store has
    nothing more and the size and SHA-256 match the record.

    A mismatch raises ChunkCorrupted before that final piece leaves, so a client never receives a damaged chunk as
    if it were whole: the connection is cut short instead. Only the final piece is held back, so a download holds
    one piece at a time (what it reserves from the memory budget), not two.
    """
    digest = hashlib.sha256()
    seen = 0
    final: bytes | None = None
    async for piece in pieces:
        if not piece:
            continue
        digest.update(piece)
        seen += len(piece)
        if final is not None or seen > chunk.size:
            break
        if seen == chunk.size:
            final = piece
            continue
        yield piece
    if not _as_recorded(chunk, seen, digest):
        _log_corrupt(chunk, seen)
        raise ChunkCorrupted(f"{chunk.message_id} chunk {chunk.number}")
    if final is not None:
        yield final
