"""The transfer room (broker/transfer.py) on both of its paths: zero-copy where the event loop has sendfile (the
standard loop), streamed where it has not (uvloop, the production default). Each delivers the bytes whole and
counted, and cuts a damaged or missing blob short."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.app import create_app
from broker.keys import METRICS
from broker.settings import Settings
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB1, MB2, download
from tests.support import Mesh

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: past the inline limit, and several pieces when streamed
IDENTITY = {"Accept-Encoding": "identity"}  # no gzip, so the bytes go as stored: the path zero-copy can take


@dataclass
class SendPath:
    zero_copy: bool
    #: The count of each call to the loop's sendfile.
    sendfile_calls: list[int | None] = field(default_factory=list)


@pytest.fixture(params=["zero-copy", "streamed"])
async def send_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SendPath]:
    """The path a download takes, set on the test's event loop: with sendfile (watched), or none, as uvloop."""
    running = asyncio.get_running_loop()
    watched = SendPath(zero_copy=request.param == "zero-copy")
    if watched.zero_copy:
        real = running.sendfile

        async def spy(transport: Any, file: Any, offset: int = 0, count: int | None = None, **kw: Any) -> int:
            watched.sendfile_calls.append(count)
            return await real(transport, file, offset, count, **kw)

        monkeypatch.setattr(running, "sendfile", spy)
    else:
        # What the transfer looks for: the abstract method, which only raises NotImplementedError.
        monkeypatch.setattr(type(running), "sendfile", asyncio.AbstractEventLoop.sendfile)
    yield watched


@pytest.fixture
def embedded(settings: Settings) -> web.Application:
    """The embedded backends: the file blob store is the one that can send zero-copy."""
    return create_app(settings)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, embedded: web.Application) -> TestClient:
    return await aiohttp_client(embedded)


def sample(app: web.Application, name: str) -> float:
    return app[METRICS].registry.get_sample_value(name) or 0.0


def blob_file(settings: Settings, message_id: str) -> Path:
    (path,) = [p for p in Path(settings.blob_dir).rglob("*") if p.is_file() and message_id in str(p)]
    return path


async def test_a_blob_chunk_arrives_whole_and_counted(
    client: TestClient, embedded: web.Application, send_path: SendPath
) -> None:
    message_id = await Mesh(client, MB1).send_ok(MB2, PAYLOAD)
    response = await download(Mesh(client, MB2), message_id, headers=IDENTITY)
    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(PAYLOAD))
    assert await response.read() == PAYLOAD
    # All but the last byte go by sendfile; the last follows the check.
    assert send_path.sendfile_calls == ([len(PAYLOAD) - 1] if send_path.zero_copy else [])
    assert sample(embedded, "mesh_bytes_sent_total") == len(PAYLOAD)
    assert sample(embedded, "mesh_chunk_download_duration_seconds_count") == 1


async def test_a_damaged_blob_is_cut_short_and_counted(
    client: TestClient, embedded: web.Application, settings: Settings, send_path: SendPath
) -> None:
    message_id = await Mesh(client, MB1).send_ok(MB2, PAYLOAD)
    stored = blob_file(settings, message_id)
    damaged = bytearray(stored.read_bytes())
    damaged[0] ^= 0xFF  # the first byte: on the zero-copy path it has left before the check can tell
    stored.write_bytes(bytes(damaged))

    response = await download(Mesh(client, MB2), message_id, headers=IDENTITY)
    assert response.status == 200  # the headers left before the damage could be seen
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert sample(embedded, "mesh_chunks_corrupt_total") == 1
    assert sample(embedded, "mesh_chunk_download_duration_seconds_count") == 0


async def test_a_missing_blob_is_cut_short(
    client: TestClient, embedded: web.Application, settings: Settings, send_path: SendPath
) -> None:
    message_id = await Mesh(client, MB1).send_ok(MB2, PAYLOAD)
    blob_file(settings, message_id).unlink()

    response = await download(Mesh(client, MB2), message_id, headers=IDENTITY)
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert send_path.sendfile_calls == []
    assert sample(embedded, "mesh_chunks_corrupt_total") == 0
