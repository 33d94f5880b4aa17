"""Black box: a broker process with a two-second inbox expiry shows the lifecycle through the HTTP API alone
(the NDR in the sender's inbox, tracking undeliverable, the recipient's download 410)."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from broker.auth import make_token
from tests.integration.broker_process import SHARED_KEY, BrokerProcess

V2 = "application/vnd.mesh.v2+json"
ALICE, BOB = "X26ABC1", "X26ABC2"
#: Expiry plus a housekeeping interval, with room for a loaded machine.
WAIT_SECONDS = 20.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    env = {
        "MESH_SHARED_KEY": SHARED_KEY,
        "MESH_DEMO": "on",
        "MESH_INBOX_EXPIRY": "2s",
        "MESH_HOUSEKEEPING_INTERVAL": "1s",
    }
    with BrokerProcess(data_dir=tmp_path / "data", env=env) as started:
        yield started


class Caller:
    """Raw HTTP as one mailbox: a fresh NHSMESH token per request."""

    def __init__(self, broker: BrokerProcess, mailbox: str):
        self.url = f"{broker.url}/messageexchange/{mailbox}"
        self.mailbox = mailbox
        self.nonce = str(uuid.uuid4())
        self.count = itertools.count()
        self.session = requests.Session()
        self.session.trust_env = False  # the machine's proxy variables must not reach 127.0.0.1

    def __call__(self, method: str, path: str = "", **kwargs: Any) -> requests.Response:
        token = make_token(
            SHARED_KEY.encode(),
            self.mailbox,
            "password",
            nonce=self.nonce,
            nonce_count=next(self.count),
            at=datetime.now(UTC),
        )
        headers = {"Authorization": token, "Accept": V2, **kwargs.pop("headers", {})}
        return self.session.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)


def test_an_uncollected_message_expires_and_its_sender_gets_a_report(broker: BrokerProcess) -> None:
    alice, bob = Caller(broker, ALICE), Caller(broker, BOB)
    sent = alice(
        "POST",
        "/outbox",
        data=b"nobody reads this",
        headers={"mex-To": BOB, "mex-WorkflowID": "TEST_WORKFLOW", "mex-LocalID": "bb-1", "mex-Subject": "Results"},
    )
    assert sent.status_code == 202, sent.text
    original = sent.json()["message_id"]
    assert bob("GET", "/inbox").json()["messages"] == [original]

    deadline = time.monotonic() + WAIT_SECONDS
    reports: list[str] = []
    while not reports and time.monotonic() < deadline:
        time.sleep(0.2)
        reports = alice("GET", "/inbox").json()["messages"]
    assert len(reports) == 1, f"no report within {WAIT_SECONDS}s:\n{broker.output()}"

    report = alice("GET", f"/inbox/{reports[0]}")
    assert report.status_code == 200
    assert report.content == b""
    assert report.headers["mex-MessageType"] == "REPORT"
    assert report.headers["mex-LinkedMsgID"] == original
    assert report.headers["mex-To"] == ALICE
    assert "mex-From" not in report.headers
    assert (report.headers["mex-LocalID"], report.headers["mex-Subject"]) == ("bb-1", "Results")
    assert (report.headers["mex-StatusCode"], report.headers["mex-StatusEvent"]) == ("14", "SEND")
    assert report.headers["mex-StatusSuccess"] == "ERROR"
    assert report.headers["mex-StatusDescription"] == "Message not collected by recipient after 5 days"

    assert alice("GET", "/outbox/tracking", params={"messageID": original}).json()["status"] == "undeliverable"
    assert bob("GET", f"/inbox/{original}").status_code == 410
    assert bob("GET", "/inbox").json()["messages"] == []
    assert alice("PUT", f"/inbox/{reports[0]}/status/acknowledged").status_code == 200
    assert alice("GET", "/inbox").json()["messages"] == []
    assert (
        '"action": "message_undeliverable"' in broker.output() or '"action":"message_undeliverable"' in broker.output()
    )
