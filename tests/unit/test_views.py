"""broker/views.py: tracking bodies per API version and the mex-* headers of a download."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import orjson
import pytest

from broker import views
from broker.models import CENTRAL_SYSTEM, Event, Message, MessageMeta, MessageType, Party, Status

T0 = datetime(2025, 6, 1, 12, 34, 56, 789012, tzinfo=UTC)
ALICE = Party("X26ABC1", "TESTMB1", "X26", "X26", "Org 1", "England")
BOB = Party("X26ABC2", "TESTMB2", "X27", "X27", "Org 2", "Wales")


def message(**overrides: object) -> Message:
    values: dict[str, object] = {
        "message_id": "20250601123456789012_ABCDEF",
        "message_type": MessageType.DATA,
        "sender": ALICE,
        "recipient": BOB,
        "workflow_id": "TEST_WORKFLOW",
        "total_chunks": 1,
        "content_encoding": "",
        "meta": MessageMeta(file_name="20250601123456789012_ABCDEF.dat"),
        "status": Status.ACCEPTED,
        "created_at": T0,
        "file_size": 15,
        "delivered_at": T0,
        "expires_at": T0 + timedelta(days=5),
        "status_at": T0,
        "events": (Event(Status.ACCEPTED, T0, "TRANSFER", "00", "Transferred to recipient mailbox"),),
    }
    values.update(overrides)
    return Message(**values)  # type: ignore[arg-type]


def test_tracking_v1_title_cases_the_status() -> None:
    for status in Status:
        body = views.tracking_v1(message(status=status))
        assert body["status"] == status.value.capitalize()
    body = views.tracking_v1(message())
    assert body["status"] == "Accepted"
    assert body["statusSuccess"] == "SUCCESS"
    assert body["messageId"] == body["dtsId"] == "20250601123456789012_ABCDEF"
    assert body["uploadTimestamp"] == "20250601123456"
    assert body["expiryTime"] == "20250606123456"
    assert body["downloadTimestamp"] == ""
    assert body["recipient"] == "X26ABC2" and body["sender"] == "X26ABC1"
    assert "failureDate" not in body and "statusCode" not in body


def test_tracking_v2_lower_cases_the_status_and_drops_nulls() -> None:
    for status in Status:
        assert views.tracking_v2(message(status=status))["status"] == status.value
    body = views.tracking_v2(message(acknowledged_at=None))
    assert body["status"] == "accepted"
    assert body["status_success"] is True
    assert body["upload_timestamp"] == "2025-06-01T12:34:56.789012"
    assert body["expiry_time"] == "2025-06-06T12:34:56.789012"
    assert None not in body.values()
    assert "local_id" not in body and "status_code" not in body


def test_tracking_response_content_types() -> None:
    v1 = views.tracking(message(), 1)
    v2 = views.tracking(message(), 2)
    assert v1.content_type == "application/json"
    assert v2.content_type == "application/vnd.mesh.v2+json"
    assert orjson.loads(v1.body)["status"] == "Accepted"  # type: ignore[arg-type]
    assert orjson.loads(v2.body)["status"] == "accepted"  # type: ignore[arg-type]


def test_tracking_of_an_undeliverable_data_message() -> None:
    failed = Event(Status.UNDELIVERABLE, T0 + timedelta(days=5), "SEND", "14", "Message not collected")
    msg = message(status=Status.UNDELIVERABLE, events=(*message().events, failed))
    v1 = views.tracking_v1(msg)
    assert (v1["status"], v1["statusSuccess"]) == ("Undeliverable", "ERROR")
    assert v1["failureDiagnostic"] == "Message not collected"
    v2 = views.tracking_v2(msg)
    assert v2["status_success"] is False and "status_code" not in v2


def test_message_headers_omit_empty_values() -> None:
    hdrs = views.message_headers(message(), 1, gzip_response=False, content_type="application/octet-stream")
    assert all(v for v in hdrs.values())
    for absent in (
        "mex-LocalID",
        "mex-PartnerID",
        "mex-Subject",
        "mex-LinkedMsgID",
        "mex-Content-Compressed",
        "mex-Content-Encrypted",
        "mex-Content-Checksum",
        "mex-Content-Type",
        "Content-Encoding",
    ):
        assert absent not in hdrs
    assert hdrs["mex-From"] == "X26ABC1"
    assert hdrs["mex-To"] == "X26ABC2"
    assert hdrs["mex-Chunk-Range"] == "1:1"
    assert hdrs["mex-Total-Chunks"] == "1"
    assert hdrs["mex-MessageType"] == "DATA"
    assert hdrs["mex-StatusCode"] == "00"
    assert hdrs["mex-StatusSuccess"] == "SUCCESS"
    assert hdrs["mex-StatusTimestamp"] == "20250601123456"
    assert hdrs["Last-Modified"] == "Sun, 01 Jun 2025 12:34:56 GMT"
    assert hdrs["Content-Type"] == "application/octet-stream"


def test_message_headers_pass_sender_metadata() -> None:
    meta = MessageMeta("subj", "loc", "partner", "f.dat", "text/csv", "md5:1", encrypted=True, compressed=True)
    hdrs = views.message_headers(
        message(meta=meta, total_chunks=3), 2, gzip_response=False, content_type="application/octet-stream"
    )
    assert hdrs["mex-Subject"] == "subj"
    assert hdrs["mex-LocalID"] == "loc"
    assert hdrs["mex-PartnerID"] == "partner"
    assert hdrs["mex-FileName"] == "f.dat"
    assert hdrs["mex-Content-Type"] == "text/csv"
    assert hdrs["mex-Content-Checksum"] == "md5:1"
    assert hdrs["mex-Content-Encrypted"] == "Y"
    assert hdrs["mex-Content-Compressed"] == "Y"
    assert hdrs["mex-Chunk-Range"] == "2:3"
    assert hdrs["mex-Total-Chunks"] == "3"


def test_gzip_response_sets_content_compressed() -> None:
    hdrs = views.message_headers(message(), 1, gzip_response=True, content_type="application/octet-stream")
    assert hdrs["mex-Content-Compressed"] == "Y"
    assert hdrs["Content-Encoding"] == "gzip"


def test_report_headers() -> None:
    error = Event(Status.ERROR, T0 + timedelta(days=5), "SEND", "14", "Message not collected", "ORIGINAL_ID")
    report = message(
        message_type=MessageType.REPORT,
        sender=CENTRAL_SYSTEM,
        recipient=ALICE,
        linked_message_id="ORIGINAL_ID",
        events=(*message().events, error),
    )
    hdrs = views.message_headers(report, 1, gzip_response=False, content_type="application/octet-stream")
    assert "mex-From" not in hdrs
    assert hdrs["mex-To"] == "X26ABC1"
    assert hdrs["mex-MessageType"] == "REPORT"
    assert hdrs["mex-LinkedMsgID"] == "ORIGINAL_ID"
    assert (hdrs["mex-StatusCode"], hdrs["mex-StatusEvent"]) == ("14", "SEND")
    assert hdrs["mex-StatusDescription"] == "Message not collected"
    assert hdrs["mex-StatusSuccess"] == "ERROR"
    assert hdrs["mex-StatusTimestamp"] == "20250606123456"


def test_download_content_type() -> None:
    typed = message(meta=MessageMeta(content_type="text/csv"))
    assert views.download_content_type(typed, 2) == "text/csv"
    assert views.download_content_type(typed, 1) == "application/octet-stream"
    assert views.download_content_type(replace(typed, total_chunks=2), 2) == "application/octet-stream"
    assert views.download_content_type(message(), 2) == "application/octet-stream"


def test_dates_formatted_by_hand_match_the_standard_library() -> None:
    # compact and http_date skip strftime and email.utils (every download's headers carry both): same text.
    rng = random.Random(18)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        at = epoch + timedelta(seconds=rng.randrange(200 * 365 * 86_400), microseconds=rng.randrange(10**6))
        assert views.compact(at) == at.strftime("%Y%m%d%H%M%S")
        assert views.http_date(at) == format_datetime(at, usegmt=True)
    assert views.compact(None) == ""


def test_http_date_of_a_time_not_in_utc_is_refused_as_before() -> None:
    with pytest.raises(ValueError):
        views.http_date(datetime(2025, 6, 1, 12, 0))  # naive: format_datetime(usegmt=True) refuses it
    with pytest.raises(ValueError):
        views.http_date(datetime(2025, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=1))))
