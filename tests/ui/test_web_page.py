"""The web page in a real browser: a file from one mailbox to another and back as acknowledged, an oversized file
refused, a lock-out, a form without its CSRF token, OpenID Connect sign-in, the keyboard alone, and an automated
accessibility check (axe-core) of every page, each page's screenshot kept for the README."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.broker_process import BrokerProcess
from tests.ui.conftest import OIDC_MAILBOXES, UPLOAD_LIMIT

BLOCKING = ("serious", "critical")
AXE_RUN = """async () => {
    const result = await axe.run(document, {resultTypes: ["violations"]});
    return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                        nodes: v.nodes.map(n => n.target.join(" "))}));
}"""


class Site:
    """One person's browser tab on the broker's web page."""

    def __init__(self, page: Any, broker: BrokerProcess, axe_source: str, screenshots: Path):
        self.page = page
        self.url = broker.url
        self.axe_source = axe_source
        self.screenshots = screenshots
        self.checked: list[str] = []

    def go(self, path: str) -> None:
        self.page.goto(f"{self.url}{path}")

    def sign_in(self, mailbox_id: str, password: str = "password") -> None:
        self.go("/ui/sign-in")
        self.page.get_by_label("Mailbox ID").fill(mailbox_id)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()

    def sign_out(self) -> None:
        self.page.get_by_role("button", name="Sign out").click()
        self.page.wait_for_url("**/ui/sign-in?done=signed-out")

    def check(self, name: str) -> None:
        """Screenshot the page as `name`.png and run axe-core on it: no serious or critical violation."""
        self.page.screenshot(path=str(self.screenshots / f"{name}.png"), full_page=True)
        # evaluate() runs outside the page's Content-Security-Policy, which forbids injected inline script.
        self.page.evaluate(self.axe_source)
        violations = self.page.evaluate(AXE_RUN)
        blocking = [v for v in violations if v["impact"] in BLOCKING]
        assert blocking == [], f"{name}: {blocking}"
        self.checked.append(name)

    def sent_rows(self) -> int:
        self.go("/ui/sent")
        return int(self.page.locator("table.table tbody tr").count())


@pytest.fixture
def site(browser: Any, broker: BrokerProcess, axe_source: str, screenshots: Path) -> Iterator[Site]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 800})
    try:
        yield Site(context.new_page(), broker, axe_source, screenshots)
    finally:
        context.close()


@pytest.fixture
def no_script_site(browser: Any, broker: BrokerProcess, axe_source: str, screenshots: Path) -> Iterator[Site]:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1100, "height": 800})
    try:
        yield Site(context.new_page(), broker, axe_source, screenshots)
    finally:
        context.close()


def test_a_file_goes_to_another_mailbox_is_downloaded_acknowledged_and_tracked(site: Site, tmp_path: Path) -> None:
    page = site.page
    site.go("/ui/sign-in")
    site.check("sign-in")
    site.sign_in("X26ABC1")
    page.wait_for_url("**/ui/inbox")
    page.get_by_role("link", name="Send a file").click()
    site.check("send")

    data = bytes(range(256)) * 1000 + "résumé ✓".encode()
    upload = tmp_path / "vaccinations-november.csv"
    upload.write_bytes(data)
    page.get_by_label("To").fill("X26ABC2")
    page.get_by_label("Workflow ID").select_option("TEST_WORKFLOW")
    page.get_by_label("Subject").fill("Monthly vaccination report")
    page.get_by_label("Local reference").fill("VAX-2026-11")
    page.get_by_label("File").set_input_files(str(upload))
    page.get_by_role("button", name="Send").click()
    page.wait_for_url("**/ui/sent?sent=*")
    message_id = page.url.rsplit("=", 1)[-1]
    assert page.get_by_text("Delivered: waiting to be downloaded").first.is_visible()
    site.check("sent")
    site.sign_out()
    site.check("signed-out")

    site.sign_in("X26ABC2")
    page.wait_for_url("**/ui/inbox")
    row = page.get_by_role("row").filter(has_text="vaccinations-november.csv")
    assert row.get_by_text("Monthly vaccination report").is_visible()
    site.check("inbox")
    with page.expect_download() as downloading:
        row.get_by_role("link", name="Download").click()
    download = downloading.value
    assert download.suggested_filename == "vaccinations-november.csv"
    assert hashlib.sha256(Path(download.path()).read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    row.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url("**/ui/inbox?done=acknowledged")
    assert page.get_by_text("The message was acknowledged").is_visible()
    site.sign_out()

    site.sign_in("X26ABC1")
    page.get_by_role("link", name="Sent").click()
    sent_row = page.get_by_role("row").filter(has_text=message_id)
    assert re.search(r"Acknowledged on \d+ \w+ \d{4}", sent_row.inner_text())


def test_a_file_over_the_limit_is_refused_with_a_clear_message_and_nothing_stored(
    site: Site, no_script_site: Site, tmp_path: Path
) -> None:
    big = tmp_path / "too-big.bin"
    big.write_bytes(b"\0" * (UPLOAD_LIMIT + 1))
    message = "The selected file must be smaller than 1 MB"
    site.sign_in("X26ABC1")
    before = site.sent_rows()

    for tab in (site, no_script_site):
        if tab is no_script_site:
            tab.sign_in("X26ABC1")
        tab.go("/ui/send")
        page = tab.page
        page.get_by_label("To").fill("X26ABC2")
        page.get_by_label("Workflow ID").select_option("TEST_WORKFLOW")
        page.get_by_label("File").set_input_files(str(big))
        # With scripting on, the page checks the size before sending a byte; without, the server reads the
        # upload to its end, drops it and answers with the same message.
        posted: list[str] = []
        page.on("request", lambda request, posted=posted: posted.append(request.method))
        page.get_by_role("button", name="Send").click()
        summary = page.locator(".error-summary")
        summary.wait_for()
        assert message in summary.inner_text()
        assert page.title().startswith("Error: ")
        assert ("POST" in posted) is (tab is no_script_site), posted  # with scripting, not a byte was sent
    no_script_site.page.screenshot(
        path=str(no_script_site.screenshots / "send-too-large-no-script.png"), full_page=True
    )
    # The server's own refusal page, reached past the script's check (submit() fires no submit event), checked.
    site.page.evaluate("document.querySelector('form[data-upload]').submit()")
    site.page.wait_for_load_state()
    assert message in site.page.locator(".error-summary").inner_text()
    site.check("send-too-large")
    assert site.sent_rows() == before


def test_a_wrong_password_then_a_lock_out(site: Site) -> None:
    page = site.page
    site.sign_in("X26GP02B", "not-the-password")
    assert "The mailbox ID or password is not right" in page.locator(".error-summary").inner_text()
    assert page.title() == "Error: Sign in to MESH - MESH"
    site.check("sign-in-error")
    site.sign_in("X26GP02B", "not-the-password")
    site.sign_in("X26GP02B", "not-the-password")
    assert "Too many failed sign-ins" in page.locator(".error-summary").inner_text()
    site.sign_in("X26GP02B", "password")  # the right password is not even checked during the lock
    assert "Too many failed sign-ins" in page.locator(".error-summary").inner_text()
    # The summary links to the field, and the field names its error.
    page.get_by_role("link", name=re.compile("Too many failed sign-ins")).click()
    assert page.evaluate("document.activeElement.id") == "mailbox_id"


def test_a_form_posted_without_its_csrf_token_is_refused(site: Site, tmp_path: Path) -> None:
    page = site.page
    site.sign_in("X26ABC1")
    before = site.sent_rows()
    site.go("/ui/send")
    small = tmp_path / "note.txt"
    small.write_text("hello")
    page.get_by_label("To").fill("X26ABC2")
    page.get_by_label("Workflow ID").select_option("TEST_WORKFLOW")
    page.get_by_label("File").set_input_files(str(small))
    page.evaluate("document.querySelector('form[data-upload] input[name=csrf_token]').remove()")
    page.get_by_role("button", name="Send").click()
    page.get_by_role("heading", name="This form has expired").wait_for()
    site.check("form-expired")
    assert site.sent_rows() == before


def test_the_keyboard_alone_signs_in_and_reaches_every_page(site: Site) -> None:
    page = site.page
    site.go("/ui/sign-in")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    page.keyboard.press("Enter")  # past the header, straight to the form
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "mailbox_id"
    page.keyboard.type("X26ABC3")
    page.keyboard.press("Tab")
    page.keyboard.type("password")
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/inbox")
    for label, path in (("Send a file", "/ui/send"), ("Sent", "/ui/sent"), ("Find a mailbox", "/ui/lookup")):
        for _ in range(30):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.textContent.trim()") == label:
                break
        page.keyboard.press("Enter")
        page.wait_for_url(f"**{path}")


def test_every_page_passes_the_accessibility_check(site: Site) -> None:
    page = site.page
    site.sign_in("X26ABC1")
    site.go("/ui/send")
    page.get_by_role("button", name="Send").click()  # nothing filled in: every error at once
    page.locator(".error-summary").wait_for()
    site.check("send-errors")
    site.go("/ui/lookup?ods_code=A99901&workflow_id=TOC_FHIR_IP_DISCH")
    site.check("lookup")
    site.go("/ui/send")
    page.get_by_text("Send to a patient's GP practice", exact=True).click()  # opens the patient's fields
    page.get_by_label("NHS number").fill("9990000042")
    page.get_by_label("Day").fill("30")
    page.get_by_label("Month").fill("11")
    page.get_by_label("Year").fill("2001")
    page.get_by_label("Surname").fill("Taylor")
    page.get_by_label("Workflow ID").select_option("TOC_FHIR_IP_DISCH")
    page.get_by_label("File").set_input_files(
        files=[{"name": "discharge.txt", "mimeType": "text/plain", "buffer": b"x"}]
    )
    page.get_by_role("button", name="Send").click()
    page.wait_for_url("**/ui/sent?sent=*")
    site.go("/ui/inbox")
    assert page.get_by_text("No GP practice mailbox was found for the patient on this workflow.").is_visible()
    site.check("inbox-report")
    site.go("/ui/no-such-page")
    site.check("not-found")


def test_sign_in_through_the_identity_provider_and_choose_a_mailbox(site: Site) -> None:
    page = site.page
    site.go("/ui/sign-in")
    page.get_by_role("link", name=re.compile("Sign in with")).click()
    page.wait_for_url("**/ui/mailbox")
    site.check("choose-mailbox")
    assert [page.get_by_label(m).is_visible() for m in OIDC_MAILBOXES] == [True, True]
    page.get_by_label("X26ABC3").check()
    page.get_by_role("button", name="Use this mailbox").click()
    page.wait_for_url("**/ui/inbox")
    assert "X26ABC3" in page.locator(".header-mailbox").inner_text()
