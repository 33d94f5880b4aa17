"""The metrics wrapper hides nothing of the store it wraps: zero-copy and translated errors pass straight through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.blobs.filesystem import FilesystemBlobStore
from broker.blobs.metered import MeteredBlobStore
from broker.blobs.protocol import BlobNotFound
from broker.metrics import Metrics


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.fixture
async def metered(tmp_path: Path) -> AsyncIterator[MeteredBlobStore]:
    blobs = MeteredBlobStore(FilesystemBlobStore(tmp_path / "blobs"), Metrics(), backend="FilesystemBlobStore")
    await blobs.open()
    yield blobs
    await blobs.close()


async def test_open_file_passes_the_inner_stores_file_through(metered: MeteredBlobStore) -> None:
    await metered.put("day/m.1.ab", pieces(b"through ", b"the wrapper"))
    handle = await metered.open_file("day/m.1.ab")
    assert handle is not None
    with handle:
        assert handle.read() == b"through the wrapper"


async def test_open_file_of_a_missing_blob_is_blob_not_found(metered: MeteredBlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await metered.open_file("day/never.1.ab")
