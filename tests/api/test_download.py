"""E5/E6 download (headers, gzip negotiation, errors) and E7 HEAD."""

from __future__ import annotations

import gzip
import re
from datetime import UTC, datetime

from tests.api.helpers import MB1, MB2, MB3, body_of, download, head, send_chunk, start_chunked, v1_error, v2_error
from tests.support import V1, Mesh

SEND_HEADERS = {
    "mex-LocalID": "local-#1",
    "mex-Subject": "A subject",
    "mex-PartnerID": "partner-9",
    "mex-Content-Checksum": "md5:abc123",
    "mex-Content-Encrypted": "Y",
    "mex-Content-Type": "text/csv",
}


async def test_download_single_part_headers(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"payload", extra=SEND_HEADERS)
    response = await download(mb2, message_id, headers={"Accept-Encoding": "identity"})
    assert response.status == 200
    assert await response.read() == b"payload"
    h = response.headers
    assert h["mex-From"] == MB1
    assert h["mex-To"] == MB2
    assert h["mex-WorkflowID"] == "TEST_WORKFLOW"
    assert h["mex-Chunk-Range"] == "1:1"
    assert h["mex-Total-Chunks"] == "1"
    assert h["mex-MessageID"] == message_id
    assert h["mex-MessageType"] == "DATA"
    assert h["mex-StatusCode"] == "00"
    assert h["mex-StatusEvent"] == "TRANSFER"
    assert h["mex-StatusSuccess"] == "SUCCESS"
    assert h["mex-StatusDescription"] == "Transferred to recipient mailbox"
    assert re.fullmatch(r"\d{14}", h["mex-StatusTimestamp"])
    assert h["mex-AddressType"] == "ALL"
    assert h["mex-Version"] == "1.0"
    assert h["mex-FileName"] == f"{message_id}.dat"
    assert h["mex-LocalID"] == "local-#1"
    assert h["mex-Subject"] == "A subject"
    assert h["mex-PartnerID"] == "partner-9"
    assert h["mex-Content-Checksum"] == "md5:abc123"
    assert h["mex-Content-Encrypted"] == "Y"
    assert h["mex-Content-Type"] == "text/csv"
    assert h["Content-Type"].startswith("text/csv")  # v2, single part, stored type
    assert "mex-LinkedMsgID" not in h
    assert "mex-Content-Compressed" not in h
    assert "Last-Modified" in h
    assert h["Content-Length"] == "7"


async def test_download_v1_content_type_is_octet_stream(mb1: Mesh, mb2_v1: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"payload", extra={"mex-Content-Type": "text/csv"})
    response = await download(mb2_v1, message_id)
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["mex-Content-Type"] == "text/csv"


async def test_content_type_header_is_stored_when_no_mex_content_type(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"{}", extra={"Content-Type": "application/json"})
    response = await download(mb2, message_id)
    assert response.headers["mex-Content-Type"] == "application/json"


async def test_file_name_and_flags_echo(mb1: Mesh, mb2: Mesh) -> None:
    extra = {"mex-FileName": "report.csv", "mex-Content-Compressed": "yes", "mex-Content-Encrypted": "N/A"}
    message_id = await mb1.send_ok(MB2, b"x", extra=extra)
    h = (await download(mb2, message_id, headers={"Accept-Encoding": "identity"})).headers
    assert h["mex-FileName"] == "report.csv"
    assert h["mex-Content-Compressed"] == "Y"
    assert "mex-Content-Encrypted" not in h


async def test_download_chunk_one_by_number(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    response = await download(mb2, message_id, 1)
    assert (response.status, await response.read()) == (200, b"x")


async def test_lower_case_message_id_downloads(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    assert (await download(mb2, message_id.lower())).status == 200


async def test_download_is_repeatable_until_ack(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    for _ in range(2):
        assert await (await download(mb2, message_id)).read() == b"x"


async def test_wrong_recipient_is_403(mb1: Mesh, mb3: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    for other in (mb1, mb3):
        response = await download(other, message_id)
        assert response.status == 403
        assert v2_error(await body_of(response)) == ("", "", "Forbidden")


async def test_unknown_message_is_404(mb2: Mesh, mb2_v1: Mesh) -> None:
    response = await download(mb2, "20240101000000000000_ABCDEF")
    assert response.status == 404
    body = await body_of(response)
    assert v2_error(body) == ("RECEIVE", "20", "Message does not exist")
    assert body["message_id"] == "20240101000000000000_ABCDEF"
    response = await download(mb2_v1, "20240101000000000000_ABCDEF", 2)
    assert response.status == 404
    assert v1_error(await body_of(response)) == ("RECEIVE", "20", "Message does not exist")


async def test_chunk_out_of_range_is_404(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    response = await download(mb2, message_id, 2)
    assert response.status == 404
    assert v2_error(await body_of(response))[1] == "20"


async def test_chunk_zero_is_400(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    response = await download(mb2, message_id, 0)
    assert response.status == 400
    assert (await body_of(response))["detail"][0]["loc"] == ["path", "chunk_number"]


# Gzip negotiation ----------------------------------------------------------------------------------------


async def test_stored_gzip_with_gzip_accepted_is_served_raw(mb1: Mesh, mb2: Mesh) -> None:
    packed = gzip.compress(b"hello gzip")
    message_id = await mb1.send_ok(MB2, packed, extra={"Content-Encoding": "gzip"})
    response = await download(mb2, message_id, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["mex-Content-Compressed"] == "Y"
    assert await response.read() == packed


async def test_stored_gzip_v1_with_gzip_accepted_is_served_raw(mb1: Mesh, mb2_v1: Mesh) -> None:
    packed = gzip.compress(b"hello gzip")
    message_id = await mb1.send_ok(MB2, packed, extra={"Content-Encoding": "gzip"})
    response = await download(mb2_v1, message_id, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert await response.read() == packed


async def test_stored_gzip_without_gzip_accepted_is_decompressed(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, gzip.compress(b"hello plain"), extra={"Content-Encoding": "gzip"})
    response = await download(mb2, message_id, headers={"Accept-Encoding": "identity"}, auto_decompress=False)
    assert "Content-Encoding" not in response.headers
    assert "mex-Content-Compressed" not in response.headers
    assert await response.read() == b"hello plain"


async def test_stored_plain_v2_with_gzip_accepted_is_gzipped(mb1: Mesh, mb2: Mesh) -> None:
    data = b"compress me " * 100
    message_id = await mb1.send_ok(MB2, data)
    response = await download(mb2, message_id, headers={"Accept-Encoding": "gzip, deflate"}, auto_decompress=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["mex-Content-Compressed"] == "Y"
    body = await response.read()
    assert gzip.decompress(body) == data
    # A small chunk from its row is coded whole and sent with its length in one write (transfer._send_small), not
    # streamed in chunked framing.
    assert response.headers["Content-Length"] == str(len(body))
    assert "Transfer-Encoding" not in response.headers


async def test_stored_plain_v2_gzip_is_decoded_by_client(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"auto")
    response = await download(mb2, message_id, headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert await response.read() == b"auto"


async def test_stored_plain_v1_is_never_gzipped(mb1: Mesh, mb2_v1: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"plain v1")
    response = await download(mb2_v1, message_id, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert "Content-Encoding" not in response.headers
    assert "mex-Content-Compressed" not in response.headers
    assert await response.read() == b"plain v1"


async def test_gzip_with_q_zero_is_not_gzip(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"plain")
    response = await download(mb2, message_id, headers={"Accept-Encoding": "gzip;q=0"}, auto_decompress=False)
    assert "Content-Encoding" not in response.headers
    assert await response.read() == b"plain"


# HEAD ----------------------------------------------------------------------------------------------------


async def test_head_by_recipient(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"payload", extra=SEND_HEADERS)
    response = await head(mb2, message_id)
    assert response.status == 200
    assert await response.read() == b""
    h = response.headers
    assert h["mex-MessageID"] == message_id
    assert h["mex-From"] == MB1
    assert h["mex-To"] == MB2
    assert h["mex-Chunk-Range"] == "1:1"
    assert h["mex-LocalID"] == "local-#1"
    assert h["mex-StatusSuccess"] == "SUCCESS"


async def test_head_of_chunked_message(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await start_chunked(mb1, MB2, b"a", 2)
    await send_chunk(mb1, message_id, 2, 2, b"b")
    h = (await head(mb2, message_id)).headers
    assert (h["mex-Chunk-Range"], h["mex-Total-Chunks"]) == ("1:2", "2")


async def test_head_by_sender(mb1: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    response = await head(mb1, message_id)
    assert response.status == 200
    assert response.headers["mex-MessageID"] == message_id


async def test_head_by_stranger_is_404(mb1: Mesh, mb3: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    assert (await head(mb3, message_id)).status == 404


async def test_head_unknown_is_404(mb2: Mesh) -> None:
    assert (await head(mb2, "20240101000000000000_ABCDEF")).status == 404


async def test_status_timestamp_is_recent(mb1: Mesh, mb2: Mesh) -> None:
    before = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    message_id = await mb1.send_ok(MB2, b"x")
    stamp = (await head(mb2, message_id)).headers["mex-StatusTimestamp"]
    assert stamp >= before


async def test_v1_head_uses_same_headers(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    v1 = Mesh(mb2.client, MB2, accept=V1)
    response = await head(v1, message_id)
    assert response.status == 200
    assert response.headers["mex-MessageType"] == "DATA"
    assert MB3 not in response.headers.values()
