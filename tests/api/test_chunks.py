"""E3 chunk upload: delivery only when every chunk is stored, idempotent re-upload, and every chunk error."""

from __future__ import annotations

import gzip

import pytest
from aiohttp.test_utils import TestClient

from broker.app import create_app
from broker.settings import Settings
from tests.api.conftest import AiohttpClient
from tests.api.helpers import (
    MB2,
    body_of,
    download,
    head,
    inbox_ids,
    send_chunk,
    start_chunked,
    tracking_status,
    v1_error,
    v2_error,
)
from tests.support import V1, Mesh


async def test_three_chunk_upload_in_order(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"one-", 3)
    assert await inbox_ids(mb2) == []
    assert await tracking_status(mb1, message_id) == "uploading"

    response = await send_chunk(mb1, message_id, 2, 3, b"two-")
    assert response.status == 202
    assert await body_of(response) == {"message_id": message_id}
    assert await inbox_ids(mb2) == []

    assert (await send_chunk(mb1, message_id, 3, 3, b"three")).status == 202
    assert await inbox_ids(mb2) == [message_id]
    assert await tracking_status(mb1, message_id) == "accepted"

    parts = []
    for number, expected_status in ((1, 206), (2, 206), (3, 200)):
        response = await download(mb2, message_id, number)
        assert response.status == expected_status
        assert response.headers["mex-Chunk-Range"] == f"{number}:3"
        assert response.headers["mex-Total-Chunks"] == "3"
        assert response.headers["Content-Type"] == "application/octet-stream"
        parts.append(await response.read())
    assert b"".join(parts) == b"one-two-three"


async def test_chunk_v1_body_has_block_id(mb1_v1: Mesh, mb1: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 2)
    response = await send_chunk(mb1_v1, message_id, 2, 2, b"b")
    assert response.status == 202
    assert await body_of(response) == {"messageID": message_id, "blockID": 2}


async def test_uploading_message_is_gone_for_the_recipient(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 2)
    assert (await head(mb2, message_id)).status == 410
    response = await download(mb2, message_id)
    assert response.status == 410
    assert v2_error(await body_of(response)) == (
        "SEND",
        "Message already accepted",
        "Message no longer available for download",
    )
    assert (await head(mb1, message_id)).status == 200  # the sender may HEAD at any status


async def test_uploading_tracking_v1_is_title_case(mb1: Mesh, mb1_v1: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 2)
    assert await tracking_status(mb1_v1, message_id) == "Uploading"


async def test_out_of_order_upload_waits_for_every_chunk(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"1", 3)
    assert (await send_chunk(mb1, message_id, 3, 3, b"3")).status == 202
    assert await inbox_ids(mb2) == []
    assert await tracking_status(mb1, message_id) == "uploading"
    assert (await send_chunk(mb1, message_id, 2, 3, b"2")).status == 202
    assert await inbox_ids(mb2) == [message_id]
    assert await (await download(mb2, message_id, 2)).read() == b"2"
    assert await (await download(mb2, message_id, 3)).read() == b"3"


async def test_reupload_while_uploading_is_idempotent(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"first", 3)
    assert (await send_chunk(mb1, message_id, 2, 3, b"old")).status == 202
    assert (await send_chunk(mb1, message_id, 2, 3, b"new")).status == 202
    assert await inbox_ids(mb2) == []
    assert (await send_chunk(mb1, message_id, 3, 3, b"last")).status == 202
    assert await inbox_ids(mb2) == [message_id]
    assert await (await download(mb2, message_id, 2)).read() == b"new"
    tracking = await body_of(await mb1_v1_track(mb1, message_id))
    assert tracking["fileSize"] == len(b"first") + len(b"new") + len(b"last")
    assert tracking["chunkCount"] == 3


async def mb1_v1_track(mb1: Mesh, message_id: str) -> object:
    return await mb1.client.get(
        f"{mb1.base}/outbox/tracking", params={"messageID": message_id}, headers=mb1.headers(accept=V1)
    )


async def test_chunk_after_completion_is_423(mb1: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 2)
    assert (await send_chunk(mb1, message_id, 2, 2, b"b")).status == 202
    response = await send_chunk(mb1, message_id, 2, 2, b"again")
    assert response.status == 423
    body = await body_of(response)
    assert body["message_id"] == message_id
    assert v2_error(body)[2] == "Messages has been finalised; no more chunks can be uploaded"


async def test_chunk_to_a_single_part_message_is_423(mb1: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"a")
    assert (await send_chunk(mb1, message_id, 2, 2, b"b")).status == 423


async def test_chunk_number_above_total_is_406(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 2)
    response = await send_chunk(mb1, message_id, 3, 3, b"c")
    assert response.status == 406
    assert (await body_of(response))["message_id"] == message_id
    assert await inbox_ids(mb2) == []


async def test_range_not_matching_path_is_417(mb1: Mesh, mb1_v1: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 3)
    response = await mb1_v1.client.post(
        f"{mb1_v1.base}/outbox/{message_id}/2", data=b"b", headers=mb1_v1.headers({"mex-Chunk-Range": "3:3"})
    )
    assert response.status == 417
    body = await body_of(response)
    assert body["messageID"] == message_id
    assert v1_error(body) == ("SEND", "InvalidHeaderChunks", "Invalid chunk values sent in mex-Chunk-Range header")


@pytest.mark.parametrize("chunk_range", [None, "", "2", "x:3", "4:3"])
async def test_missing_or_malformed_range_is_417(mb1: Mesh, chunk_range: str | None) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 3)
    extra = {} if chunk_range is None else {"mex-Chunk-Range": chunk_range}
    response = await mb1.client.post(f"{mb1.base}/outbox/{message_id}/2", data=b"b", headers=mb1.headers(extra))
    assert response.status == 417
    assert v2_error(await body_of(response))[1] == "InvalidHeaderChunks"


async def test_other_mailbox_uploading_a_chunk_is_403(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 2)
    response = await send_chunk(mb2, message_id, 2, 2, b"b")
    assert response.status == 403
    assert v2_error(await body_of(response))[2] == "Forbidden"
    assert await inbox_ids(mb2) == []


async def test_chunk_for_unknown_message_is_404(mb1: Mesh) -> None:
    response = await send_chunk(mb1, "20240101000000000000_ABCDEF", 2, 2, b"b")
    assert response.status == 404
    assert v2_error(await body_of(response))[2] == "Not Found"


async def test_content_encoding_change_is_417(mb1: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 2)
    response = await send_chunk(mb1, message_id, 2, 2, gzip.compress(b"b"), extra={"Content-Encoding": "gzip"})
    assert response.status == 417
    assert v2_error(await body_of(response)) == ("", "", "cannot change content encoding")


async def test_content_encoding_dropped_is_417(mb1: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, gzip.compress(b"a"), 2, extra={"Content-Encoding": "gzip"})
    response = await send_chunk(mb1, message_id, 2, 2, b"b")
    assert response.status == 417


async def test_unsupported_chunk_encoding_is_422(mb1: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 2)
    response = await send_chunk(mb1, message_id, 2, 2, b"b", extra={"Content-Encoding": "br"})
    assert response.status == 422


async def test_gzip_chunks_download_per_chunk(mb1: Mesh, mb2: Mesh) -> None:
    extra = {"Content-Encoding": "gzip"}
    message_id = await start_chunked(mb1, MB2, gzip.compress(b"alpha "), 2, extra=extra)
    assert (await send_chunk(mb1, message_id, 2, 2, gzip.compress(b"beta"), extra=extra)).status == 202
    one = await download(mb2, message_id, 1, headers={"Accept-Encoding": "identity"})
    two = await download(mb2, message_id, 2, headers={"Accept-Encoding": "identity"})
    assert (one.status, two.status) == (206, 200)
    assert await one.read() + await two.read() == b"alpha beta"


async def test_tiny_chunks(mb1: Mesh, mb2: Mesh) -> None:
    data = b"tiny chunks of a few bytes"
    pieces = [data[i : i + 3] for i in range(0, len(data), 3)]
    message_id = await start_chunked(mb1, MB2, pieces[0], len(pieces))
    for number, piece in enumerate(pieces[1:], start=2):
        assert (await send_chunk(mb1, message_id, number, len(pieces), piece)).status == 202
    received = [await (await download(mb2, message_id, n)).read() for n in range(1, len(pieces) + 1)]
    assert b"".join(received) == data


async def test_empty_chunk_is_417_code_02(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 2)
    response = await send_chunk(mb1, message_id, 2, 2, b"")
    assert response.status == 417
    assert v2_error(await body_of(response))[1] == "02"
    assert await inbox_ids(mb2) == []


async def test_lower_case_message_id_in_chunk_path(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 2)
    assert (await send_chunk(mb1, message_id.lower(), 2, 2, b"b")).status == 202
    assert await inbox_ids(mb2) == [message_id]


@pytest.fixture
async def small(aiohttp_client: AiohttpClient, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings.with_(max_request_bytes=100)))


async def test_oversize_chunk_is_413(small: TestClient) -> None:
    sender = Mesh(small, "X26ABC1")
    message_id = await start_chunked(sender, MB2, b"a" * 100, 2)
    response = await send_chunk(sender, message_id, 2, 2, b"b" * 101)
    assert response.status == 413
    body = await body_of(response)
    assert body["message_id"] == message_id
    assert v2_error(body)[1] == "MessageTooLarge"
    assert await tracking_status(sender, message_id) == "uploading"


async def test_whole_message_over_its_limit_is_413_and_stays_uploading(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings.with_(max_request_bytes=10, max_message_bytes=25)))
    sender, recipient = Mesh(client, "X26ABC1"), Mesh(client, MB2)
    message_id = await start_chunked(sender, MB2, b"0123456789", 3)
    assert (await send_chunk(sender, message_id, 2, 3, b"0123456789")).status == 202
    too_much = await send_chunk(sender, message_id, 3, 3, b"0123456789")
    assert too_much.status == 413
    assert v2_error(await body_of(too_much))[1] == "MessageTooLarge"
    assert await tracking_status(sender, message_id) == "uploading"
    assert (await send_chunk(sender, message_id, 3, 3, b"01234")).status == 202
    assert await inbox_ids(recipient) == [message_id]


async def test_declaring_more_chunks_than_allowed_is_417(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings.with_(max_chunks=3)))
    sender = Mesh(client, "X26ABC1")
    assert (await sender.send(MB2, b"ok", extra={"mex-Chunk-Range": "1:3"})).status == 202
    refused = await sender.send(MB2, b"no", extra={"mex-Chunk-Range": "1:4"})
    assert refused.status == 417
    assert v2_error(await body_of(refused))[1] == "InvalidHeaderChunks"
