"""The web page (broker/ui) through aiohttp's test client on both backends: sign-in, lock-out, sessions, CSRF,
sending within the size limit, downloading, acknowledging, reports in words, headers, logs and metrics."""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.app import create_app
from broker.clock import ManualClock
from broker.keys import METRICS, STORE
from broker.settings import Settings
from broker.store.protocol import Box
from tests.api.ui_helpers import WebUser, error_summary
from tests.conftest import BACKENDS, production_settings
from tests.support import V2, Mesh

AiohttpClient = Callable[..., Awaitable[TestClient]]
LIMIT = 200_000  # the page's upload limit in these tests (MESH_UI_MAX_UPLOAD_BYTES)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=BACKENDS)
async def web_app(request: pytest.FixtureRequest, settings: Settings, clock: ManualClock) -> web.Application:
    settings = settings.with_(
        ui_max_upload_bytes=LIMIT,
        ui_network_max_upload_bytes=2 * LIMIT,
        ui_discard_limit_bytes=10 * LIMIT,
        ui_lockout_failures=3,
        ui_lockout_address_failures=6,
        ui_lockout_base=timedelta(minutes=1),
        ui_lockout_max=timedelta(minutes=10),
        inline_chunk_bytes=1024,
    )
    if request.param == "postgres+s3":
        settings = await production_settings(settings, request)
    return create_app(settings, clock=clock)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, web_app: web.Application) -> TestClient:
    return await aiohttp_client(web_app)


@pytest.fixture
async def alice(client: TestClient) -> WebUser:
    """X26ABC1, signed in."""
    user = WebUser(client)
    assert (await user.sign_in("X26ABC1")).status == 303
    return user


async def send_form(user: WebUser, data: bytes, *, csrf: bool = True, **fields: str) -> aiohttp.ClientResponse:
    token = await user.csrf("/ui/send")
    form = aiohttp.FormData()
    if csrf:
        form.add_field("csrf_token", token)
    values = {"to": "X26ABC2", "workflow_id": "TEST_WORKFLOW", "subject": "Vaccinations", "local_id": "ref-1"}
    for name, value in {**values, **fields}.items():
        form.add_field(name, value)
    form.add_field("file", data, filename="report.csv", content_type="text/csv")
    return await user.post("/ui/send", form)


async def outbox_of(web_app: web.Application, mailbox_id: str, clock: ManualClock) -> list[str]:
    messages, _ = await web_app[STORE].list_messages(mailbox_id, Box.OUTBOX, clock.now() - timedelta(days=1), 100)
    return [m.message_id for m in messages]


# Signing in ------------------------------------------------------------------------------------------------------


async def test_sign_in_sets_a_strict_secure_session_cookie_and_shows_the_inbox(client: TestClient) -> None:
    user = WebUser(client)
    response = await user.sign_in("x26abc1")
    assert response.status == 303 and response.headers["Location"] == "/ui/inbox"
    cookie = response.cookies["mesh_ui_session"]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/ui"
    status, text = await user.page("/ui/inbox")
    assert status == 200 and '<h1 class="heading-l">Inbox</h1>' in text and "X26ABC1" in text


async def test_a_page_without_a_session_sends_the_person_to_sign_in_and_back(client: TestClient) -> None:
    user = WebUser(client)
    response = await user.get("/ui/sent?from=x")
    location = urlsplit(response.headers["Location"])
    assert (
        response.status == 303
        and location.path == "/ui/sign-in"
        and parse_qs(location.query)["next"] == ["/ui/sent?from=x"]
    )
    token = await user.csrf("/ui/sign-in?next=%2Fui%2Fsent")
    form = {"csrf_token": token, "mailbox_id": "X26ABC1", "password": "password"}
    assert (await user.post("/ui/sign-in?next=%2Fui%2Fsent", form)).headers["Location"] == "/ui/sent"
    evil = await user.post(
        "/ui/sign-in?next=https%3A%2F%2Fevil.example", {**form, "csrf_token": await user.csrf("/ui/sign-in")}
    )
    assert evil.headers["Location"] == "/ui/inbox"


async def test_a_wrong_password_is_refused_with_one_message_for_unknown_mailboxes_too(client: TestClient) -> None:
    user = WebUser(client)
    for mailbox_id in ("X26ABC1", "NOSUCHBOX"):
        response = await user.sign_in(mailbox_id, "wrong")
        assert response.status == 400
        assert error_summary(await response.text()) == ["The mailbox ID or password is not right"]
    assert "mesh_ui_session" not in user.cookies


async def test_repeated_failures_lock_the_mailbox_with_back_off(client: TestClient, clock: ManualClock) -> None:
    user = WebUser(client)
    assert [(await user.sign_in("X26ABC1", "wrong")).status for _ in range(2)] == [400, 400]
    third = await user.sign_in("X26ABC1", "wrong")
    assert third.status == 429
    assert error_summary(await third.text()) == ["Too many failed sign-ins. Wait 1 minute, then try again"]
    # Locked: even the right password is not checked.
    locked = await user.sign_in("X26ABC1")
    assert locked.status == 429 and "mesh_ui_session" not in user.cookies
    clock.advance(timedelta(seconds=61))
    fourth = await user.sign_in("X26ABC1", "wrong")  # the count goes on: the lock doubles
    assert fourth.status == 429 and "Wait 2 minutes" in await fourth.text()
    clock.advance(timedelta(minutes=2, seconds=1))
    assert (await user.sign_in("X26ABC1")).status == 303
    # A success clears the mailbox's count: one wrong password is again just that.
    assert (await WebUser(client).sign_in("X26ABC1", "wrong")).status == 400


async def test_failures_from_one_address_lock_it_out_across_mailboxes(client: TestClient) -> None:
    user = WebUser(client)
    for mailbox_id in ("X26ABC1", "X26ABC2", "X26ABC3", "X26GP01", "X26GP02A"):
        assert (await user.sign_in(mailbox_id, "wrong")).status == 400
    assert (await user.sign_in("X26ABC1", "wrong")).status == 429  # the address's sixth failure
    assert (await user.sign_in("X26GP02B")).status == 429  # a mailbox never tried, from the same address


async def test_an_inactive_mailbox_cannot_sign_in(client: TestClient, web_app: web.Application) -> None:
    mailbox = await web_app[STORE].get_mailbox("X26ABC3")
    assert mailbox is not None
    await web_app[STORE].put_mailbox(replace(mailbox, active=False))
    response = await WebUser(client).sign_in("X26ABC3")
    assert response.status == 403 and "This mailbox is not active" in await response.text()


# Sessions ----------------------------------------------------------------------------------------------------------


async def test_a_session_ends_after_idling_and_after_its_lifetime(alice: WebUser, clock: ManualClock) -> None:
    for _ in range(4):  # in use every 10 minutes: the idle limit (15) is never reached
        clock.advance(timedelta(minutes=10))
        assert (await alice.get("/ui/inbox")).status == 200
    clock.advance(timedelta(minutes=16))
    assert (await alice.get("/ui/inbox")).status == 303
    assert (await alice.sign_in("X26ABC1")).status == 303
    for _ in range(8 * 6):  # busy all day: the absolute limit (8 h) ends it all the same
        clock.advance(timedelta(minutes=10))
        if (await alice.get("/ui/inbox")).status != 200:
            break
    assert clock.now() and (await alice.get("/ui/inbox")).status == 303


async def test_sign_out_ends_the_session_for_good(alice: WebUser) -> None:
    cookie = alice.cookies["mesh_ui_session"]
    token = await alice.csrf("/ui/inbox")
    response = await alice.post("/ui/sign-out", {"csrf_token": token})
    assert response.status == 303 and response.headers["Location"] == "/ui/sign-in?done=signed-out"
    assert "mesh_ui_session" not in alice.cookies
    alice.cookies["mesh_ui_session"] = cookie  # a copy kept by someone else is worth nothing now
    assert (await alice.get("/ui/inbox")).status == 303
    _status, text = await alice.page("/ui/sign-in?done=signed-out")
    assert "You have signed out." in text


# CSRF ------------------------------------------------------------------------------------------------------------


async def test_forms_without_their_csrf_token_are_refused(
    alice: WebUser, web_app: web.Application, clock: ManualClock
) -> None:
    response = await send_form(alice, b"x" * 100, csrf=False)
    assert response.status == 403 and "This form has expired" in await response.text()
    assert await outbox_of(web_app, "X26ABC1", clock) == []
    wrong = await alice.post("/ui/sign-out", {"csrf_token": "not-the-token"})
    assert wrong.status == 403 and (await alice.get("/ui/inbox")).status == 200  # still signed in
    stranger = WebUser(alice.client)
    await stranger.csrf("/ui/sign-in")  # a sign-in cookie, but the form carries another token
    forged = await stranger.post(
        "/ui/sign-in", {"csrf_token": "forged", "mailbox_id": "X26ABC1", "password": "password"}
    )
    assert forged.status == 403 and "mesh_ui_session" not in stranger.cookies


# Sending, downloading, acknowledging -------------------------------------------------------------------------------


async def test_a_file_goes_from_one_mailbox_to_another_and_is_acknowledged(client: TestClient, alice: WebUser) -> None:
    data = bytes(range(256)) * 400  # 102,400 bytes: past the inline threshold, into the blob store
    response = await send_form(alice, data)
    assert response.status == 303, await response.text()
    message_id = response.headers["Location"].removeprefix("/ui/sent?sent=")
    _status, sent = await alice.page(response.headers["Location"])
    assert message_id in sent and "Delivered: waiting to be downloaded" in sent and "ref-1" in sent

    bob = WebUser(client)
    await bob.sign_in("X26ABC2")
    _status, inbox = await bob.page("/ui/inbox")
    assert "report.csv" in inbox and "Vaccinations" in inbox and "102 KB" in inbox and "1 message waiting" in inbox
    download = await bob.get(f"/ui/inbox/{message_id}/download")
    assert download.status == 200 and await download.read() == data
    assert download.headers["Content-Disposition"] == "attachment; filename=\"report.csv\"; filename*=UTF-8''report.csv"
    assert download.headers["Cache-Control"] == "no-store"
    token = await bob.csrf("/ui/inbox")
    acknowledged = await bob.post(f"/ui/inbox/{message_id}/acknowledge", {"csrf_token": token})
    assert acknowledged.headers["Location"] == "/ui/inbox?done=acknowledged"
    _status, inbox = await bob.page("/ui/inbox?done=acknowledged")
    assert "The message was acknowledged" in inbox and "Your inbox is empty." in inbox
    _status, sent = await alice.page("/ui/sent")
    assert re.search(r"Acknowledged on \d+ \w+ \d{4}", sent)


async def test_a_stranger_cannot_download_another_mailboxs_message(client: TestClient, alice: WebUser) -> None:
    message_id = (await send_form(alice, b"private")).headers["Location"].removeprefix("/ui/sent?sent=")
    carol = WebUser(client)
    await carol.sign_in("X26ABC3")
    response = await carol.get(f"/ui/inbox/{message_id}/download")
    assert response.status == 403 and "text/html" in response.headers["Content-Type"]


async def test_gzip_and_chunked_messages_download_whole_and_decoded(client: TestClient) -> None:
    mb1 = Mesh(client, "X26ABC1", accept=V2)
    first, last = bytes(range(256)) * 2000, b"0123456789" * 30_000
    gz = {"Content-Encoding": "gzip"}  # each chunk a gzip member of its own, as MESH clients compress them
    message_id = await mb1.send_ok("X26ABC2", gzip.compress(first), extra={**gz, "mex-Chunk-Range": "1:2"})
    second = await client.post(
        f"{mb1.base}/outbox/{message_id}/2",
        data=gzip.compress(last),
        headers=mb1.headers({**gz, "mex-Chunk-Range": "2:2"}),
    )
    assert second.status == 202, await second.text()
    bob = WebUser(client)
    await bob.sign_in("X26ABC2")
    response = await bob.get(f"/ui/inbox/{message_id}/download")
    assert response.status == 200 and await response.read() == first + last


async def test_sending_refusals_are_shown_against_their_fields(
    alice: WebUser, web_app: web.Application, clock: ManualClock
) -> None:
    response = await send_form(alice, b"data", to="NOSUCHBOX")
    assert response.status == 400
    assert error_summary(await response.text()) == [
        "There is no active mailbox with the ID NOSUCHBOX",
        "Choose the file again",
    ]
    missing = await send_form(alice, b"data", to="", workflow_id="")
    assert error_summary(await missing.text())[:2] == [
        "Enter the mailbox ID to send to, or the patient's details",
        "Choose a workflow",
    ]
    not_offered = await send_form(alice, b"data", workflow_id="TEST_WORKFLOW_ACK")
    assert "Choose one of the workflows your mailbox may send" in error_summary(await not_offered.text())
    empty = await send_form(alice, b"")
    assert error_summary(await empty.text()) == ["The selected file is empty"]
    assert await outbox_of(web_app, "X26ABC1", clock) == []


async def test_a_file_over_the_limit_is_refused_clearly_and_nothing_is_stored(
    alice: WebUser, web_app: web.Application, clock: ManualClock, settings: Settings
) -> None:
    for size in (LIMIT + 1, 3 * LIMIT):  # caught while streaming; caught by its Content-Length at once
        response = await send_form(alice, b"z" * size)
        assert response.status == 413
        text = await response.text()
        assert error_summary(text) == ["The selected file must be smaller than 200 KB"]
        assert '<input class="file-upload input-error" id="file"' in text
    assert (await send_form(alice, b"z" * LIMIT)).status == 303  # exactly the limit is fine
    assert len(await outbox_of(web_app, "X26ABC1", clock)) == 1
    blob_dir = settings.blob_dir
    if not web_app[STORE].__class__.__name__.startswith("Postgres"):
        assert len([p for p in blob_dir.rglob("*") if p.is_file()]) == 1  # the refused ones left no bytes behind


async def test_the_health_network_gets_the_larger_limit(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    wide = settings.with_(
        ui_max_upload_bytes=LIMIT, ui_network_max_upload_bytes=2 * LIMIT, ui_network_ranges="127.0.0.0/8"
    )
    user = WebUser(await aiohttp_client(create_app(wide)))
    await user.sign_in("X26ABC1")
    assert "smaller than 400 KB" in (await user.page("/ui/send"))[1]
    assert (await send_form(user, b"z" * (LIMIT + 1))).status == 303


async def test_a_failed_gp_trace_comes_back_as_a_report_in_words(alice: WebUser) -> None:
    response = await send_form(
        alice,
        b"discharge summary",
        to="",
        nhs_number="9990000042",
        dob_day="30",
        dob_month="11",
        dob_year="2001",
        surname="Taylor",
        workflow_id="TOC_FHIR_IP_DISCH",
    )
    assert response.status == 303, error_summary(await response.text())
    _status, inbox = await alice.page("/ui/inbox")
    assert "Report" in inbox and "was not delivered" in inbox
    assert "No GP practice mailbox was found for the patient on this workflow." in inbox
    invalid = await send_form(
        alice, b"x", to="", nhs_number="1234567890", dob_day="31", dob_month="2", dob_year="2001", surname=""
    )
    assert error_summary(await invalid.text()) == [
        "Enter a valid 10-digit NHS number",
        "Enter the patient's date of birth as a real date",
        "Enter the patient's surname",
        "Choose the file again",
    ]


async def test_endpoint_lookup_finds_receiving_mailboxes(alice: WebUser) -> None:
    status, text = await alice.page("/ui/lookup?ods_code=a99901&workflow_id=TOC_FHIR_IP_DISCH")
    assert status == 200 and "1 mailbox found" in text and "X26GP01" in text
    status, text = await alice.page("/ui/lookup?ods_code=&workflow_id=")
    assert status == 400 and error_summary(text) == ["Enter an ODS code", "Enter a workflow ID"]


# Headers, logs, metrics ------------------------------------------------------------------------------------------


async def test_every_page_carries_the_security_headers(alice: WebUser) -> None:
    for path in ("/ui/sign-in", "/ui/inbox", "/ui/send", "/ui/sent", "/ui/lookup", "/ui/no-such-page"):
        response = await alice.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert response.headers["Cache-Control"] == "no-store", path
        assert response.headers["X-Frame-Options"] == "DENY" and response.headers["X-Content-Type-Options"] == "nosniff"
        assert "text/html" in response.headers["Content-Type"], path
    assert (await alice.get("/ui/no-such-page")).status == 404


async def test_requests_are_logged_with_mailbox_and_action_never_the_file(
    alice: WebUser, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="broker.ui"):
        await send_form(alice, b"secret patient file", subject="Mrs Smith's letter")
    lines = [r for r in caplog.records if r.name == "broker.ui"]
    sent = [r for r in lines if getattr(r, "action", "") == "ui_send"]
    assert len(sent) == 1 and sent[0].mailbox == "X26ABC1" and sent[0].status == 303 and sent[0].message_id
    everything = " ".join(str(vars(r)) for r in lines)
    assert "report.csv" not in everything and "secret patient file" not in everything and "Smith" not in everything


async def test_sign_ins_uploads_and_downloads_are_counted(client: TestClient, alice: WebUser) -> None:
    await WebUser(client).sign_in("X26ABC1", "wrong")
    message_id = (await send_form(alice, b"abc")).headers["Location"].removeprefix("/ui/sent?sent=")
    await send_form(alice, b"z" * (LIMIT + 1))
    bob = WebUser(client)
    await bob.sign_in("X26ABC2")
    await bob.get(f"/ui/inbox/{message_id}/download")
    value = client.app[METRICS].registry.get_sample_value
    assert value("mesh_ui_sign_ins_total", {"method": "password", "outcome": "success"}) == 2
    assert value("mesh_ui_sign_ins_total", {"method": "password", "outcome": "failure"}) == 1
    assert value("mesh_ui_uploads_total", {"outcome": "sent"}) == 1
    assert value("mesh_ui_uploads_total", {"outcome": "too_large"}) == 1
    assert value("mesh_ui_downloads_total") == 1
