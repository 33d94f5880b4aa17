"""The official `mesh-client` sending to a patient's GP by NHS number (GPPROVIDER addressing, demo data)."""

from __future__ import annotations

from mesh_client import MeshClient

from tests.compat.conftest import MakeClient

WORKFLOW = "GPCONNECT_SEND_DOCUMENT"
PRACTICE = "X26GP01"


def test_practice_mailbox_receives_a_message_addressed_by_nhs_number(alice: MeshClient, mesh: MakeClient) -> None:
    practice = mesh(PRACTICE)
    message_id = alice.send_message(
        "GPPROVIDER_9990000018_19670126_Smith", b"<document/>", workflow_id=WORKFLOW, subject="discharge"
    )

    assert practice.list_messages() == [message_id]
    message = practice.retrieve_message(message_id)
    assert (message.sender, message.recipient, message.workflow_id) == ("X26ABC1", PRACTICE, WORKFLOW)
    assert message.read() == b"<document/>"
    message.acknowledge()
    assert practice.list_messages() == []
    assert alice.track_message(message_id)["status"] == "acknowledged"
    assert alice.list_messages() == []


def test_failed_trace_arrives_as_a_report(alice: MeshClient) -> None:
    message_id = alice.send_message("GPPROVIDER_9990000050_19670126_Smith", b"<document/>", workflow_id=WORKFLOW)

    (report_id,) = alice.list_messages()
    report = alice.retrieve_message(report_id)
    assert report.message_type == "REPORT"
    assert report.mex_header("linkedmsgid") == message_id
    assert report.mex_header("statuscode") == "EPL-153"
    assert report.mex_header("statussuccess") == "ERROR"
    report.acknowledge()
    assert alice.track_message(message_id)["status"] == "error"
