"""E2 send: success shapes in both versions and every send error, in the sandbox's check order."""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.app import create_app
from broker.keys import DIRECTORY
from broker.models import Workflow
from broker.settings import Settings
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB1, MB2, MB3, MESSAGE_ID, body_of, download, inbox_ids, v1_error, v2_error
from tests.support import V1, Mesh


async def test_send_v2_returns_message_id(mb1: Mesh, mb2: Mesh) -> None:
    response = await mb1.send(MB2, b"hello")
    assert response.status == 202
    body = await body_of(response)
    assert list(body) == ["message_id"]
    assert re.match(MESSAGE_ID, body["message_id"])
    assert await inbox_ids(mb2) == [body["message_id"]]


async def test_send_v1_returns_message_id(mb1_v1: Mesh, mb2: Mesh) -> None:
    response = await mb1_v1.send(MB2, b"hello")
    assert response.status == 202
    assert response.content_type == "application/json"
    body = await body_of(response)
    assert list(body) == ["messageID"]
    assert re.match(MESSAGE_ID, body["messageID"])
    assert await inbox_ids(mb2) == [body["messageID"]]


async def test_message_ids_are_unique_and_ordered(mb1: Mesh) -> None:
    ids = [await mb1.send_ok(MB2, b"x") for _ in range(5)]
    assert len(set(ids)) == 5
    assert [i.split("_")[0] for i in ids] == sorted(i.split("_")[0] for i in ids)


async def test_recipient_and_workflow_are_normalised(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(f"  {MB2.lower()} ", b"x", workflow_id="  test TEST ")
    response = await download(mb2, message_id)
    assert response.headers["mex-To"] == MB2
    assert response.headers["mex-WorkflowID"] == "test TEST"


async def test_send_to_self(mb1: Mesh) -> None:
    message_id = await mb1.send_ok(MB1, b"loop")
    assert await inbox_ids(mb1) == [message_id]


async def test_legacy_headers_that_match_are_accepted(mb1: Mesh) -> None:
    extra = {"mex-From": MB1.lower(), "mex-MessageType": "data", "mex-Version": "1.0", "mex-Content-Compress": "Y"}
    response = await mb1.send(MB2, b"x", extra=extra)
    assert response.status == 202


async def test_gzip_content_encoding_is_accepted(mb1: Mesh) -> None:
    response = await mb1.send(MB2, gzip.compress(b"x"), extra={"Content-Encoding": "GZIP"})
    assert response.status == 202


# Errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["mex-To", "mex-WorkflowID"])
async def test_missing_required_header_is_400_validation(mb1: Mesh, missing: str) -> None:
    headers = mb1.headers({"mex-To": MB2, "mex-WorkflowID": "TEST_WORKFLOW"})
    del headers[missing]
    response = await mb1.client.post(f"{mb1.base}/outbox", data=b"x", headers=headers)
    assert response.status == 400
    (problem,) = (await body_of(response))["detail"]
    assert problem["type"] == "missing"
    assert problem["loc"] == ["header", missing.lower()]
    assert problem["msg"] == "Field required"


@pytest.mark.parametrize(
    ("header", "limit"),
    [
        ("mex-To", 100),
        ("mex-WorkflowID", 300),
        ("mex-Chunk-Range", 20),
        ("mex-Subject", 500),
        ("mex-LocalID", 300),
        ("mex-PartnerID", 500),
        ("mex-FileName", 300),
        ("mex-Content-Checksum", 100),
        ("mex-Content-Type", 100),
        ("mex-Content-Encrypted", 20),
        ("mex-Content-Compressed", 20),
    ],
)
async def test_too_long_header_is_400(mb1: Mesh, header: str, limit: int) -> None:
    response = await mb1.send(MB2, b"x", extra={header: "A" * (limit + 1)})
    assert response.status == 400
    (problem,) = (await body_of(response))["detail"]
    assert problem["type"] == "string_too_long"
    assert problem["loc"] == ["header", header.lower()]


async def test_header_at_the_limit_is_accepted(mb1: Mesh) -> None:
    response = await mb1.send(MB2, b"x", extra={"mex-Subject": "s" * 500, "mex-LocalID": "#" * 300})
    assert response.status == 202


@pytest.mark.parametrize(
    "extra",
    [
        {"mex-LocalID": "tab\there"},
        {"mex-WorkflowID": "http://example.com"},
        {"mex-To": "https://example.com"},
        {"mex-Content-Checksum": "http://x"},
    ],
)
async def test_malformed_control_is_400_code_06(mb1: Mesh, extra: dict[str, str]) -> None:
    response = await mb1.send(MB2, b"x", extra=extra)
    assert response.status == 400
    assert v2_error(await body_of(response)) == ("TRANSFER", "06", "MalformedControlFile")


async def test_raw_control_character_is_400_code_06(client: TestClient) -> None:
    """aiohttp's client refuses to send \\x01, so write the request by hand.

    aiohttp's HTTP parser rejects the header before the app sees it: the status is still 400, but the body is
    aiohttp's plain text, not the MESH code 06 body (only a tab reaches the broker's own check).
    """
    mesh = Mesh(client, MB1)
    headers = mesh.headers({"mex-To": MB2, "mex-WorkflowID": "TEST_WORKFLOW", "mex-Subject": "bad\x01subject"})
    head_lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST {mesh.base}/outbox HTTP/1.1\r\nHost: x\r\n{head_lines}Content-Length: 1\r\nConnection: close\r\n\r\nx"
    )
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request.encode("latin-1"))
    await writer.drain()
    raw = await reader.read()
    writer.close()
    assert raw.split(b"\r\n", 1)[0].split()[1] == b"400"
    assert await inbox_ids(Mesh(client, MB2)) == []


async def test_url_in_subject_is_allowed(mb1: Mesh) -> None:
    response = await mb1.send(MB2, b"x", extra={"mex-Subject": "http://example.com"})
    assert response.status == 202


async def test_bad_checksum_characters_is_400(mb1: Mesh) -> None:
    response = await mb1.send(MB2, b"x", extra={"mex-Content-Checksum": "md5:abc$def"})
    assert response.status == 400
    assert v2_error(await body_of(response)) == ("SEND", "Invalid checksum", "Invalid checksum")


@pytest.mark.parametrize("checksum", ["b10a8db164e0754105b7a99be72e3fe5", "sha256:ab-cd/ef", "md5 abc"])
async def test_good_checksum_is_accepted(mb1: Mesh, mb2: Mesh, checksum: str) -> None:
    message_id = await mb1.send_ok(MB2, b"x", extra={"mex-Content-Checksum": checksum})
    assert (await download(mb2, message_id)).headers["mex-Content-Checksum"] == checksum


async def test_blank_recipient_is_400_code_08(mb1: Mesh) -> None:
    response = await mb1.send("   ", b"x")
    assert response.status == 400
    assert v2_error(await body_of(response)) == ("SEND", "08", "TO_DTS missing")


@pytest.mark.parametrize("encoding", ["deflate", "br", "gzip, deflate"])
async def test_unsupported_content_encoding_is_422(mb1: Mesh, encoding: str) -> None:
    response = await mb1.send(MB2, b"x", extra={"Content-Encoding": encoding})
    assert response.status == 422
    assert v2_error(await body_of(response)) == ("SEND", "UnsupportedContentEncoding", "Unsupported content encoding")


@pytest.mark.parametrize("chunk_range", ["2:3", "1", "a:b", "0:1", "2:1", "1:0", "1-2", ""])
async def test_bad_chunk_range_is_417(mb1: Mesh, chunk_range: str) -> None:
    response = await mb1.send(MB2, b"x", extra={"mex-Chunk-Range": chunk_range})
    assert response.status == 417
    assert v2_error(await body_of(response)) == (
        "SEND",
        "InvalidHeaderChunks",
        "Invalid chunk values sent in mex-Chunk-Range header",
    )


async def test_chunk_range_with_spaces_is_accepted(mb1: Mesh) -> None:
    response = await mb1.send(MB2, b"x", extra={"mex-Chunk-Range": " 1 : 1 "})
    assert response.status == 202


async def test_unknown_recipient_is_417_code_12(mb1: Mesh) -> None:
    response = await mb1.send("NOSUCHMB", b"x")
    assert response.status == 417
    assert v2_error(await body_of(response)) == ("SEND", "12", "Unregistered to address")


async def test_deactivated_recipient_is_417_code_12(mb1: Mesh, app: web.Application) -> None:
    await app[DIRECTORY].set_active(MB2, False)
    response = await mb1.send(MB2, b"x")
    assert response.status == 417
    assert v2_error(await body_of(response))[1] == "12"


async def test_empty_body_is_417_code_02(mb1: Mesh, mb2: Mesh) -> None:
    response = await mb1.send(MB2, b"")
    assert response.status == 417
    assert v2_error(await body_of(response)) == ("COLLECT", "02", "Data file is missing or inaccessible.")
    assert await inbox_ids(mb2) == []


async def test_mex_from_mismatch_is_417_code_07(mb1: Mesh) -> None:
    response = await mb1.send(MB2, b"x", extra={"mex-From": MB2})
    assert response.status == 417
    event, code, _ = v2_error(await body_of(response))
    assert (event, code) == ("SEND", "07")


@pytest.mark.parametrize("message_type", ["REPORT", "junk"])
async def test_non_data_message_type_is_417_code_11(mb1: Mesh, message_type: str) -> None:
    response = await mb1.send(MB2, b"x", extra={"mex-MessageType": message_type})
    assert response.status == 417
    event, code, _ = v2_error(await body_of(response))
    assert (event, code) == ("SEND", "11")


async def test_check_order_validation_before_malformed(mb1: Mesh) -> None:
    response = await mb1.send(MB2, b"x", extra={"mex-Subject": "a\t" * 251 + "a"})
    assert response.status == 400
    assert (await body_of(response))["detail"][0]["type"] == "string_too_long"


async def test_check_order_encoding_before_chunks_before_recipient(mb1: Mesh) -> None:
    response = await mb1.send("NOSUCHMB", b"", extra={"Content-Encoding": "br", "mex-Chunk-Range": "2:2"})
    assert response.status == 422
    response = await mb1.send("NOSUCHMB", b"", extra={"mex-Chunk-Range": "2:2"})
    assert response.status == 417
    assert v2_error(await body_of(response))[1] == "InvalidHeaderChunks"
    response = await mb1.send("NOSUCHMB", b"")
    assert v2_error(await body_of(response))[1] == "12"


async def test_v1_error_shape(mb1_v1: Mesh) -> None:
    response = await mb1_v1.send("NOSUCHMB", b"x")
    assert response.status == 417
    assert response.content_type == "application/json"
    body = await body_of(response)
    assert body == {"errorEvent": "SEND", "errorCode": "12", "errorDescription": "Unregistered to address"}


async def test_v2_error_shape(mb1: Mesh) -> None:
    response = await mb1.send("NOSUCHMB", b"x")
    assert response.content_type == "application/vnd.mesh.v2+json"
    assert await body_of(response) == {"detail": [{"event": "SEND", "code": "12", "msg": "Unregistered to address"}]}


# Restricted workflows -----------------------------------------------------------------------------------


@pytest.fixture
async def restricted(client: TestClient, app: web.Application) -> str:
    await app[DIRECTORY].add_workflow(Workflow("LOCKED", restricted=True, senders=(MB1,), receivers=(MB2,)))
    return "LOCKED"


async def test_restricted_workflow_allows_listed_pair(mb1: Mesh, restricted: str) -> None:
    response = await mb1.send(MB2, b"x", workflow_id=restricted)
    assert response.status == 202


async def test_restricted_workflow_rejects_unlisted_sender_16(mb2: Mesh, restricted: str) -> None:
    response = await mb2.send(MB2, b"x", workflow_id=restricted)
    assert response.status == 417
    assert v2_error(await body_of(response)) == ("SEND", "16", "Sender is not allowed to send messages of this type")


async def test_restricted_workflow_rejects_unlisted_recipient_17(mb1_v1: Mesh, restricted: str) -> None:
    response = await mb1_v1.send(MB3, b"x", workflow_id=restricted)
    assert response.status == 417
    assert v1_error(await body_of(response)) == ("SEND", "17", "Workflow ID not registered for mailbox")


async def test_unrestricted_workflow_allows_any_pair(mb1: Mesh, mb3: Mesh) -> None:
    # TEST_WORKFLOW lists X26ABC1 -> X26ABC2 only, but is not restricted.
    assert (await mb3.send(MB1, b"x", workflow_id="TEST_WORKFLOW")).status == 202
    assert (await mb1.send(MB3, b"x", workflow_id="UNKNOWN_WORKFLOW")).status == 202


# Size limit ---------------------------------------------------------------------------------------------


@pytest.fixture
async def small(aiohttp_client: AiohttpClient, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings.with_(max_request_bytes=1000)))


async def test_body_at_the_limit_is_accepted(small: TestClient) -> None:
    assert (await Mesh(small, MB1).send(MB2, b"x" * 1000)).status == 202


async def test_declared_oversize_body_is_413(small: TestClient) -> None:
    response = await Mesh(small, MB1).send(MB2, b"x" * 1001)
    assert response.status == 413
    event, code, _ = v2_error(await body_of(response))
    assert (event, code) == ("SEND", "MessageTooLarge")
    assert await inbox_ids(Mesh(small, MB2)) == []


async def test_declared_oversize_body_is_413_v1(small: TestClient) -> None:
    response = await Mesh(small, MB1, accept=V1).send(MB2, b"x" * 5000)
    assert response.status == 413
    assert v1_error(await body_of(response))[1] == "MessageTooLarge"


async def test_streamed_oversize_body_is_413(small: TestClient) -> None:
    async def grow() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"y" * 100

    response = await Mesh(small, MB1).send(MB2, grow())  # type: ignore[arg-type]
    assert response.status == 413
    assert v2_error(await body_of(response))[1] == "MessageTooLarge"
    assert await inbox_ids(Mesh(small, MB2)) == []


async def test_streamed_body_under_the_limit_is_accepted(small: TestClient) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"z" * 100

    message_id = await Mesh(small, MB1).send_ok(MB2, pieces())  # type: ignore[arg-type]
    response = await download(Mesh(small, MB2), message_id)
    assert await response.read() == b"z" * 500
