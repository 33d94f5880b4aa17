"""A chunk damaged on disk is never delivered as if whole: the download is cut short."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from broker.app import create_app
from broker.keys import METRICS
from broker.settings import Settings
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB2
from tests.support import Mesh


def blob_files(settings: Settings, message_id: str) -> list[Path]:
    return [p for p in Path(settings.blob_dir).rglob("*") if p.is_file() and message_id in str(p)]


def aborted(app: web.Application) -> dict[str, float]:
    """Downloads cut short by reason, and the status class their requests were counted in: the broker's failure."""
    counts: dict[str, float] = {}
    for family in app[METRICS].registry.collect():
        for sample in family.samples:
            if sample.name == "mesh_downloads_aborted_total" and sample.value:
                counts[sample.labels["reason"]] = sample.value
            if sample.name == "mesh_http_request_duration_seconds_count" and "inbox/{message_id}" in str(
                sample.labels["route"]
            ):
                counts[sample.labels["status_class"]] = sample.value
    return counts


def flip_middle_byte(path: Path) -> None:
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))


async def test_corrupted_chunk_aborts_the_download(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    app = create_app(settings)
    client = await aiohttp_client(app)
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
    assert aborted(app) == {"corrupt": 1, "5xx": 1}


async def test_missing_blob_aborts_the_download(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    app = create_app(settings)
    client = await aiohttp_client(app)
    message_id = await Mesh(client, "X26ABC1").send_ok(MB2, b"soon gone" * 10_000)  # past the inline limit
    paths = blob_files(settings, message_id)
    assert paths
    for path in paths:
        path.unlink()
    recipient = Mesh(client, MB2)
    response = await client.get(f"{recipient.base}/inbox/{message_id}", headers=recipient.headers())
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert aborted(app) == {"missing": 1, "5xx": 1}


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
