"""Chunk integrity: the upload meter and the verifying download stream."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.errors import BrokerError, ErrorCode
from broker.integrity import ChunkCorrupted, GzipCheck, Meter, check_whole, descriptor_matches, verified
from broker.models import Chunk

DATA = b"0123456789" * 100


async def pieces(data: bytes, size: int = 64) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [piece async for piece in stream]


def record(data: bytes, *, sha256: str | None = None) -> Chunk:
    return Chunk("M1", 2, "k", len(data), hashlib.sha256(data).hexdigest() if sha256 is None else sha256)


async def test_meter_counts_and_hashes_what_passes() -> None:
    meter = Meter(pieces(DATA), limit=len(DATA))
    assert b"".join(await collect(meter.__aiter__())) == DATA
    assert (meter.size, meter.sha256) == (len(DATA), hashlib.sha256(DATA).hexdigest())


async def test_meter_fails_with_413_past_the_limit() -> None:
    meter = Meter(pieces(DATA), limit=len(DATA) - 1, message_id="M1")
    with pytest.raises(BrokerError) as caught:
        await collect(meter.__aiter__())
    assert caught.value.code is ErrorCode.MESSAGE_TOO_LARGE
    assert caught.value.message_id == "M1"


async def test_intact_chunk_streams_whole() -> None:
    assert b"".join(await collect(verified(pieces(DATA), record(DATA)))) == DATA


async def test_empty_chunk_verifies() -> None:
    assert await collect(verified(pieces(b""), record(b""))) == []


async def test_unknown_digest_checks_size_only() -> None:
    assert b"".join(await collect(verified(pieces(DATA), record(DATA, sha256="")))) == DATA


@pytest.mark.parametrize(
    "stored",
    [DATA[:-1] + b"X", DATA[:-10], DATA + b"extra"],
    ids=["flipped byte", "truncated", "grown"],
)
async def test_damaged_chunk_never_yields_its_last_piece(stored: bytes) -> None:
    received: list[bytes] = []
    with pytest.raises(ChunkCorrupted):
        async for piece in verified(pieces(stored), record(DATA)):
            received.append(piece)
    assert len(b"".join(received)) < len(DATA)  # the client is never handed the whole chunk


def file_matches(path: Path, chunk: Chunk) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return descriptor_matches(fd, chunk)
    finally:
        os.close(fd)


def test_descriptor_matches_checks_size_and_digest(tmp_path: Path) -> None:
    stored = tmp_path / "chunk"
    stored.write_bytes(DATA)
    assert file_matches(stored, record(DATA))
    assert file_matches(stored, record(DATA, sha256=""))
    stored.write_bytes(DATA[:-1] + b"X")
    assert not file_matches(stored, record(DATA))
    stored.write_bytes(DATA[:-1])
    assert not file_matches(stored, record(DATA, sha256=""))


async def test_verified_holds_back_only_the_final_piece() -> None:
    """Each piece but the last leaves as soon as it is read, so a download holds one piece, not two."""
    read = 0

    async def counted(data: bytes) -> AsyncIterator[bytes]:
        nonlocal read
        async for piece in pieces(data):
            read += 1
            yield piece

    seen = [(piece, read) async for piece in verified(counted(DATA), record(DATA))]
    total = len(seen)
    assert [reads for _, reads in seen[:-1]] == list(range(1, total))  # piece i left when i pieces were read
    assert b"".join(piece for piece, _ in seen) == DATA


async def test_gzip_check_passes_gzip_through_and_counts_what_it_decodes() -> None:
    body = gzip.compress(DATA) + gzip.compress(DATA)
    check = GzipCheck(pieces(body, 7))
    assert b"".join(await collect(check.__aiter__())) == body
    assert check.decoded == 2 * len(DATA)


@pytest.mark.parametrize(
    "body",
    [DATA, gzip.compress(DATA)[:-1], gzip.compress(DATA) + b"x", gzip.compress(DATA)[:5]],
    ids=["not gzip", "cut short", "bytes after it", "header only"],
)
async def test_gzip_check_refuses_what_is_not_whole_gzip(body: bytes) -> None:
    with pytest.raises(BrokerError) as caught:
        await collect(GzipCheck(pieces(body), message_id="M1").__aiter__())
    assert (caught.value.code, caught.value.message_id) == (ErrorCode.INVALID_GZIP, "M1")


async def test_gzip_check_of_nothing_passes_for_the_caller_to_refuse() -> None:
    assert await collect(GzipCheck(pieces(b"")).__aiter__()) == []


def test_check_whole_passes_bytes_that_match_their_record() -> None:
    check_whole(DATA, record(DATA))
    check_whole(DATA, record(DATA, sha256=""))  # a record without a SHA-256 is checked by size alone


@pytest.mark.parametrize("stored", [DATA[:-1], DATA + b"!", DATA[:-1] + b"X"])
def test_check_whole_refuses_bytes_that_do_not(stored: bytes) -> None:
    with pytest.raises(ChunkCorrupted):
        check_whole(stored, record(DATA))
