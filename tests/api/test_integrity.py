"""A chunk damaged on disk is never delivered as if whole: the download is cut short."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import pytest

from broker.app import create_app
from broker.settings import Settings
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB2
from tests.support import Mesh


def blob_files(settings: Settings, message_id: str) -> list[Path]:
    return [p for p in Path(settings.blob_dir).rglob("*") if p.is_file() and message_id in str(p)]


def flip_middle_byte(path: Path) -> None:
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))


async def test_corrupted_chunk_aborts_the_download(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings))
    payload = bytes(range(256)) * 4096  # 1 MiB: several pieces on the way out
    message_id = await Mesh(client, "X26ABC1").send_ok(MB2, payload)
    (stored,) = blob_files(settings, message_id)
    flip_middle_byte(stored)

    recipient = Mesh(client, MB2)
    headers = recipient.headers({"Accept-Encoding": "identity"})
    response = await client.get(f"{recipient.base}/inbox/{message_id}", headers=headers)
    assert response.status == 200  # the headers left before the damage could be seen
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_missing_blob_aborts_the_download(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings))
    message_id = await Mesh(client, "X26ABC1").send_ok(MB2, b"soon gone" * 10_000)  # past the inline limit
    paths = blob_files(settings, message_id)
    assert paths
    for path in paths:
        path.unlink()
    recipient = Mesh(client, MB2)
    response = await client.get(f"{recipient.base}/inbox/{message_id}", headers=recipient.headers())
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_damaged_inline_chunk_aborts_the_download(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    """A small chunk lives in its row, and is checked against its SHA-256 on the way out all the same."""
    client = await aiohttp_client(create_app(settings))
    message_id = await Mesh(client, "X26ABC1").send_ok(MB2, b"small and inline")
    assert blob_files(settings, message_id) == []
    with sqlite3.connect(settings.database_path) as db:
        db.execute("UPDATE message_chunks SET data = ? WHERE message_id = ?", (b"small and INLINE", message_id))

    recipient = Mesh(client, MB2)
    response = await client.get(f"{recipient.base}/inbox/{message_id}", headers=recipient.headers())
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
