"""What only the file blob store promises: bytes land at the key's own path, with no temp files left over; that
file is handed out for zero-copy sends; and the operating system's errors never leave the store raw."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.blobs.filesystem import WRITE_BUFFER, FilesystemBlobStore
from broker.blobs.protocol import BlobError, BlobNotFound


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("size", [0, 1024, WRITE_BUFFER - 1, WRITE_BUFFER, 3 * WRITE_BUFFER + 5])
async def test_a_blob_is_written_in_place_and_nothing_else_is_left(tmp_path: Path, size: int) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    await store.open()
    try:
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        assert await store.put("20261125/20261125000000000001_ABCDEF.1.ab12", pieces(data[:700], data[700:])) == size
        assert files_under(tmp_path / "blobs") == ["20261125/20261125000000000001_ABCDEF.1.ab12"]
        assert (tmp_path / "blobs" / "20261125" / "20261125000000000001_ABCDEF.1.ab12").read_bytes() == data
    finally:
        await store.close()


async def test_a_failed_put_leaves_no_file(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    await store.open()

    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * (2 * WRITE_BUFFER)
        raise ConnectionResetError("client went away")

    try:
        with pytest.raises(ConnectionResetError):
            await store.put("day/m.1.ab", failing())
        assert files_under(tmp_path / "blobs") == []
    finally:
        await store.close()


async def test_open_file_hands_out_the_blob_file_itself(tmp_path: Path) -> None:
    """The zero-copy capability: an open handle on the blob's own file, for the kernel to sendfile from."""
    store = FilesystemBlobStore(tmp_path / "blobs")
    await store.open()
    try:
        await store.put("day/m.1.ab", pieces(b"zero", b"-copy"))
        handle = await store.open_file("day/m.1.ab")
        assert handle is not None
        with handle:
            assert os.fstat(handle.fileno()).st_ino == os.stat(tmp_path / "blobs" / "day" / "m.1.ab").st_ino
            assert handle.read() == b"zero-copy"
    finally:
        await store.close()


async def test_a_file_gone_behind_the_stores_back_is_blob_not_found(tmp_path: Path) -> None:
    """The store translates its own errors: callers see BlobNotFound, never a raw FileNotFoundError."""
    store = FilesystemBlobStore(tmp_path / "blobs")
    await store.open()
    try:
        await store.put("day/m.1.ab", pieces(b"soon gone"))
        (tmp_path / "blobs" / "day" / "m.1.ab").unlink()
        with pytest.raises(BlobNotFound):
            await store.open_file("day/m.1.ab")
        with pytest.raises(BlobNotFound):
            await anext(store.get("day/m.1.ab"))
        with pytest.raises(BlobNotFound):
            await store.size("day/m.1.ab")
    finally:
        await store.close()


async def test_other_file_errors_are_blob_errors(tmp_path: Path) -> None:
    """A key that names a folder fails in the operating system (IsADirectoryError); callers see a BlobError."""
    store = FilesystemBlobStore(tmp_path / "blobs")
    await store.open()
    try:
        await store.put("day/m.1.ab", pieces(b"x"))
        with pytest.raises(BlobError) as raised:
            await store.open_file("day")
        assert not isinstance(raised.value, BlobNotFound)
        with pytest.raises(BlobError):
            await anext(store.get("day"))
    finally:
        await store.close()
