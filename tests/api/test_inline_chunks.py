"""Small chunks kept in their metadata rows (MESH_INLINE_CHUNK_BYTES): no blob, the same bytes back, on both
backends; larger chunks still stream through the blob store."""

from __future__ import annotations

import gzip

import pytest
from aiohttp import web

from broker.app import create_app
from broker.keys import BLOBS, STORE
from broker.models import Chunk
from broker.settings import MAX_INLINE_CHUNK_BYTES, Settings, SettingsError
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB2, ack, download, send_chunk, start_chunked
from tests.conftest import BACKENDS, production_settings
from tests.support import V1, Mesh

LIMIT = 1024


@pytest.fixture(params=BACKENDS)
async def app(request: pytest.FixtureRequest, settings: Settings) -> web.Application:
    settings = settings.with_(inline_chunk_bytes=LIMIT)
    if request.param == "postgres+s3":
        settings = await production_settings(settings, request)
    return create_app(settings)


async def stored_chunk(app: web.Application, message_id: str, number: int = 1) -> Chunk:
    _, chunk = await app[STORE].get_message_and_chunk(message_id, number)
    assert chunk is not None
    return chunk


async def blob_keys(app: web.Application) -> set[str]:
    return {blob.key async for page in app[BLOBS].scan() for blob in page}


async def test_a_chunk_up_to_the_limit_is_kept_in_its_row(app: web.Application, mb1: Mesh, mb2: Mesh) -> None:
    payload = bytes(range(256)) * (LIMIT // 256)
    message_id = await mb1.send_ok(MB2, payload)
    chunk = await stored_chunk(app, message_id)
    assert (chunk.blob_key, chunk.data, chunk.size) == ("", payload, LIMIT)
    assert await blob_keys(app) == set()

    response = await download(mb2, message_id, headers={"Accept-Encoding": "identity"})
    assert response.status == 200
    assert response.headers["Content-Length"] == str(LIMIT)
    assert await response.read() == payload
    assert (await ack(mb2, message_id)).status == 200


async def test_a_chunk_past_the_limit_goes_to_the_blob_store(app: web.Application, mb1: Mesh, mb2: Mesh) -> None:
    payload = b"b" * (LIMIT + 1)
    message_id = await mb1.send_ok(MB2, payload)
    chunk = await stored_chunk(app, message_id)
    assert chunk.data is None
    assert await blob_keys(app) == {chunk.blob_key}
    assert await (await download(mb2, message_id)).read() == payload


async def test_a_chunked_message_mixes_inline_and_blob_chunks(app: web.Application, mb1: Mesh, mb2: Mesh) -> None:
    parts = [b"1" * (LIMIT * 3), b"two", b"3" * (LIMIT + 7)]
    message_id = await start_chunked(mb1, MB2, parts[0], 3)
    for number, part in enumerate(parts[1:], start=2):
        assert (await send_chunk(mb1, message_id, number, 3, part)).status == 202
    assert [(await stored_chunk(app, message_id, n)).data is None for n in (1, 2, 3)] == [True, False, True]

    received = [await (await download(mb2, message_id, n)).read() for n in (1, 2, 3)]
    assert received == parts


async def test_inline_chunks_are_negotiated_for_gzip_like_any_other(app: web.Application, mb1: Mesh, mb2: Mesh) -> None:
    text = b"a small result " * 20
    plain = await mb1.send_ok(MB2, text)
    response = await download(mb2, plain, headers={"Accept-Encoding": "gzip"})
    assert response.headers.get("Content-Encoding") == "gzip"
    assert await response.read() == text  # aiohttp undoes the gzip

    stored_gzip = await mb1.send_ok(MB2, gzip.compress(text), extra={"Content-Encoding": "gzip"})
    assert (await stored_chunk(app, stored_gzip)).data is not None
    v1 = Mesh(mb2.client, MB2, accept=V1)
    response = await download(v1, stored_gzip, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in response.headers
    assert await response.read() == text


async def test_a_blob_chunk_sent_again_small_leaves_its_old_blob_for_housekeeping(
    app: web.Application, mb1: Mesh
) -> None:
    message_id = await start_chunked(mb1, MB2, b"one", 3)
    assert (await send_chunk(mb1, message_id, 2, 3, b"2" * (LIMIT * 2))).status == 202
    old_key = (await stored_chunk(app, message_id, 2)).blob_key
    assert (await send_chunk(mb1, message_id, 2, 3, b"two")).status == 202

    assert (await stored_chunk(app, message_id, 2)).data == b"two"
    assert await app[STORE].take_orphan_blobs(10) == [old_key]


async def test_inline_off_sends_everything_to_the_blob_store(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    app = create_app(settings.with_(inline_chunk_bytes=0))
    client = await aiohttp_client(app)
    message_id = await Mesh(client, "X26ABC1").send_ok(MB2, b"x")
    chunk = await stored_chunk(app, message_id)
    assert chunk.data is None and chunk.blob_key
    assert await blob_keys(app) == {chunk.blob_key}


@pytest.mark.parametrize("raw", ["-1", str(MAX_INLINE_CHUNK_BYTES + 1)])
def test_the_inline_limit_is_bounded(raw: str) -> None:
    with pytest.raises(SettingsError, match="MESH_INLINE_CHUNK_BYTES"):
        Settings.from_env({"MESH_INLINE_CHUNK_BYTES": raw})


def test_the_inline_limit_is_read_from_the_environment() -> None:
    assert Settings.from_env({"MESH_INLINE_CHUNK_BYTES": "0"}).inline_chunk_bytes == 0
    assert Settings.from_env({}).inline_chunk_bytes == 64 * 1024
