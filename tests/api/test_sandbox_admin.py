"""mesh-sandbox admin/test endpoints (mesh-api.md section 9.4): on with sandbox_admin, absent without."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from broker.app import create_app
from broker.keys import DIRECTORY
from broker.models import Mailbox
from broker.settings import Settings, SettingsError
from tests.api.conftest import AiohttpClient
from tests.api.helpers import (
    MB1,
    MB2,
    MB3,
    MESSAGE_ID,
    ack,
    body_of,
    download,
    head,
    inbox_ids,
    track,
    tracking_status,
)
from tests.support import V1, Mesh

MAILBOX_KEYS = {"mailbox_id", "mailbox_name", "billing_entity", "ods_code", "org_code", "org_name", "active"}


@pytest.mark.parametrize("path", ["/admin/reset", "/messageexchange/admin/reset"])
async def test_reset_all(client: TestClient, mb1: Mesh, mb2: Mesh, path: str) -> None:
    await mb1.send_ok(MB2, b"x")
    await mb2.send_ok(MB1, b"y")
    response = await client.delete(path)
    assert response.status == 200
    assert await body_of(response) == {"message": "all mailboxes reset"}
    assert await inbox_ids(mb1) == []
    assert await inbox_ids(mb2) == []


@pytest.mark.parametrize("prefix", ["", "/messageexchange"])
async def test_reset_one_mailbox(client: TestClient, mb1: Mesh, mb2: Mesh, mb3: Mesh, prefix: str) -> None:
    to_mb2 = await mb1.send_ok(MB2, b"x")
    to_mb3 = await mb1.send_ok(MB3, b"y")
    response = await client.delete(f"{prefix}/admin/reset/{MB2.lower()}", params={"clear_disk": "true"})
    assert response.status == 200
    assert await body_of(response) == {"message": f"mailbox {MB2} reset"}
    assert await inbox_ids(mb2) == []
    assert await inbox_ids(mb3) == [to_mb3]
    assert (await track(mb1, to_mb2)).status == 404


async def test_reset_unknown_mailbox_is_404(client: TestClient) -> None:
    for prefix in ("", "/messageexchange"):
        assert (await client.delete(f"{prefix}/admin/reset/NOSUCHMB")).status == 404


@pytest.mark.parametrize(
    "path", ["/admin/mailbox/{}", "/messageexchange/admin/mailbox/{}", "/messageexchange/mailbox/{}"]
)
async def test_mailbox_details(client: TestClient, path: str) -> None:
    response = await client.get(path.format(MB1))
    assert response.status == 200
    body = await body_of(response)
    assert set(body) == MAILBOX_KEYS
    assert body == {
        "mailbox_id": MB1,
        "mailbox_name": "TESTMB1",
        "billing_entity": "England",
        "ods_code": "X26",
        "org_code": "X26",
        "org_name": "TEST Org 1",
        "active": True,
    }
    assert (await client.get(path.format("NOSUCHMB"))).status == 404


async def test_mailbox_details_lower_case(client: TestClient) -> None:
    assert (await body_of(await client.get(f"/admin/mailbox/{MB3.lower()}")))["mailbox_id"] == MB3


async def inject(client: TestClient, **fields: str) -> str:
    body = {"mailbox_id": MB1, "code": "14", "description": "", "workflow_id": "TEST_WORKFLOW", **fields}
    response = await client.post("/messageexchange/admin/report", json=body)
    assert response.status == 200, await response.text()
    message_id = (await body_of(response))["message_id"]
    assert isinstance(message_id, str)
    return message_id


async def test_report_lands_in_inbox_and_downloads_as_report(client: TestClient, mb1: Mesh) -> None:
    original = await mb1.send_ok(MB2, b"x", extra={"mex-LocalID": "loc", "mex-Subject": "subj"})
    report_id = await inject(
        client, linked_message_id=original.lower(), local_id="loc", subject="subj", status="undeliverable"
    )
    assert await inbox_ids(mb1) == [report_id]
    response = await download(mb1, report_id)
    assert response.status == 200
    assert await response.read() == b""
    h = response.headers
    assert h["mex-MessageType"] == "REPORT"
    assert h["mex-LinkedMsgID"] == original
    assert h["mex-StatusCode"] == "14"
    assert h["mex-StatusEvent"] == "SEND"
    assert h["mex-StatusSuccess"] == "ERROR"
    assert h["mex-StatusDescription"] == "Message not collected by recipient after 5 days"
    assert h["mex-To"] == MB1
    assert h["mex-LocalID"] == "loc"
    assert h["mex-Subject"] == "NDR: subj"
    assert h["mex-MessageID"] == report_id
    assert "mex-From" not in h
    assert (await head(mb1, report_id)).headers["mex-MessageType"] == "REPORT"

    assert (await ack(mb1, report_id)).status == 200
    assert await inbox_ids(mb1) == []


async def test_error_report(client: TestClient, mb1: Mesh) -> None:
    report_id = await inject(client, status="error", code="01", description="send failed", file_name="f.dat")
    h = (await download(mb1, report_id)).headers
    assert (h["mex-StatusCode"], h["mex-StatusEvent"], h["mex-StatusDescription"]) == (
        "01",
        "TRANSFER",
        "send failed",
    )
    assert h["mex-FileName"] == "f.dat"


async def test_report_id_has_live_form(client: TestClient) -> None:
    import re

    assert re.match(MESSAGE_ID, await inject(client))


async def test_report_to_unknown_mailbox_is_404(client: TestClient) -> None:
    body = {"mailbox_id": "NOSUCHMB", "code": "14", "description": "", "workflow_id": "W"}
    assert (await client.post("/messageexchange/admin/report", json=body)).status == 404


async def test_report_missing_fields_is_400(client: TestClient) -> None:
    response = await client.post("/messageexchange/admin/report", json={"mailbox_id": MB1})
    assert response.status == 400
    locs = [d["loc"] for d in (await body_of(response))["detail"]]
    assert ["body", "code"] in locs


@pytest.mark.parametrize("prefix", ["", "/messageexchange"])
async def test_event_reaccept_after_ack(client: TestClient, mb1: Mesh, mb2: Mesh, prefix: str) -> None:
    message_id = await mb1.send_ok(MB2, b"again")
    assert (await ack(mb2, message_id)).status == 200
    assert await inbox_ids(mb2) == []
    response = await client.post(f"{prefix}/admin/message/{message_id}/event", json={"status": "accepted"})
    assert response.status == 200
    assert await response.read() == b""
    assert await inbox_ids(mb2) == [message_id]
    assert await (await download(mb2, message_id)).read() == b"again"
    assert await tracking_status(mb1, message_id) == "accepted"


async def test_event_undeliverable(client: TestClient, mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    event = {"status": "undeliverable", "code": "14", "event": "SEND", "description": "expired"}
    assert (await client.post(f"/admin/message/{message_id}/event", json=event)).status == 200
    assert await inbox_ids(mb2) == []
    assert (await download(mb2, message_id)).status == 410
    v1 = Mesh(client, MB1, accept=V1)
    body = await body_of(await track(v1, message_id))
    assert body["status"] == "Undeliverable"
    assert body["statusSuccess"] == "ERROR"
    assert body["failureDiagnostic"] == "expired"


async def test_event_unknown_message_is_404(client: TestClient) -> None:
    response = await client.post("/admin/message/20240101000000000000_ABCDEF/event", json={"status": "accepted"})
    assert response.status == 404


async def test_event_bad_status_is_400(client: TestClient, mb1: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    assert (await client.post(f"/admin/message/{message_id}/event", json={"status": "lost"})).status == 400


@pytest.mark.parametrize("prefix", ["", "/messageexchange"])
async def test_message_details(client: TestClient, mb1: Mesh, prefix: str) -> None:
    message_id = await mb1.send_ok(MB2, b"abc", extra={"mex-LocalID": "L"})
    response = await client.get(f"{prefix}/admin/message/{message_id.lower()}")
    assert response.status == 200
    body = await body_of(response)
    assert body["message_id"] == message_id
    assert body["sender"] == MB1
    assert body["recipient"] == MB2
    assert body["status"] == "Accepted"
    assert body["message_type"] == "Data"
    assert body["status_success"] == "SUCCESS"
    assert body["file_size"] == 3
    assert body["chunk_count"] == 1
    assert body["local_id"] == "L"
    assert (await client.get(f"{prefix}/admin/message/20240101000000000000_ABCDEF")).status == 404


async def test_admin_needs_no_auth_even_with_a_bad_token(client: TestClient) -> None:
    response = await client.get(f"/admin/mailbox/{MB1}", headers={"Authorization": "NHSMESH junk"})
    assert response.status == 200


# Outside demo mode ---------------------------------------------------------------------------------------


async def test_outside_demo_mode_only_over_a_store_declared_disposable(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    with pytest.raises(SettingsError, match="MESH_SANDBOX_ADMIN_DISPOSABLE_STORE"):
        settings.with_(demo=False)
    disposable = settings.with_(demo=False, sandbox_admin_disposable_store=True)
    client = await aiohttp_client(create_app(disposable))
    await client.app[DIRECTORY].add_mailbox(Mailbox("TESTBOX1", "password"))  # no demo mailboxes to reset
    assert (await client.get("/admin/mailbox/TESTBOX1")).status == 200
    assert (await client.delete("/admin/reset")).status == 200


# Admin off -----------------------------------------------------------------------------------------------


@pytest.fixture
async def plain(aiohttp_client: AiohttpClient, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings.with_(sandbox_admin=False)))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/admin/reset"),
        ("DELETE", "/admin/reset/X26ABC1"),
        ("POST", "/admin/message/20240101000000000000_ABCDEF/event"),
        ("GET", "/admin/mailbox/X26ABC1"),
        ("GET", "/admin/message/20240101000000000000_ABCDEF"),
    ],
)
async def test_admin_paths_not_served_when_off(plain: TestClient, method: str, path: str) -> None:
    assert (await plain.request(method, path, json={"status": "accepted"})).status == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/messageexchange/admin/reset"),
        ("DELETE", "/messageexchange/admin/reset/X26ABC1"),
        ("POST", "/messageexchange/admin/report"),
        ("POST", "/messageexchange/admin/message/20240101000000000000_ABCDEF/event"),
        ("GET", "/messageexchange/admin/mailbox/X26ABC1"),
        ("GET", "/messageexchange/admin/message/20240101000000000000_ABCDEF"),
        ("GET", "/messageexchange/mailbox/X26ABC1"),
    ],
)
async def test_messageexchange_admin_paths_not_served_when_off(plain: TestClient, method: str, path: str) -> None:
    """Some of these shapes match mailbox routes (e.g. the handshake of mailbox "admin"): 403, 404 or 405."""
    response = await plain.request(method, path, json={"mailbox_id": MB1})
    assert response.status in (403, 404, 405)
    assert "message" not in await body_of(response)


async def test_reset_when_off_keeps_messages(plain: TestClient) -> None:
    message_id = await Mesh(plain, MB1).send_ok(MB2, b"x")
    await plain.delete("/messageexchange/admin/reset")
    await plain.delete("/admin/reset")
    assert await inbox_ids(Mesh(plain, MB2)) == [message_id]
