"""The official `mesh-client` lists, reads and acknowledges a non-delivery REPORT the broker made itself:
a broker process over HTTPS with a one-second inbox expiry, on both backends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from mesh_client import MeshClient

from tests.conftest import BACKENDS, production_environment
from tests.integration.broker_process import SHARED_KEY, BrokerProcess, server_certificates

ALICE, BOB = "X26ABC1", "X26ABC2"
WAIT_SECONDS = 20.0


@pytest.fixture(autouse=True)
def _reset() -> None:
    """This module runs its own broker, so the shared broker's per-test reset (and start) is not wanted."""


@pytest.fixture(params=BACKENDS)
def expiring_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerProcess]:
    env = {
        "MESH_SHARED_KEY": SHARED_KEY,
        "MESH_DEMO": "on",
        "MESH_INBOX_EXPIRY": "1s",
        "MESH_HOUSEKEEPING_INTERVAL": "1s",
    }
    if request.param == "postgres+s3":
        env.update(production_environment(request))
    certificates = server_certificates(trustme.CA(), tmp_path / "tls")
    with BrokerProcess(data_dir=tmp_path / "data", env=env, certificates=certificates) as broker:
        yield broker


def client(broker: BrokerProcess, mailbox: str) -> MeshClient:
    return MeshClient(broker.url, mailbox, "password", shared_key=SHARED_KEY.encode(), verify=broker.ca)


def test_mesh_client_lists_reads_and_acknowledges_a_non_delivery_report(expiring_broker: BrokerProcess) -> None:
    with client(expiring_broker, ALICE) as alice:
        original = alice.send_message(BOB, b"uncollected", workflow_id="TEST_WORKFLOW", local_id="ref-7", subject="Hi")

        deadline = time.monotonic() + WAIT_SECONDS
        listed: list[str] = []
        while not listed and time.monotonic() < deadline:
            time.sleep(0.2)
            listed = alice.list_messages()
        assert len(listed) == 1, f"no report within {WAIT_SECONDS}s:\n{expiring_broker.output()}"

        report = alice.retrieve_message(listed[0])
        assert report.message_type == "REPORT"
        assert report.mex_header("linkedmsgid") == original
        assert report.mex_header("statuscode") == "14"
        assert report.mex_header("statusevent") == "SEND"
        assert report.mex_header("statussuccess") == "ERROR"
        assert report.mex_header("statusdescription") == "Message not collected by recipient after 5 days"
        assert report.sender is None
        assert report.recipient == ALICE
        assert (report.workflow_id, report.local_id, report.subject) == ("TEST_WORKFLOW", "ref-7", "Hi")
        assert report.read() == b""
        report.acknowledge()

        assert alice.list_messages() == []
        assert alice.track_message(original)["status"] == "undeliverable"
