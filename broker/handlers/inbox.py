"""Inbox handlers: handshake, list, count, HEAD, chunk download (with gzip negotiation) and acknowledge."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web

from broker import headers, views
from broker.blobs.protocol import BlobError
from broker.errors import ValidationFailed
from broker.handlers.common import caller, chunk_number, int_query, message_id, version
from broker.integrity import ChunkCorrupted, file_matches, verified
from broker.keys import BUDGET, DIRECTORY, MESSAGING, METRICS
from broker.models import Chunk
from broker.services.messaging import INBOX_DEFAULT_PAGE

log = logging.getLogger("broker.download")

#: Bytes read from the blob store per write to the socket; each download holds about this much.
DOWNLOAD_PIECE = 256 * 1024
#: On-the-fly gzip favours speed: the client asked for gzip to save bandwidth, not for the smallest file.
GZIP_LEVEL = 1
GZIP_WBITS = 31  # gzip container


async def handshake(request: web.Request) -> web.Response:
    mailbox = caller(request)
    for required in headers.HANDSHAKE_REQUIRED:
        if request.headers.get(required) is None:
            raise ValidationFailed.missing("header", required.lower())
    await request.app[DIRECTORY].record_handshake(mailbox, request.headers[headers.CLIENT_VERSION])
    return views.handshake(mailbox.mailbox_id, version(request))


async def count(request: web.Request) -> web.Response:
    mailbox = caller(request)
    number = await request.app[MESSAGING].count(mailbox)
    return views.count(number, version(request), internal_id=f"{mailbox.mailbox_id}_{secrets.token_hex(8)}")


async def list_inbox(request: web.Request) -> web.Response:
    mailbox = caller(request)
    api = version(request)
    max_results = int_query(request, "max_results", INBOX_DEFAULT_PAGE)
    workflow_filter = request.query.get("workflow_filter")
    page = await request.app[MESSAGING].inbox(
        mailbox,
        max_results=max_results,
        continue_from=request.query.get("continue_from"),
        workflow_filter=workflow_filter,
        with_count=api == headers.V2,
    )
    # v2 links echo only the non-default arguments, as the live service and the sandbox do.
    args: dict[str, str] = {}
    if max_results != INBOX_DEFAULT_PAGE:
        args["max_results"] = str(max_results)
    if workflow_filter:
        args["workflow_filter"] = workflow_filter
    base = f"/messageexchange/{mailbox.mailbox_id}/inbox"
    self_link = f"{base}?{urlencode(args)}" if args else base
    next_link = None
    if page.continue_from is not None:
        next_link = f"{base}?{urlencode({**args, 'continue_from': page.continue_from})}"
    return views.inbox(page.message_ids, api, links=(self_link, next_link), approx_count=page.approx_count)


async def head(request: web.Request) -> web.Response:
    message = await request.app[MESSAGING].head(caller(request), message_id(request))
    content_type = views.download_content_type(message, version(request))
    return web.Response(headers=views.message_headers(message, 1, gzip_response=False, content_type=content_type))


async def download(request: web.Request) -> web.StreamResponse:
    number = chunk_number(request)
    message, chunk = await request.app[MESSAGING].download(caller(request), message_id(request), number)
    api = version(request)
    stored_gzip = message.content_encoding == "gzip"
    client_gzip = headers.accepts_gzip(request.headers.get("Accept-Encoding"))
    messaging = request.app[MESSAGING]
    blob = verified(messaging.chunk_bytes(chunk, DOWNLOAD_PIECE), chunk)
    length: int | None = None
    if stored_gzip and not client_gzip:
        pieces, gzip_response = _gunzipped(blob), False
    elif not stored_gzip and client_gzip and api == headers.V2 and chunk.size:
        pieces, gzip_response = _gzipped(blob), True
    else:
        pieces, gzip_response, length = blob, stored_gzip, chunk.size

    response = web.StreamResponse(
        status=206 if number < message.total_chunks else 200,
        headers=views.message_headers(
            message,
            number,
            gzip_response=gzip_response,
            content_type=views.download_content_type(message, api),
        ),
    )
    if length is not None:
        response.content_length = length
    metrics = request.app[METRICS]
    started = time.perf_counter()
    await response.prepare(request)
    path = messaging.chunk_path(chunk) if length else None
    try:
        if path is None or not await _sendfile(request, response, path, chunk):
            async with request.app[BUDGET].reserve(DOWNLOAD_PIECE):
                async for piece in pieces:
                    await response.write(piece)
                    metrics.bytes_sent.inc(len(piece))
    except (ChunkCorrupted, BlobError, FileNotFoundError) as exc:
        if isinstance(exc, ChunkCorrupted):
            metrics.chunks_corrupt.inc()
        # Headers are gone already: the only honest signal left is to cut the body short.
        log.exception("download aborted", extra={"action": "download_aborted", "message_id": message.message_id})
        response.force_close()
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    metrics.chunk_download_duration.observe(time.perf_counter() - started)
    return response


async def acknowledge(request: web.Request) -> web.Response:
    target = message_id(request)
    await request.app[MESSAGING].acknowledge(caller(request), target)
    return views.acknowledged(target, version(request))


async def _sendfile(request: web.Request, response: web.StreamResponse, path: Path, chunk: Chunk) -> bool:
    """Send a stored file zero-copy with the kernel's sendfile, all but its last byte; the last byte goes
    only once a check on a worker thread, run alongside, has found the file's size and SHA-256 intact.

    False (nothing sent) where the event loop has no sendfile (uvloop): the caller streams instead.
    """
    loop = asyncio.get_running_loop()
    if type(loop).sendfile is asyncio.AbstractEventLoop.sendfile:
        return False  # the abstract method only raises NotImplementedError
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost")
    with path.open("rb") as handle:
        check = loop.run_in_executor(None, file_matches, path, chunk)
        if chunk.size > 1:
            await loop.sendfile(transport, handle, 0, chunk.size - 1)
        if not await check:
            raise ChunkCorrupted(f"{chunk.message_id} chunk {chunk.number}")
        handle.seek(chunk.size - 1)
        await response.write(handle.read(1))
    request.app[METRICS].bytes_sent.inc(chunk.size)
    return True


def _gzipped(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """gzip a stream for a v2 client that asked for it."""
    codec = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
    return _transcoded(pieces, codec.compress, codec.flush)


def _gunzipped(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Undo the sender's gzip for a client that did not ask for it."""
    codec = zlib.decompressobj(wbits=GZIP_WBITS)
    return _transcoded(pieces, codec.decompress, codec.flush)


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
