"""Reading a posted form as it streams: small fields within a bound, the file within the page's size limit, and the
rest of a refused upload read and dropped (up to a bound) so that the browser sees the refusal page.

A browser that is answered before it has finished sending shows a network error instead of the answer, so an
oversized upload is read to its end and thrown away, then refused; past MESH_UI_DISCARD_LIMIT_BYTES the
connection is closed instead (where scripting is on, the page checks the size before sending anything).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, web

#: What one read of the request takes at a time.
PIECE = 256 * 1024


class UploadTooLarge(Exception):
    """The file passed the page's size limit while streaming in; nothing of it is kept."""

    def __init__(self, limit: int):
        super().__init__(f"the file is larger than {limit} bytes")
        self.limit = limit


class FieldTooLong(Exception):
    """A text field of the form passed its bound (a form the page did not make)."""


async def read_text(part: BodyPartReader, limit: int) -> str:
    """A small text field, decoded; FieldTooLong past limit bytes."""
    data = bytearray()
    while piece := await part.read_chunk(PIECE):
        data += piece
        if len(data) > limit:
            raise FieldTooLong(part.name or "")
    return data.decode(part.get_charset("utf-8"), errors="replace")


async def limited(part: BodyPartReader, limit: int) -> AsyncIterator[bytes]:
    """The file's bytes as they arrive; UploadTooLarge once more than limit have come (the consumer, the blob
    store, drops what it had written)."""
    size = 0
    while piece := await part.read_chunk(PIECE):
        size += len(piece)
        if size > limit:
            raise UploadTooLarge(limit)
        yield piece


async def discard_rest(request: web.Request, bound: int) -> bool:
    """Read what is left of the request body and drop it; False when more than bound bytes remained (the caller
    then closes the connection behind its answer)."""
    dropped = 0
    while piece := await request.content.read(PIECE):
        dropped += len(piece)
        if dropped > bound:
            return False
    return True
