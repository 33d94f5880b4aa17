"""Issue 14's reported 500s, one example each: every one now answers a MESH error (and stores nothing)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from broker import headers
from tests.api.helpers import MB2, body_of, send_chunk, start_chunked, tracking_status, v2_error
from tests.fuzz.raw import Answer, raw_request
from tests.support import CLIENT_HEADERS, V2, Mesh

NOT_UTF8 = b"caf\xe9 \xff\xfe"


async def raw(mesh: Mesh, method: str, path: str, extra: dict[str, bytes], body: bytes = b"") -> Answer:
    """A request with header bytes as given (no HTTP client sends bytes that are not UTF-8)."""
    sent = {"Authorization": mesh.tokens().encode(), "Accept": V2.encode(), **extra}
    assert isinstance(mesh.client, TestClient)
    return await raw_request(mesh.client.port, method, path, [(k.encode(), v) for k, v in sent.items()], body)


async def outbox_count(mesh: Mesh) -> int:
    response = await mesh.client.get(f"{mesh.base}/outbox/rich", headers=mesh.headers())
    assert response.status == 200
    return len((await body_of(response))["messages"])


# Before authentication -----------------------------------------------------------------------------------


async def test_accept_version_of_thousands_of_digits_is_v2(mb1: Mesh) -> None:
    accept = "application/vnd.mesh.v" + "9" * 5000 + "+json"
    response = await mb1.client.get(f"{mb1.base}/count", headers=mb1.headers(accept=accept))
    assert response.status == 200
    assert await body_of(response) == {"count": 0}  # the v2 body


async def test_token_with_a_byte_that_is_not_utf8_is_403(mb1: Mesh) -> None:
    token = mb1.tokens().encode()
    damaged = token[:20] + b"\xff" + token[21:]
    answer = await raw(mb1, "GET", f"{mb1.base}/count", {"Authorization": damaged})
    assert answer.status == 403
    assert v2_error(answer.json()) == ("", "", "Error reading from Authorization header")
    assert damaged[8:] not in answer.body and token[-64:] not in answer.body


# After authentication ------------------------------------------------------------------------------------


async def test_send_header_that_is_not_utf8_is_400_and_stores_nothing(mb1: Mesh) -> None:
    for name in (headers.SUBJECT, headers.TO, headers.CONTENT_TYPE, "Content-Type"):
        sent = {headers.TO: MB2.encode(), headers.WORKFLOW_ID: b"TEST_WORKFLOW", name: NOT_UTF8}
        answer = await raw(mb1, "POST", f"{mb1.base}/outbox", sent, b"payload")
        assert answer.status == 400, name
        assert v2_error(answer.json()) == ("TRANSFER", "06", f"MalformedControlFile: {name} is not UTF-8 text")
    assert await outbox_count(mb1) == 0


async def test_send_header_in_utf8_is_kept(mb1: Mesh, mb2: Mesh) -> None:
    """Text that is UTF-8 but not ASCII is still a subject like any other."""
    subject = "Café ✓".encode()
    sent = {headers.TO: MB2.encode(), headers.WORKFLOW_ID: b"TEST_WORKFLOW", headers.SUBJECT: subject}
    answer = await raw(mb1, "POST", f"{mb1.base}/outbox", sent, b"payload")
    assert answer.status == 202
    message_id = answer.json()["message_id"]
    response = await mb2.client.head(f"{mb2.base}/inbox/{message_id}", headers=mb2.headers())
    assert response.headers[headers.SUBJECT] == "Café ✓"


async def test_handshake_client_version_that_is_not_utf8_is_400(mb1: Mesh) -> None:
    sent = {name: value.encode() for name, value in CLIENT_HEADERS.items()}
    sent[headers.CLIENT_VERSION] = NOT_UTF8
    answer = await raw(mb1, "POST", mb1.base, sent)
    assert answer.status == 400
    assert v2_error(answer.json())[:2] == ("TRANSFER", "06")


async def test_download_chunk_number_past_any_bound_is_400(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"payload")
    for number in (str(2**31), str(2**63), str(2**64), "9" * 5000):
        response = await mb2.client.get(f"{mb2.base}/inbox/{message_id}/{number}", headers=mb2.headers())
        assert response.status == 400, number
        (problem,) = (await body_of(response))["detail"]
        assert (problem["type"], problem["loc"]) == ("less_than_equal", ["path", "chunk_number"])


async def test_upload_chunk_number_past_any_bound_is_400(mb1: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"one", 2)
    for number in (str(2**63), "9" * 5000):
        path = f"{mb1.base}/outbox/{message_id}/{number}"
        response = await mb1.client.post(path, data=b"two", headers=mb1.headers({headers.CHUNK_RANGE: "2:2"}))
        assert response.status == 400, number
    assert await tracking_status(mb1, message_id) == "uploading"


async def test_upload_chunk_range_past_any_bound_is_417(mb1: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"one", 2)
    for chunk_range in (f"2:{2**31}", f"2:{2**63}", f"2:{2**64}", "2:" + "9" * 5000, "9" * 5000 + ":2"):
        response = await send_chunk(mb1, message_id, 2, 2, b"two", extra={headers.CHUNK_RANGE: chunk_range})
        assert response.status == 417, chunk_range
        body = await body_of(response)
        assert body["message_id"] == message_id
        assert v2_error(body)[:2] == ("SEND", "InvalidHeaderChunks")
    assert await tracking_status(mb1, message_id) == "uploading"


async def test_rich_start_time_pushed_out_of_range_by_its_offset_is_400(mb1: Mesh) -> None:
    for start_time in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        response = await mb1.client.get(
            f"{mb1.base}/outbox/rich", params={"start_time": start_time}, headers=mb1.headers()
        )
        assert response.status == 400, start_time
        (problem,) = (await body_of(response))["detail"]
        assert (problem["type"], problem["loc"]) == ("datetime_parsing", ["query", "start_time"])


async def test_chunk_range_total_must_match_the_message(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"one", 2)
    response = await send_chunk(mb1, message_id, 2, 3, b"two")  # mex-Chunk-Range 2:3 on a message of 2
    assert response.status == 417
    body = await body_of(response)
    assert v2_error(body)[:2] == ("SEND", "InvalidHeaderChunks")
    assert "has 2 chunks, not 3" in v2_error(body)[2]
    assert await tracking_status(mb1, message_id) == "uploading"  # nothing stored
    assert (await send_chunk(mb1, message_id, 2, 2, b"two")).status == 202
    assert await tracking_status(mb1, message_id) == "accepted"


async def test_nul_in_a_query_or_path_value_is_400(mb2: Mesh) -> None:
    """PostgreSQL's text cannot hold NUL: the look-up would fail outright rather than find nothing."""
    for path, loc in [
        ("/inbox?workflow_filter=%00", ["query", "workflow_filter"]),
        ("/inbox?continue_from=" + "a%00b" * 10, ["query", "continue_from"]),
        ("/outbox/tracking?messageID=a%00b", ["query", "messageID"]),
        ("/inbox/%00", ["path", "message_id"]),
        ("/outbox/tracking/a%00b", ["path", "local_id"]),
    ]:
        response = await mb2.client.get(f"{mb2.base}{path}", headers=mb2.headers())
        assert response.status == 400, path
        (problem,) = (await body_of(response))["detail"]
        assert problem["loc"] == loc
