"""What only the file blob store promises: bytes land at the key's own path, with no temp files left over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.blobs.filesystem import WRITE_BUFFER, FilesystemBlobStore


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
