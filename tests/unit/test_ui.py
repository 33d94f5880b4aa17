"""The web page's pure parts: lock-out back-off, upload limits by address, wording, the send form, file names,
and its settings (checked at start, every one documented)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.models import Event, Message, MessageMeta, MessageType, Party, Status, Workflow
from broker.settings import Settings, SettingsError
from broker.ui import forms, wording
from broker.ui.config import LockoutPolicy, UiConfig
from broker.ui.handlers.inbox import content_disposition

ROOT = Path(__file__).resolve().parents[2]
MINUTE = timedelta(minutes=1)


def test_the_lock_starts_at_the_threshold_and_doubles_up_to_its_most() -> None:
    policy = LockoutPolicy(failures=3, base=MINUTE, most=10 * MINUTE, quiet=15 * MINUTE)
    assert [policy.lock_for(n) for n in (1, 2)] == [None, None]
    assert [policy.lock_for(n) for n in (3, 4, 5, 6, 7)] == [MINUTE, 2 * MINUTE, 4 * MINUTE, 8 * MINUTE, 10 * MINUTE]
    assert policy.lock_for(10_000) == 10 * MINUTE  # no overflow however long the attack


def test_the_health_network_gets_the_larger_upload_limit() -> None:
    config = UiConfig.from_settings(
        Settings(ui_max_upload_bytes=50, ui_network_max_upload_bytes=100, ui_network_ranges="10.0.0.0/8, fd00::/8")
    )
    assert config.upload_limit("10.1.2.3") == 100
    assert config.upload_limit("fd00::1") == 100
    assert config.upload_limit("192.168.1.1") == 50
    assert config.upload_limit("") == 50  # no peer address (a Unix socket): the smaller limit
    lowered = UiConfig.from_settings(Settings(max_request_bytes=1000, max_message_bytes=1000))
    assert lowered.upload_limit("127.0.0.1") == 1000  # never more than the API takes


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"ui_max_upload_bytes": 200, "ui_network_max_upload_bytes": 100}, "MESH_UI_MAX_UPLOAD_BYTES"),
        ({"ui_network_ranges": "10.0.0.0/8,not-a-range"}, "MESH_UI_NETWORK_RANGES"),
        ({"ui_session_idle": timedelta(hours=9)}, "MESH_UI_SESSION_IDLE"),
        ({"ui_lockout_failures": 0}, "MESH_UI_LOCKOUT_FAILURES"),
        ({"ui_lockout_base": timedelta(hours=2)}, "MESH_UI_LOCKOUT_BASE"),
        ({"ui_lockout_quiet": timedelta(0)}, "MESH_UI_LOCKOUT_QUIET"),
        ({"ui_oidc_issuer": "https://idp.example"}, "MESH_UI_OIDC_CLIENT_ID"),
        ({"ui_oidc_issuer": "idp.example", "ui_oidc_client_id": "x"}, "MESH_UI_OIDC_ISSUER"),
    ],
)
def test_ui_settings_are_checked_at_start(changes: dict[str, object], complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint):
        Settings(**changes)  # type: ignore[arg-type]


def test_ui_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {"MESH_UI": "off", "MESH_UI_SESSION_IDLE": "20m", "MESH_UI_LOCKOUT_FAILURES": "7", "MESH_UI_OIDC_USERS": "u"}
    )
    assert (settings.ui, settings.ui_session_idle, settings.ui_lockout_failures) == (False, 20 * MINUTE, 7)
    assert settings.ui_oidc_users == Path("u")


def test_every_ui_setting_is_documented() -> None:
    documented = set(re.findall(r"`(MESH_UI\w*)`", (ROOT / "docs" / "settings.md").read_text()))
    names = [name for name in Settings.__dataclass_fields__ if name == "ui" or name.startswith("ui_")]
    fields = {f"MESH_{name.upper()}" for name in names}
    assert fields <= documented, sorted(fields - documented)


def _message(status: Status, *events: Event, kind: MessageType = MessageType.DATA, linked: str = "") -> Message:
    at = datetime(2026, 11, 30, 14, 5, tzinfo=UTC)
    return Message(
        "M1", kind, Party("X26ABC1"), Party("X26ABC2"), "WF", 1, "", MessageMeta(), status, at,
        acknowledged_at=at if status is Status.ACKNOWLEDGED else None, linked_message_id=linked, events=events,
    )  # fmt: skip


def test_reports_and_statuses_are_said_in_words() -> None:
    at = datetime(2026, 11, 30, 14, 5, tzinfo=UTC)
    ndr = _message(
        Status.ACCEPTED,
        Event(Status.UNDELIVERABLE, at, "SEND", "14", "Message not collected by recipient after 5 days", "M0"),
        Event(Status.ACCEPTED, at),
        kind=MessageType.REPORT,
        linked="M0",
    )
    assert wording.report_summary(ndr) == (
        "Your message M0 was not delivered. The recipient did not download it within 5 days."
    )
    trace = Event(Status.ERROR, at, "SEND", "EPL-153", "NHS number not found")
    expected = "Not delivered: No patient with this NHS number was found."
    assert wording.tracking(_message(Status.ERROR, trace)) == expected
    assert wording.tracking(_message(Status.ACKNOWLEDGED)) == "Acknowledged on 30 November 2026, 2:05pm (UTC)"
    assert wording.reason("99", "Something new") == "Something new"  # a code without words of its own


def test_sizes_and_times_read_as_people_write_them() -> None:
    assert [wording.size_text(n) for n in (0, 1, 999, 1000, 1500, 50_000_000, 123_456_789)] == [
        "0 bytes", "1 byte", "999 bytes", "1 KB", "1.5 KB", "50 MB", "123 MB",
    ]  # fmt: skip
    assert wording.when_text(datetime(2026, 1, 2, 0, 7, tzinfo=UTC)) == "2 January 2026, 12:07am (UTC)"
    assert wording.when_text(None) == ""


def test_the_patient_fields_make_a_gpprovider_address() -> None:
    form = forms.SendForm(
        {"nhs_number": "999 000 0018", "dob_day": "26", "dob_month": "1", "dob_year": "1967", "surname": "Smith"}
    )
    assert form.recipient() == "GPPROVIDER_9990000018_19670126_Smith" and form.errors == []
    both = forms.SendForm({"to": "X26ABC2", "surname": "Smith"})
    assert both.recipient() == "" and [e.field for e in both.errors] == ["to"]
    assert forms.SendForm({"to": " x26abc2 "}).recipient() == "X26ABC2"


def test_the_page_offers_the_workflows_a_mailbox_may_send() -> None:
    workflows = [
        Workflow("MINE", senders=("X26ABC1",)),
        Workflow("OTHERS", senders=("X26ABC2",)),
        Workflow("OPEN"),
        Workflow("CLOSED", restricted=True),
        Workflow("GP", receivers=("X26GP01",), patient_addressing=True),
    ]
    assert forms.offered_workflows(workflows, "X26ABC1") == ["MINE", "OPEN", "GP"]


def test_a_download_keeps_the_files_own_name() -> None:
    assert content_disposition("report.csv") == "attachment; filename=\"report.csv\"; filename*=UTF-8''report.csv"
    assert content_disposition('C:\\Users\\me\\a "b";c.txt') == (
        "attachment; filename=\"a _b__c.txt\"; filename*=UTF-8''a%20%22b%22%3Bc.txt"
    )
    assert content_disposition("résumé.pdf").endswith("filename*=UTF-8''r%C3%A9sum%C3%A9.pdf")
