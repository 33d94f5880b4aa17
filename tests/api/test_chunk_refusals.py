"""Every chunk refusal answers the same whichever way the body comes. A body with a small Content-Length is stored
before its message is read, add_chunk's statement deciding alone (Messaging.upload_chunk); a body sent without a
Content-Length (chunked transfer) still takes the old way, its message read first. Each case is sent both ways and
must get the same status and the same MESH error body, v1 and v2, and what it pins."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse

from broker.app import create_app
from broker.keys import STORE
from broker.settings import Settings
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB2, body_of, inbox_ids, start_chunked, tracking_status
from tests.support import V1, V2, Mesh

GZIP = {"Content-Encoding": "gzip"}
UNROUTED = "GPPROVIDER_9990000042_20011130_Taylor"  # a demo patient whose practice has no mailbox
GP_WORKFLOW = "GPCONNECT_SEND_DOCUMENT"


async def _streamed(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


async def post_chunk(
    mesh: Mesh,
    message_id: str,
    number: int,
    total: int,
    data: bytes,
    *,
    streamed: bool,
    extra: dict[str, str] | None = None,
) -> ClientResponse:
    """POST chunk `number` of `total`; streamed: without a Content-Length (chunked transfer encoding)."""
    headers = {"mex-Chunk-Range": f"{number}:{total}", "Content-Type": "application/octet-stream", **(extra or {})}
    body: Any = _streamed(data) if streamed else data
    return await mesh.client.post(f"{mesh.base}/outbox/{message_id}/{number}", data=body, headers=mesh.headers(headers))


async def answer(response: ClientResponse) -> tuple[int, Any]:
    return response.status, await body_of(response)


#: A case: how the message is set up (by its sender, MB1) -> (the chunk's poster, number, total, body, headers).
Setup = Callable[[Mesh, Mesh], Awaitable[tuple[Mesh, str, int, int, bytes, dict[str, str]]]]


async def _unknown(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, "20240101000000000000_ABCDEF", 2, 2, b"b", {}


async def _unknown_and_empty(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, "20240101000000000000_ABCDEF", 2, 2, b"", {}


async def _another_mailboxs(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb2, await start_chunked(mb1, MB2, b"a", 2), 2, 2, b"b", {}


async def _another_mailboxs_with_bad_gzip(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb2, await start_chunked(mb1, MB2, gzip.compress(b"a"), 2, extra=GZIP), 2, 2, b"not gzip", GZIP


async def _finalised(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    message_id = await start_chunked(mb1, MB2, b"a", 2)
    await post_chunk(mb1, message_id, 2, 2, b"b", streamed=False)
    return mb1, message_id, 2, 2, b"again", {}


async def _single_part(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, await mb1.send_ok(MB2, b"a"), 2, 2, b"b", {}


async def _above_total(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, await start_chunked(mb1, MB2, b"a", 2), 3, 3, b"c", {}


async def _other_total(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, await start_chunked(mb1, MB2, b"a", 2), 2, 3, b"b", {}


async def _encoding_changed(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, await start_chunked(mb1, MB2, b"a", 2), 2, 2, gzip.compress(b"b"), GZIP


async def _encoding_dropped(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, await start_chunked(mb1, MB2, gzip.compress(b"a"), 2, extra=GZIP), 2, 2, b"b", {}


async def _bad_gzip(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, await start_chunked(mb1, MB2, gzip.compress(b"a"), 2, extra=GZIP), 2, 2, b"not gzip", GZIP


async def _empty(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, await start_chunked(mb1, MB2, b"a", 2), 2, 2, b"", {}


async def _finalised_and_empty(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, await mb1.send_ok(MB2, b"a"), 2, 2, b"", {}


async def _unrouted(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, await start_chunked(mb1, UNROUTED, b"a", 3, extra={"mex-WorkflowID": GP_WORKFLOW}), 2, 3, b"b", {}


async def _unrouted_and_empty(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, await start_chunked(mb1, UNROUTED, b"a", 3, extra={"mex-WorkflowID": GP_WORKFLOW}), 2, 3, b"", {}


async def _unrouted_above_total(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, await start_chunked(mb1, UNROUTED, b"a", 3, extra={"mex-WorkflowID": GP_WORKFLOW}), 4, 4, b"d", {}


async def _unrouted_other_total(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    return mb1, await start_chunked(mb1, UNROUTED, b"a", 3, extra={"mex-WorkflowID": GP_WORKFLOW}), 2, 2, b"b", {}


async def _unrouted_bad_gzip(mb1: Mesh, mb2: Mesh) -> tuple[Mesh, str, int, int, bytes, dict[str, str]]:
    message_id = await start_chunked(mb1, UNROUTED, b"a", 3, extra={"mex-WorkflowID": GP_WORKFLOW})
    return mb1, message_id, 2, 3, b"not gzip", GZIP


FINALISED = ("SEND", "MessageFinalised", "Messages has been finalised; no more chunks can be uploaded")
OUT_OF_RANGE = ("SEND", "ChunkOutOfRange", "Chunk number is greater than the total number of chunks")
BAD_GZIP = ("SEND", "InvalidGzip", "Body is not valid gzip but was sent with Content-Encoding: gzip")
RANGE = "Invalid chunk values sent in mex-Chunk-Range header"
#: case -> (status, v2 error (event, code, msg)); None: 202.
CASES: dict[str, tuple[Setup, int, tuple[str, str, str] | None]] = {
    "unknown": (_unknown, 404, ("", "", "Not Found")),
    "unknown_and_empty": (_unknown_and_empty, 404, ("", "", "Not Found")),
    "another_mailboxs": (_another_mailboxs, 403, ("", "", "Forbidden")),
    "another_mailboxs_with_bad_gzip": (_another_mailboxs_with_bad_gzip, 403, ("", "", "Forbidden")),
    "finalised": (_finalised, 423, FINALISED),
    "single_part": (_single_part, 423, FINALISED),
    "finalised_and_empty": (_finalised_and_empty, 423, FINALISED),
    "above_total": (_above_total, 406, OUT_OF_RANGE),
    "other_total": (_other_total, 417, ("SEND", "InvalidHeaderChunks", f"{RANGE}: the message has 2 chunks, not 3")),
    "encoding_changed": (_encoding_changed, 417, ("", "", "cannot change content encoding")),
    "encoding_dropped": (_encoding_dropped, 417, ("", "", "cannot change content encoding")),
    "bad_gzip": (_bad_gzip, 417, BAD_GZIP),
    "empty": (_empty, 417, ("COLLECT", "02", "Data file is missing or inaccessible.")),
    "unrouted": (_unrouted, 202, None),
    "unrouted_and_empty": (_unrouted_and_empty, 202, None),
    "unrouted_above_total": (_unrouted_above_total, 406, OUT_OF_RANGE),
    "unrouted_other_total": (
        _unrouted_other_total,
        417,
        ("SEND", "InvalidHeaderChunks", f"{RANGE}: the message has 3 chunks, not 2"),
    ),
    "unrouted_bad_gzip": (_unrouted_bad_gzip, 417, BAD_GZIP),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("accept", [V1, V2])
async def test_a_refused_chunk_answers_the_same_with_or_without_a_content_length(
    mb1: Mesh, mb2: Mesh, case: str, accept: str
) -> None:
    setup, status, v2 = CASES[case]
    answers = []
    for streamed in (False, True):
        poster, message_id, number, total, data, extra = await setup(mb1, mb2)
        poster = Mesh(poster.client, poster.mailbox_id, accept=accept)
        delivered = await inbox_ids(mb2)
        response = await post_chunk(poster, message_id, number, total, data, streamed=streamed, extra=extra)
        answers.append((await answer(response), message_id))
        assert await inbox_ids(mb2) == delivered
    (small, small_id), (streamed_answer, streamed_id) = answers
    # The message IDs differ (a fresh message per way); put the first's in the second's place.
    assert small == _with_id(streamed_answer, streamed_id, small_id)
    assert small[0] == status
    if accept == V2 and v2 is not None:
        (detail,) = small[1]["detail"]
        assert (detail["event"], detail["code"], detail["msg"]) == v2


def _with_id(found: tuple[int, Any], old: str, new: str) -> tuple[int, Any]:
    status, body = found
    if isinstance(body, dict):
        body = {k: new if v == old else v for k, v in body.items()}
    return status, body


@pytest.mark.parametrize("streamed", [False, True])
async def test_whole_message_over_its_limit_is_413_either_way(
    aiohttp_client: AiohttpClient, settings: Settings, streamed: bool
) -> None:
    client = await aiohttp_client(create_app(settings.with_(max_request_bytes=10, max_message_bytes=25)))
    sender, recipient = Mesh(client, "X26ABC1"), Mesh(client, MB2)
    message_id = await start_chunked(sender, MB2, b"0123456789", 3)
    assert (await post_chunk(sender, message_id, 2, 3, b"0123456789", streamed=streamed)).status == 202
    too_much = await post_chunk(sender, message_id, 3, 3, b"0123456789", streamed=streamed)
    assert too_much.status == 413
    body = await body_of(too_much)
    assert body["message_id"] == message_id
    assert (body["detail"][0]["event"], body["detail"][0]["code"]) == ("SEND", "MessageTooLarge")
    assert await tracking_status(sender, message_id) == "uploading"
    assert (await post_chunk(sender, message_id, 3, 3, b"01234", streamed=streamed)).status == 202
    assert await inbox_ids(recipient) == [message_id]


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_re_sent_chunk_counts_once_towards_the_message_limit(
    aiohttp_client: AiohttpClient, settings: Settings, streamed: bool
) -> None:
    """The limit holds the message's other chunks and this one, so a chunk sent again replaces its old bytes rather
    than adding to them, whether add_chunk checks it alone or the message is read first (with that chunk)."""
    client = await aiohttp_client(create_app(settings.with_(max_request_bytes=10, max_message_bytes=25)))
    sender, recipient = Mesh(client, "X26ABC1"), Mesh(client, MB2)
    message_id = await start_chunked(sender, MB2, b"0123456789", 3)
    assert (await post_chunk(sender, message_id, 2, 3, b"0123456789", streamed=streamed)).status == 202
    assert (await post_chunk(sender, message_id, 2, 3, b"0123456789", streamed=streamed)).status == 202
    assert (await post_chunk(sender, message_id, 3, 3, b"012345", streamed=streamed)).status == 413
    assert (await post_chunk(sender, message_id, 3, 3, b"01234", streamed=streamed)).status == 202
    assert await inbox_ids(recipient) == [message_id]


async def test_a_refused_chunk_stored_before_its_message_was_read_leaves_no_blob(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    """Chunks of more than 8 bytes go to the blob store here, so each refused one stored a blob to delete."""
    app = create_app(settings.with_(inline_chunk_bytes=8))
    client = await aiohttp_client(app)
    sender, stranger = Mesh(client, "X26ABC1"), Mesh(client, MB2)
    message_id = await start_chunked(sender, MB2, b"first chunk", 3)
    refused = [
        await post_chunk(stranger, message_id, 2, 3, b"a stranger's bytes", streamed=False),
        await post_chunk(sender, message_id, 2, 4, b"the wrong total", streamed=False),
        await post_chunk(sender, message_id, 4, 4, b"out of range", streamed=False),
        await post_chunk(sender, message_id, 2, 3, gzip.compress(b"gzip now"), streamed=False, extra=GZIP),
    ]
    assert [r.status for r in refused] == [403, 417, 406, 417]
    assert (await post_chunk(sender, message_id, 2, 3, b"second chunk", streamed=False)).status == 202
    assert await app[STORE].take_orphan_blobs(100) == []
    files = [p for p in settings.blob_dir.rglob("*") if p.is_file()]
    assert len(files) == 2  # chunks 1 and 2; none of the refused ones
