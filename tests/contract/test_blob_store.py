"""The BlobStore contract (broker/blobs/protocol.py), run against every backend in conftest.BLOBS."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta

import pytest

from broker.blobs.protocol import BlobError, BlobNotFound, BlobStore

MIB = 1024 * 1024


async def stream(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        await asyncio.sleep(0)
        yield piece


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


async def read(blobs: BlobStore, key: str, piece_size: int = 256 * 1024) -> bytes:
    return b"".join([piece async for piece in blobs.get(key, piece_size=piece_size)])


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    ("data", "piece"),
    [(b"", 1), (b"hello, mesh", 3), (payload(3 * MIB + 17), 64 * 1024 + 3)],
    ids=["empty", "small", "multi-mib"],
)
async def test_put_then_get_round_trips(blobs: BlobStore, data: bytes, piece: int) -> None:
    key = "20250304/20250304050607000001_000001/1.abcd"
    assert await blobs.put(key, stream(split(data, piece))) == len(data)
    assert await read(blobs, key) == data
    assert await blobs.size(key) == len(data)


async def test_get_yields_pieces_of_at_most_piece_size(blobs: BlobStore) -> None:
    data = payload(2 * MIB + 5)
    await blobs.put("k", stream(split(data, 1000)))
    pieces = [p async for p in blobs.get("k", piece_size=100_000)]
    assert all(0 < len(p) <= 100_000 for p in pieces)
    assert b"".join(pieces) == data


async def test_put_accepts_one_big_piece(blobs: BlobStore) -> None:
    data = payload(MIB + 1, seed=2)
    assert await blobs.put("k", stream([data])) == len(data)
    assert await read(blobs, "k", piece_size=4096) == data


async def test_put_replaces_an_existing_blob(blobs: BlobStore) -> None:
    await blobs.put("k", stream([b"a much longer first version"]))
    assert await blobs.put("k", stream([b"v2"])) == 2
    assert await read(blobs, "k") == b"v2"
    assert await blobs.size("k") == 2


@pytest.mark.parametrize("after", [0, 1, 40], ids=["before-any-piece", "after-one", "after-many"])
async def test_a_failing_stream_leaves_nothing_and_propagates(blobs: BlobStore, after: int) -> None:
    error = Boom("client went away")

    async def failing() -> AsyncIterator[bytes]:
        for _ in range(after):
            yield payload(64 * 1024)
        raise error

    with pytest.raises(Boom) as raised:
        await blobs.put("partial", failing())
    assert raised.value is error
    with pytest.raises(BlobNotFound):
        await read(blobs, "partial")
    with pytest.raises(BlobNotFound):
        await blobs.size("partial")
    # The key is still usable afterwards.
    await blobs.put("partial", stream([b"ok"]))
    assert await read(blobs, "partial") == b"ok"


async def test_missing_keys_raise_blob_not_found(blobs: BlobStore) -> None:
    assert issubclass(BlobNotFound, BlobError)
    with pytest.raises(BlobNotFound):
        await read(blobs, "nope")
    with pytest.raises(BlobNotFound):
        await read(blobs, "no/such/folder/blob")
    with pytest.raises(BlobNotFound):
        await blobs.size("nope")


async def test_open_file_is_the_blob_or_none(blobs: BlobStore) -> None:
    """Zero-copy is a capability: a store hands out a local file holding exactly the blob, or None (S3)."""
    data = payload(MIB + 3, seed=3)
    await blobs.put("day/m/1.ab", stream(split(data, 64 * 1024)))
    handle = await blobs.open_file("day/m/1.ab")
    if handle is None:
        return
    with handle:
        assert handle.fileno() >= 0  # a real descriptor, for the kernel's sendfile
        assert handle.read() == data


async def test_open_file_of_a_missing_key_is_blob_not_found_or_none(blobs: BlobStore) -> None:
    """A missing blob is BlobNotFound here too, never the operating system's FileNotFoundError."""
    for key in ("nope", "no/such/folder/blob"):
        try:
            handle = await blobs.open_file(key)
        except BlobNotFound:
            continue
        assert handle is None


async def test_get_is_lazy_until_first_iteration(blobs: BlobStore) -> None:
    pieces = blobs.get("nope")
    with pytest.raises(BlobNotFound):
        await pieces.__anext__()


async def test_delete_removes_and_is_idempotent(blobs: BlobStore) -> None:
    await blobs.put("a/b/c", stream([b"x"]))
    await blobs.put("a/b/d", stream([b"y"]))
    await blobs.delete("a/b/c")
    with pytest.raises(BlobNotFound):
        await blobs.size("a/b/c")
    await blobs.delete("a/b/c")
    await blobs.delete("never/existed")
    assert await read(blobs, "a/b/d") == b"y"


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/abs", "/etc/passwd", ""])
async def test_invalid_keys_raise_blob_error(blobs: BlobStore, key: str) -> None:
    with pytest.raises(BlobError):
        await blobs.put(key, stream([b"x"]))
    with pytest.raises(BlobError):
        await read(blobs, key)
    with pytest.raises(BlobError):
        await blobs.size(key)
    with pytest.raises(BlobError):
        await blobs.delete(key)
    with pytest.raises(BlobError):
        await blobs.open_file(key)


async def test_concurrent_puts_of_different_keys(blobs: BlobStore) -> None:
    datas = {f"day/msg{n}/1.{n:04x}": payload(50_000 + n * 7919, seed=n) for n in range(16)}
    sizes = await asyncio.gather(*(blobs.put(k, stream(split(d, 4096))) for k, d in datas.items()))
    assert sizes == [len(d) for d in datas.values()]
    contents = await asyncio.gather(*(read(blobs, k, piece_size=10_000) for k in datas))
    assert contents == list(datas.values())


async def test_transfer_buffer_is_declared(blobs: BlobStore) -> None:
    assert blobs.transfer_buffer_bytes > 0


async def scanned(blobs: BlobStore, page_size: int = 1000) -> dict[str, datetime]:
    found: dict[str, datetime] = {}
    async for page in blobs.scan(page_size=page_size):
        assert 0 < len(page) <= page_size
        for blob in page:
            assert blob.key not in found
            found[blob.key] = blob.modified
    return found


async def test_scan_lists_every_key_with_its_time_in_pages(blobs: BlobStore) -> None:
    assert await scanned(blobs) == {}
    before = datetime.now(UTC) - timedelta(seconds=5)
    keys = [f"20250304/2025030405060700000{n}_00000{n}/1.ab" for n in range(5)] + ["top"]
    for key in keys:
        await blobs.put(key, stream([b"x"]))
    found = await scanned(blobs, page_size=2)
    assert sorted(found) == sorted(keys)
    after = datetime.now(UTC) + timedelta(seconds=5)
    assert all(before <= modified <= after for modified in found.values())
    assert all(modified.utcoffset() == timedelta(0) for modified in found.values())


async def test_scan_leaves_out_deleted_keys(blobs: BlobStore) -> None:
    await blobs.put("a/1", stream([b"x"]))
    await blobs.put("a/2", stream([b"y"]))
    await blobs.delete("a/1")
    assert list(await scanned(blobs)) == ["a/2"]
