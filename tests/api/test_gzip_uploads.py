"""A body declared gzip is checked as gzip while it streams in: 417 InvalidGzip otherwise, with nothing stored."""

from __future__ import annotations

import gzip
import random

from aiohttp import ClientResponse, web

from broker.keys import BLOBS
from tests.api.helpers import MB2, body_of, download, send_chunk, start_chunked, tracking_status, v2_error
from tests.support import Mesh

GZIP = {"Content-Encoding": "gzip"}
#: Past the inline limit and the blob store's first write buffer, so bytes are on their way into a blob when the
#: damage at the end shows.
LARGE = random.Random(14).randbytes(3 * 1024 * 1024)


async def blob_keys(app: web.Application) -> set[str]:
    return {blob.key async for page in app[BLOBS].scan() for blob in page}


async def outbox_ids(mesh: Mesh) -> list[str]:
    response = await mesh.client.get(f"{mesh.base}/outbox/rich", headers=mesh.headers())
    return [message["message_id"] for message in (await body_of(response))["messages"]]


async def assert_invalid_gzip(response: ClientResponse, message_id: str | None = None) -> None:
    assert response.status == 417
    body = await body_of(response)
    assert v2_error(body) == ("SEND", "InvalidGzip", "Body is not valid gzip but was sent with Content-Encoding: gzip")
    assert body.get("message_id") == message_id


async def test_send_of_plain_bytes_labelled_gzip_is_417_and_stores_nothing(app: web.Application, mb1: Mesh) -> None:
    await assert_invalid_gzip(await mb1.send(MB2, b"plain text, not gzip", extra=GZIP))
    assert await outbox_ids(mb1) == []


async def test_send_of_gzip_cut_short_is_417_and_leaves_no_blob(app: web.Application, mb1: Mesh) -> None:
    cut = gzip.compress(LARGE, compresslevel=1)[:-9]
    await assert_invalid_gzip(await mb1.send(MB2, cut, extra=GZIP))
    assert await outbox_ids(mb1) == []
    assert await blob_keys(app) == set()


async def test_send_of_gzip_with_bytes_after_it_is_417(mb1: Mesh) -> None:
    await assert_invalid_gzip(await mb1.send(MB2, gzip.compress(b"payload") + b"trailing", extra=GZIP))


async def test_several_gzip_members_are_one_gzip_body(mb1: Mesh, mb2: Mesh) -> None:
    """RFC 1952 allows members one after another (`cat a.gz b.gz`); a client without gzip gets them all decoded."""
    body = gzip.compress(b"first member, ") + gzip.compress(b"second member")
    message_id = await mb1.send_ok(MB2, body, extra=GZIP)
    response = await download(mb2, message_id, headers={"Accept-Encoding": "identity"})
    assert response.status == 200
    assert await response.read() == b"first member, second member"


async def test_large_gzip_send_is_accepted_and_decoded_on_download(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, gzip.compress(LARGE, compresslevel=1), extra=GZIP)
    response = await download(mb2, message_id, headers={"Accept-Encoding": "identity"})
    assert await response.read() == LARGE


async def test_chunk_labelled_gzip_that_is_not_is_417_and_the_message_waits_for_a_good_one(
    app: web.Application, mb1: Mesh, mb2: Mesh
) -> None:
    message_id = await start_chunked(mb1, MB2, gzip.compress(b"one "), 2, extra=GZIP)
    keys = await blob_keys(app)
    damaged = gzip.compress(LARGE, compresslevel=1)
    damaged = damaged[: len(damaged) // 2] + bytes(64) + damaged[len(damaged) // 2 + 64 :]
    await assert_invalid_gzip(await send_chunk(mb1, message_id, 2, 2, damaged, extra=GZIP), message_id)
    assert await tracking_status(mb1, message_id) == "uploading"
    assert await blob_keys(app) == keys

    assert (await send_chunk(mb1, message_id, 2, 2, gzip.compress(b"two"), extra=GZIP)).status == 202
    assert await tracking_status(mb1, message_id) == "accepted"
    second = await download(mb2, message_id, 2, headers={"Accept-Encoding": "identity"})
    assert await second.read() == b"two"
