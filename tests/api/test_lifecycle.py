"""The message lifecycle through the API with a moved clock: inbox expiry and NDRs (mesh-api.md sections 7.5
and 7.6), deactivated recipients, abandoned uploads, retention purge and leftover blobs, on both backends."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.app import create_app
from broker.blobs.protocol import BlobNotFound
from broker.clock import ManualClock
from broker.keys import BLOBS, HOUSEKEEPING, METRICS, STORE
from broker.settings import Settings
from broker.store.protocol import Box
from tests.api.helpers import (
    MB1,
    MB2,
    MESSAGE_ID,
    ack,
    body_of,
    download,
    head,
    inbox_ids,
    send_chunk,
    start_chunked,
    track,
    tracking_status,
)
from tests.conftest import BACKENDS, production_settings
from tests.support import V1, V2, Mesh

EXPIRY = timedelta(days=5)
SECOND = timedelta(seconds=1)
NDR_TEXT = "Message not collected by recipient after 5 days"


@pytest.fixture
def clock() -> ManualClock:
    # Starts at the real time: blob stores date their objects by the wall clock, the sweep compares with this one.
    return ManualClock(datetime.now(UTC))


#: Bodies of at most 4 bytes stay in their rows, longer ones go to the blob store: the tests below cover both.
INLINE_LIMIT = 4


@pytest.fixture(params=BACKENDS)
async def app(request: pytest.FixtureRequest, settings: Settings, clock: ManualClock) -> web.Application:
    settings = settings.with_(inline_chunk_bytes=INLINE_LIMIT)
    if request.param == "postgres+s3":
        settings = await production_settings(settings, request)
    return create_app(settings, clock=clock)


@pytest.fixture
def mb1(client: TestClient, clock: ManualClock) -> Mesh:
    return Mesh(client, MB1, clock=clock)


@pytest.fixture
def mb2(client: TestClient, clock: ManualClock) -> Mesh:
    return Mesh(client, MB2, clock=clock)


async def housekeeping(app: web.Application) -> None:
    await app[HOUSEKEEPING].run_once()


def metric(app: web.Application, name: str, **labels: str) -> float:
    value = app[METRICS].registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def chunk_keys(app: web.Application, message_id: str, total: int) -> list[str]:
    keys = []
    for number in range(1, total + 1):
        _, chunk = await app[STORE].get_message_and_chunk(message_id, number)
        assert chunk is not None
        keys.append(chunk.blob_key)
    return keys


async def blob_exists(app: web.Application, key: str) -> bool:
    try:
        await app[BLOBS].size(key)
    except BlobNotFound:
        return False
    return True


async def send_original(mb1: Mesh) -> str:
    return await mb1.send_ok(
        MB2, b"never collected", extra={"mex-LocalID": "local-42", "mex-Subject": "Discharge summary"}
    )


async def the_report(mb1: Mesh) -> str:
    (report_id,) = await inbox_ids(mb1)
    return report_id


async def test_unacknowledged_message_becomes_undeliverable_with_an_ndr_to_its_sender(
    app: web.Application, mb1: Mesh, mb2: Mesh, clock: ManualClock
) -> None:
    original = await send_original(mb1)
    sent_at = clock.now()

    clock.advance(EXPIRY - SECOND)
    await housekeeping(app)
    assert await inbox_ids(mb1) == []
    assert await tracking_status(mb1, original) == "accepted"

    clock.advance(2 * SECOND)
    await housekeeping(app)
    report_id = await the_report(mb1)
    assert re.fullmatch(MESSAGE_ID, report_id)
    assert report_id != original

    response = await download(mb1, report_id)
    assert response.status == 200
    assert await response.read() == b""
    headers = response.headers
    assert headers["mex-MessageType"] == "REPORT"
    assert headers["mex-MessageID"] == report_id
    assert headers["mex-LinkedMsgID"] == original
    assert headers["mex-To"] == MB1
    assert "mex-From" not in headers
    assert headers["mex-WorkflowID"] == "TEST_WORKFLOW"
    assert headers["mex-LocalID"] == "local-42"
    assert headers["mex-Subject"] == "Discharge summary"
    assert headers["mex-StatusCode"] == "14"
    assert headers["mex-StatusEvent"] == "SEND"
    assert headers["mex-StatusSuccess"] == "ERROR"
    assert headers["mex-StatusDescription"] == NDR_TEXT
    assert headers["mex-StatusTimestamp"] == clock.now().strftime("%Y%m%d%H%M%S")
    assert headers["mex-StatusTimestamp"] != sent_at.strftime("%Y%m%d%H%M%S")
    assert headers["mex-AddressType"] == "ALL"
    assert headers["Content-Length"] == "0"

    # The recipient can no longer see or fetch it; the sender's tracking says why.
    assert await inbox_ids(mb2) == []
    assert (await download(mb2, original)).status == 410
    assert (await head(mb2, original)).status == 410
    v2 = await body_of(await track(mb1, original))
    assert (v2["status"], v2["status_success"]) == ("undeliverable", False)
    v1_response = await mb1.client.get(
        f"{mb1.base}/outbox/tracking", params={"messageID": original}, headers=mb1.headers(accept=V1)
    )
    v1 = await body_of(v1_response)
    assert (v1["status"], v1["statusSuccess"], v1["failureDiagnostic"]) == ("Undeliverable", "ERROR", NDR_TEXT)
    assert v1["linkedMsgId"] == report_id

    assert metric(app, "mesh_messages_expired_total", workflow="TEST_WORKFLOW", reason="expired") == 1

    # The report is acknowledged like any message; another pass sends no second report.
    assert (await ack(mb1, report_id)).status == 200
    await housekeeping(app)
    assert await inbox_ids(mb1) == []


async def test_an_unread_report_expires_without_a_report_of_its_own(
    app: web.Application, mb1: Mesh, clock: ManualClock
) -> None:
    original = await send_original(mb1)
    clock.advance(EXPIRY + SECOND)
    await housekeeping(app)
    report_id = await the_report(mb1)

    clock.advance(EXPIRY + SECOND)
    await housekeeping(app)
    assert await inbox_ids(mb1) == []
    report = await app[STORE].get_message(report_id)
    assert report is not None and report.status.value == "undeliverable"
    messages, _ = await app[STORE].list_messages("", Box.INBOX, clock.now() - 3 * EXPIRY, 10)
    assert messages == []  # nothing addressed to the central system
    assert metric(app, "mesh_messages_expired_total", workflow="TEST_WORKFLOW", reason="expired") == 2
    assert (await tracking_status(mb1, original)) == "undeliverable"


async def test_acknowledged_messages_never_expire(
    app: web.Application, mb1: Mesh, mb2: Mesh, clock: ManualClock
) -> None:
    message_id = await send_original(mb1)
    assert (await ack(mb2, message_id)).status == 200
    clock.advance(EXPIRY + SECOND)
    await housekeeping(app)
    assert await inbox_ids(mb1) == []
    assert await tracking_status(mb1, message_id) == "acknowledged"


async def test_messages_to_a_deactivated_mailbox_are_undeliverable_at_once(
    app: web.Application, mb1: Mesh, mb2: Mesh
) -> None:
    message_id = await send_original(mb1)
    recipient = await app[STORE].get_mailbox(MB2)
    assert recipient is not None
    await app[STORE].put_mailbox(replace(recipient, active=False))

    await housekeeping(app)
    report = await download(mb1, await the_report(mb1))
    assert report.headers["mex-LinkedMsgID"] == message_id
    assert report.headers["mex-StatusCode"] == "14"
    assert report.headers["mex-StatusDescription"] == "Message was not collected as the mailbox is deactivated"
    assert await tracking_status(mb1, message_id) == "undeliverable"
    assert metric(app, "mesh_messages_expired_total", workflow="TEST_WORKFLOW", reason="deactivated") == 1


async def test_an_abandoned_upload_fails_and_its_chunks_are_deleted(
    app: web.Application, mb1: Mesh, mb2: Mesh, clock: ManualClock
) -> None:
    message_id = await start_chunked(mb1, MB2, b"part one", 3)
    assert (await send_chunk(mb1, message_id, 2, 3, b"two")).status == 202  # inline
    keys = await chunk_keys(app, message_id, 2)
    assert keys[0] and not keys[1]
    keys = keys[:1]

    clock.advance(timedelta(hours=24) - SECOND)
    await housekeeping(app)
    assert await tracking_status(mb1, message_id) == "uploading"

    clock.advance(2 * SECOND)
    await housekeeping(app)
    assert await tracking_status(mb1, message_id) == "error"
    for key in keys:
        assert not await blob_exists(app, key)
    assert (await send_chunk(mb1, message_id, 3, 3, b"too late")).status == 423
    assert (await download(mb2, message_id)).status == 410
    assert await inbox_ids(mb1) == []  # an abandoned upload is the sender's own doing: no report
    assert metric(app, "mesh_uploads_abandoned_total") == 1


async def test_retention_deletes_rows_and_blobs(app: web.Application, mb1: Mesh, mb2: Mesh, clock: ManualClock) -> None:
    collected = await mb1.send_ok(MB2, b"collected")
    assert (await ack(mb2, collected)).status == 200
    inline = await mb1.send_ok(MB2, b"tiny")
    assert (await ack(mb2, inline)).status == 200
    uncollected = await send_original(mb1)
    keys = await chunk_keys(app, collected, 1) + await chunk_keys(app, uncollected, 1)
    assert all([await blob_exists(app, key) for key in keys])
    assert await chunk_keys(app, inline, 1) == [""]

    clock.advance(timedelta(days=30) - SECOND)
    await housekeeping(app)
    report_id = await the_report(mb1)  # the uncollected one expired on the way
    assert await app[STORE].get_message(collected) is not None

    clock.advance(2 * SECOND)
    await housekeeping(app)
    for message_id in (collected, inline, uncollected):
        assert await app[STORE].get_message(message_id) is None
        assert (await track(mb1, message_id)).status == 404
    for key in keys:
        assert not await blob_exists(app, key)
    # The report is younger than the retention period, so it stays.
    assert await inbox_ids(mb1) == [report_id]
    assert metric(app, "mesh_messages_purged_total") == 3


async def test_leftover_blobs_are_deleted_after_the_grace_period(
    app: web.Application, mb1: Mesh, clock: ManualClock
) -> None:
    message_id = await mb1.send_ok(MB2, b"kept bytes")
    (kept,) = await chunk_keys(app, message_id, 1)
    leftover = "20250101/20250101000000000000_ABCDEF/1.dead"
    await app[BLOBS].put(leftover, _one(b"bytes whose row never came"))

    await housekeeping(app)
    assert await blob_exists(app, leftover)

    # The blob store dated the leftover by the wall clock, which setting up PostgreSQL and the bucket may have moved
    # on by seconds since this clock started: catch up with it, then pass the grace.
    clock.set(max(clock.now(), datetime.now(UTC)) + timedelta(hours=1) + SECOND)
    await housekeeping(app)
    assert not await blob_exists(app, leftover)
    assert await blob_exists(app, kept)
    assert metric(app, "mesh_orphan_blobs_deleted_total", reason="leftover") == 1


async def test_housekeeping_runs_are_counted(app: web.Application, client: TestClient, clock: ManualClock) -> None:
    before = metric(app, "mesh_housekeeping_runs_total", outcome="success")
    await housekeeping(app)
    assert metric(app, "mesh_housekeeping_runs_total", outcome="success") == before + 1
    assert metric(app, "mesh_housekeeping_last_success_timestamp_seconds") == clock.now().timestamp()
    assert metric(app, "mesh_housekeeping_duration_seconds_count") >= 1


async def _one(data: bytes):  # type: ignore[no-untyped-def]
    yield data


# Rich inbox and outbox -----------------------------------------------------------------------------------------


async def rich(mesh: Mesh, box: str, query: str = "") -> tuple[int, dict]:  # type: ignore[type-arg]
    response = await mesh.client.get(f"{mesh.base}/{box}/rich{query}", headers=mesh.headers())
    return response.status, await body_of(response)


async def test_rich_inbox_lists_every_status_newest_first(
    app: web.Application, mb1: Mesh, mb2: Mesh, clock: ManualClock
) -> None:
    sent = []
    for n in range(3):
        clock.advance(SECOND)
        sent.append(await mb1.send_ok(MB2, b"x", extra={"mex-LocalID": f"L{n}"}))
    assert (await ack(mb2, sent[0])).status == 200
    await start_chunked(mb1, MB2, b"half", 2)  # uploading: not in anyone's inbox yet

    status, body = await rich(mb2, "inbox")
    assert status == 200
    assert [m["message_id"] for m in body["messages"]] == sent[::-1]
    newest = body["messages"][0]
    assert newest == {
        "message_id": sent[2],
        "expiry_timestamp": (clock.now() + EXPIRY).replace(tzinfo=None).isoformat(timespec="microseconds"),
        "local_id": "L2",
        "message_type": "DATA",
        "recipient": MB2,
        "recipient_name": newest["recipient_name"],
        "sender": MB1,
        "sender_name": newest["sender_name"],
        "sent_date": clock.now().replace(tzinfo=None).isoformat(timespec="microseconds"),
        "status": "accepted",
        "status_code": "00",
        "workflow_id": "TEST_WORKFLOW",
        "total_chunks": 1,
    }
    assert body["messages"][-1]["status"] == "acknowledged"
    assert body["valid_at"] == clock.now().replace(tzinfo=None).isoformat(timespec="microseconds")
    assert body["links"] == {"self": f"/messageexchange/{MB2}/inbox/rich"}


async def test_rich_inbox_pages_and_filters_by_start_time(mb1: Mesh, mb2: Mesh, clock: ManualClock) -> None:
    sent = []
    for _ in range(5):
        clock.advance(SECOND)
        sent.append(await mb1.send_ok(MB2, b"x"))
    seen: list[str] = []
    query = "?max_results=2"
    while True:
        status, body = await rich(mb2, "inbox", query)
        assert status == 200
        seen += [m["message_id"] for m in body["messages"]]
        if "next" not in body["links"]:
            break
        query = body["links"]["next"].split("/inbox/rich", 1)[1]
        assert "max_results=2" in query
    assert seen == sent[::-1]

    since = (clock.now() - SECOND).replace(tzinfo=None).isoformat()
    status, body = await rich(mb2, "inbox", f"?start_time={since}")
    assert [m["message_id"] for m in body["messages"]] == sent[:2:-1]


async def test_rich_outbox_shows_the_senders_messages_and_blanks_not_nulls(
    app: web.Application, mb1: Mesh, mb2: Mesh, clock: ManualClock
) -> None:
    first = await mb1.send_ok(MB2, b"x")
    clock.advance(SECOND)
    second = await mb1.send_ok(MB2, b"y", extra={"mex-LocalID": "mine"})
    clock.advance(EXPIRY)
    await housekeeping(app)

    status, body = await rich(mb1, "outbox")
    assert status == 200
    assert [m["message_id"] for m in body["messages"]] == [second, first]
    assert body["messages"][1]["local_id"] == ""
    assert [(m["status"], m["status_code"]) for m in body["messages"]] == [("undeliverable", "14")] * 2
    status, body = await rich(mb2, "outbox")
    assert body["messages"] == []


@pytest.mark.parametrize(
    ("box", "query"),
    [
        ("inbox", "?max_results=0"),
        ("inbox", "?max_results=2001"),
        ("outbox", "?max_results=9"),
        ("inbox", "?start_time=yesterday"),
        ("outbox", "?continue_from=not-a-token-of-ours-at-all"),
    ],
)
async def test_rich_lists_validate_their_arguments(mb1: Mesh, box: str, query: str) -> None:
    status, body = await rich(mb1, box, query)
    assert status == 400
    assert body["detail"][0]["loc"][0] == "query"


async def test_rich_outbox_accepts_up_to_5000_and_echoes_it(mb1: Mesh) -> None:
    status, body = await rich(mb1, "outbox", "?max_results=5000")
    assert status == 200
    assert body["links"] == {"self": f"/messageexchange/{MB1}/outbox/rich?max_results=5000"}


async def test_rich_outbox_serves_at_most_100_a_page_whatever_max_results_says(mb1: Mesh) -> None:
    sent = {await mb1.send_ok(MB2, b"x") for _ in range(101)}
    status, body = await rich(mb1, "outbox", "?max_results=5000")
    assert status == 200
    first_page = [m["message_id"] for m in body["messages"]]
    assert len(first_page) == 100
    status, body = await rich(mb1, "outbox", body["links"]["next"].split("/outbox/rich", 1)[1])
    assert status == 200 and "next" not in body["links"]
    assert set(first_page) | {m["message_id"] for m in body["messages"]} == sent


async def test_rich_routes_are_not_message_ids(mb1: Mesh) -> None:
    response = await mb1.client.get(f"{mb1.base}/inbox/rich", headers=mb1.headers(accept=V2))
    assert response.headers["Content-Type"].startswith(V2)
