"""A chunk's 202 means its bytes are on stable storage: with write-back overlapping the upload (embedded file store),
the blob's file and its folder are still fsynced before the answer leaves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.app import create_app
from broker.blobs import writeback
from broker.settings import Settings
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB2, download, send_chunk, start_chunked
from tests.support import Mesh


async def test_a_large_chunk_is_fsynced_before_its_202(
    aiohttp_client: AiohttpClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: set[int] = set()  # inode numbers of everything fsynced so far
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.add(os.fstat(fd).st_ino)

    monkeypatch.setattr(os, "fsync", fsync)
    client = await aiohttp_client(create_app(settings))
    sender, recipient = Mesh(client, "X26ABC1"), Mesh(client, MB2)
    message_id = await start_chunked(sender, MB2, b"first chunk", 2)
    data = os.urandom(2 * writeback.WINDOW + 4321)  # several write-back windows and a ragged end

    response = await send_chunk(sender, message_id, 2, 2, data)

    assert response.status == 202, await response.text()
    synced_at_202 = set(synced)
    files: list[Path] = [p for p in settings.blob_dir.rglob("*") if p.is_file()]
    assert len(files) == 1
    assert files[0].stat().st_ino in synced_at_202
    assert files[0].parent.stat().st_ino in synced_at_202
    chunk = await download(recipient, message_id, 2)
    assert chunk.status == 200
    assert await chunk.read() == data
