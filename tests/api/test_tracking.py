"""E10 tracking by message ID (sender only, v1/v2 shapes) and E11 tracking by local ID (v1 body, 404, 300)."""

from __future__ import annotations

import re

from tests.api.helpers import MB1, MB2, ack, body_of, track, v1_error, v2_error
from tests.support import Mesh

V2_REQUIRED = {
    "message_id",
    "workflow_id",
    "upload_timestamp",
    "recipient",
    "status_success",
    "status",
}


async def test_v2_tracking_accepted_then_acknowledged(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x", extra={"mex-LocalID": "L1", "mex-FileName": "f.dat"})
    response = await track(mb1, message_id)
    assert response.status == 200
    assert response.content_type == "application/vnd.mesh.v2+json"
    body = await body_of(response)
    assert set(body) >= V2_REQUIRED
    assert body["message_id"] == message_id
    assert body["local_id"] == "L1"
    assert body["filename"] == "f.dat"
    assert body["workflow_id"] == "TEST_WORKFLOW"
    assert body["recipient"] == MB2
    assert body["recipient_name"] == "TESTMB2"
    assert body["recipient_ods_code"] == "X26"
    assert body["status"] == "accepted"
    assert body["status_success"] is True
    assert "expiry_time" in body
    assert not any(v is None for v in body.values())
    assert "status_code" not in body

    assert (await ack(mb2, message_id)).status == 200
    assert (await body_of(await track(mb1, message_id)))["status"] == "acknowledged"


async def test_v1_tracking_fields(mb1_v1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1_v1.send_ok(
        MB2, b"abc", extra={"mex-LocalID": "L2", "mex-Subject": "S", "mex-Content-Checksum": "md5:1"}
    )
    response = await track(mb1_v1, message_id)
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await body_of(response)
    assert body["messageId"] == body["dtsId"] == message_id
    assert body["status"] == "Accepted"
    assert body["statusSuccess"] == "SUCCESS"
    assert body["localId"] == "L2"
    assert body["subject"] == "S"
    assert body["checksum"] == "md5:1"
    assert body["sender"] == MB1
    assert body["senderName"] == "TESTMB1"
    assert body["recipient"] == MB2
    assert body["recipientName"] == "TESTMB2"
    assert body["workflowId"] == "TEST_WORKFLOW"
    assert body["fileName"] == f"{message_id}.dat"
    assert body["fileSize"] == 3
    assert body["chunkCount"] == 1
    assert body["addressType"] == "ALL"
    assert body["version"] == "1.0"
    assert body["downloadTimestamp"] == ""
    assert re.fullmatch(r"\d{14}", body["uploadTimestamp"])
    assert re.fullmatch(r"\d{14}", body["expiryTime"])

    assert (await ack(mb2, message_id)).status == 200
    body = await body_of(await track(mb1_v1, message_id))
    assert body["status"] == "Acknowledged"
    assert re.fullmatch(r"\d{14}", body["downloadTimestamp"])


async def test_tracking_gzip_flags_v1(mb1_v1: Mesh) -> None:
    import gzip

    message_id = await mb1_v1.send_ok(MB2, gzip.compress(b"x"), extra={"Content-Encoding": "gzip"})
    body = await body_of(await track(mb1_v1, message_id))
    assert (body["contentEncoding"], body["compressFlag"]) == ("gzip", "Y")


async def test_recipient_cannot_track(mb1: Mesh, mb2: Mesh, mb3: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    for other in (mb2, mb3):
        response = await track(other, message_id)
        assert response.status == 404
        assert v2_error(await body_of(response)) == ("RECEIVE", "20", "Message does not exist")


async def test_track_unknown_is_404(mb1_v1: Mesh) -> None:
    response = await track(mb1_v1, "20240101000000000000_ABCDEF")
    assert response.status == 404
    assert v1_error(await body_of(response))[1] == "20"


async def test_track_lower_case_id(mb1: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    assert (await track(mb1, message_id.lower())).status == 200


async def test_track_without_message_id_is_400(mb1: Mesh) -> None:
    response = await mb1.client.get(f"{mb1.base}/outbox/tracking", headers=mb1.headers())
    assert response.status == 400
    assert (await body_of(response))["detail"][0]["loc"] == ["query", "messageID"]


# By local ID ---------------------------------------------------------------------------------------------


async def track_local(mesh: Mesh, local_id: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    response = await mesh.client.get(f"{mesh.base}/outbox/tracking/{local_id}", headers=mesh.headers())
    return response.status, await body_of(response)


async def test_track_by_local_id_returns_v1_body(mb1: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x", extra={"mex-LocalID": "unique-1"})
    status, body = await track_local(mb1, "unique-1")  # v2 Accept, still the v1 body
    assert status == 200
    assert body["messageId"] == message_id
    assert body["localId"] == "unique-1"
    assert body["status"] == "Accepted"


async def test_track_by_unknown_local_id_is_404(mb1: Mesh) -> None:
    assert (await track_local(mb1, "nothing"))[0] == 404


async def test_track_by_shared_local_id_is_300(mb1: Mesh) -> None:
    for _ in range(2):
        await mb1.send_ok(MB2, b"x", extra={"mex-LocalID": "dup"})
    status, body = await track_local(mb1, "dup")
    assert status == 300
    assert v2_error(body) == ("", "", "Multiple Choices")


async def test_local_id_is_scoped_to_the_sender(mb1: Mesh, mb2: Mesh) -> None:
    await mb1.send_ok(MB2, b"x", extra={"mex-LocalID": "mine"})
    assert (await track_local(mb2, "mine"))[0] == 404
    await mb2.send_ok(MB1, b"x", extra={"mex-LocalID": "mine"})
    assert (await track_local(mb1, "mine"))[0] == 200
