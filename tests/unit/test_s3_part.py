"""The S3 store's request body (_Part): read by botocore as a seekable file, sent by aiohttp piece by piece, and
never copied whole, so that a part in flight costs its own bytes once (what transfer_buffer_bytes counts on)."""

from __future__ import annotations

import base64
import io
import os
import zlib
from typing import Any

import aiohttp.payload
import botocore.httpchecksum
import botocore.utils
import pytest

from broker.blobs.s3 import SEND_STEP, _Part

PIECES = [os.urandom(size) for size in (1000, 1, 4096, 777, 65536, 3)]
DATA = b"".join(PIECES)
#: Pieces as a fast client's arrive: each at least SEND_STEP, so each goes to the socket as it is.
LARGE = [os.urandom(size) for size in (SEND_STEP, SEND_STEP + 1, 2 * SEND_STEP)]


def test_reads_of_any_size_give_the_bytes_in_order() -> None:
    for step in (1, 7, 1000, 1001, 4096, 70000, len(DATA), len(DATA) + 1):
        part = _Part(PIECES)
        read = []
        while piece := part.read(step):
            assert len(piece) <= step
            read.append(piece)
        assert b"".join(read) == DATA
        assert part.tell() == len(DATA)


def test_read_all_seek_and_tell() -> None:
    part = _Part(PIECES)
    assert part.read() == DATA
    assert part.read() == b""
    assert part.seek(0) == 0
    assert part.read(None) == DATA
    assert part.seek(-3, io.SEEK_END) == len(DATA) - 3
    assert part.read() == PIECES[-1]
    assert part.seek(1000) == 1000
    assert part.seek(2, io.SEEK_CUR) == 1002
    assert part.read(2) == DATA[1002:1004]
    assert part.read(0) == b""
    part.seek(len(DATA) + 10)
    assert part.read(5) == b""
    with pytest.raises(ValueError):
        part.seek(-1)


def test_a_whole_piece_is_read_without_a_copy() -> None:
    part = _Part(PIECES)
    assert part.read(1000) is PIECES[0]
    assert part.read(1) is PIECES[1]


def test_an_empty_body() -> None:
    part = _Part([])
    assert part.size == 0
    assert part.read() == b""
    assert botocore.utils.determine_content_length(part) == 0


async def test_iteration_yields_large_pieces_themselves_from_the_position_and_again_after_a_rewind() -> None:
    part = _Part(LARGE)
    sent = [piece async for piece in part]
    assert all(piece is original for piece, original in zip(sent, LARGE, strict=True))
    # A retry: botocore rewinds the body and aiohttp iterates it afresh; the same bytes go again.
    part.seek(0)
    assert b"".join([piece async for piece in part]) == b"".join(LARGE)
    part.seek(1500)
    assert b"".join([piece async for piece in part]) == b"".join(LARGE)[1500:]


async def test_small_pieces_are_joined_up_to_a_send_step() -> None:
    tiny = [os.urandom(1460) for _ in range(1000)]
    sent = [piece async for piece in _Part(tiny)]
    assert b"".join(sent) == b"".join(tiny)
    assert len(sent) == 6
    assert all(SEND_STEP <= len(piece) < SEND_STEP + 1460 for piece in sent[:-1])
    assert b"".join([piece async for piece in _Part(PIECES)]) == DATA


def test_botocore_sees_a_seekable_file_of_the_right_length_and_crc32() -> None:
    part = _Part(PIECES)
    assert botocore.utils.determine_content_length(part) == len(DATA)
    assert part.tell() == 0
    digest = botocore.httpchecksum.Crc32Checksum().handle(part)
    assert digest == base64.b64encode(zlib.crc32(DATA).to_bytes(4, "big")).decode()
    assert part.tell() == 0  # botocore seeks back for the send that follows


class RecordingWriter:
    """Stands in for aiohttp's StreamWriter: keeps every buffer the payload hands it."""

    def __init__(self) -> None:
        self.written: list[Any] = []

    async def write(self, chunk: Any) -> None:
        self.written.append(chunk)


async def test_aiohttp_streams_the_pieces_without_copying_the_part() -> None:
    """aiohttp sends a BytesIO body after BytesIO.getbuffer(), which copies it whole: a part in flight would be held
    twice. A _Part must reach aiohttp as an async iterable whose pieces are written as they are."""
    part = _Part(LARGE)
    payload = aiohttp.payload.PAYLOAD_REGISTRY.get(part)
    assert isinstance(payload, aiohttp.payload.AsyncIterablePayload)
    assert not isinstance(payload, aiohttp.payload.IOBasePayload)

    writer = RecordingWriter()
    await payload.write(writer)  # type: ignore[arg-type]

    assert all(chunk is piece for chunk, piece in zip(writer.written, LARGE, strict=True))
