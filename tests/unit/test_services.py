"""Pure rules of the services: workflow filter syntax, sandbox file import, workflow permissions (16/17)."""

from __future__ import annotations

from typing import cast

import pytest

from broker.errors import BrokerError, ErrorCode, ValidationFailed
from broker.models import Mailbox, Workflow
from broker.services.directory import Directory, SandboxFileError
from broker.services.messaging import parse_workflow_filter
from broker.store.protocol import FilterOp, MetadataStore, WorkflowFilter
from tests.unit.fakes import FakeStore


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("WF", WorkflowFilter(FilterOp.EQUALS, "WF")),
        ("!WF", WorkflowFilter(FilterOp.EQUALS, "WF", negate=True)),
        ("WF*", WorkflowFilter(FilterOp.STARTS_WITH, "WF")),
        ("!WF*", WorkflowFilter(FilterOp.STARTS_WITH, "WF", negate=True)),
        ("*X*", WorkflowFilter(FilterOp.CONTAINS, "X")),
        ("!*X*", WorkflowFilter(FilterOp.CONTAINS, "X", negate=True)),
        ("*TEST_WF*", WorkflowFilter(FilterOp.CONTAINS, "TEST_WF")),
        ("A%_B", WorkflowFilter(FilterOp.EQUALS, "A%_B")),
        ("test WF", WorkflowFilter(FilterOp.EQUALS, "test WF")),
        ("W" * 255, WorkflowFilter(FilterOp.EQUALS, "W" * 255)),
    ],
)
def test_parse_workflow_filter(text: str | None, expected: WorkflowFilter | None) -> None:
    assert parse_workflow_filter(text) == expected


@pytest.mark.parametrize("text", ["", "W", "W" * 256])
def test_parse_workflow_filter_length(text: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        parse_workflow_filter(text)
    assert raised.value.problems[0].loc == ("query", "workflow_filter")


# Sandbox import (mesh-api.md section 9.3) -----------------------------------------------------------------------

SANDBOX_MAILBOXES = """\
{"mailbox_id": "X26ABC1", "mailbox_name": "TESTMB1", "billing_entity": "England", "ods_code": "X26", "org_code": "X26", "password": "password"}
{"mailbox_id": "X26ABC2", "mailbox_name": "TESTMB2", "billing_entity": "Wales", "ods_code": "X26", "org_code": "X26", "password": "password"}

{"mailbox_id": "x26abc3", "mailbox_name": "TESTMB3", "billing_entity": "England", "ods_code": "X27", "org_code": "X27", "password": "password", "org_name": "Org 3", "active": false}
"""  # noqa: E501
SANDBOX_WORKFLOWS = """\
{"workflow_id": "TEST_WORKFLOW", "senders": ["X26ABC1"], "receivers": ["X26ABC2"]}
{"workflow_id": "TEST_WORKFLOW_ACK", "senders": ["X26ABC2"], "receivers": ["X26ABC1", "x26abc3"]}
{"workflow_id": "TEST_WORKFLOW2", "senders": ["X26ABC1"], "receivers": ["X26ABC3", "X26ABC2", "X26ABC1"], "restricted": true}
"""  # noqa: E501


def directory() -> tuple[Directory, FakeStore]:
    store = FakeStore()
    return Directory(cast(MetadataStore, store)), store


async def test_import_sandbox_canned_rows() -> None:
    service, store = directory()
    counts = await service.import_sandbox(SANDBOX_MAILBOXES.splitlines(), SANDBOX_WORKFLOWS.splitlines())
    assert counts == (3, 3)
    assert store.mailboxes == {
        "X26ABC1": Mailbox("X26ABC1", "password", "TESTMB1", "X26", "X26", "", "England"),
        "X26ABC2": Mailbox("X26ABC2", "password", "TESTMB2", "X26", "X26", "", "Wales"),
        "X26ABC3": Mailbox("X26ABC3", "password", "TESTMB3", "X27", "X27", "Org 3", "England", active=False),
    }
    assert store.workflows == {
        "TEST_WORKFLOW": Workflow("TEST_WORKFLOW", False, ("X26ABC1",), ("X26ABC2",)),
        "TEST_WORKFLOW_ACK": Workflow("TEST_WORKFLOW_ACK", False, ("X26ABC2",), ("X26ABC1", "X26ABC3")),
        "TEST_WORKFLOW2": Workflow("TEST_WORKFLOW2", True, ("X26ABC1",), ("X26ABC1", "X26ABC2", "X26ABC3")),
    }


async def test_import_sandbox_restricted_default() -> None:
    service, store = directory()
    await service.import_sandbox([], SANDBOX_WORKFLOWS.splitlines(), restricted=True)
    assert all(w.restricted for w in store.workflows.values())


@pytest.mark.parametrize(
    ("mailbox_lines", "workflow_lines", "message"),
    [
        (['{"mailbox_id": "A", "password": "p"}', "{not json"], [], "mailboxes line 2"),
        (['{"mailbox_id": "A", "password": "p"}', "", "[1, 2]"], [], "mailboxes line 3"),
        (['{"password": "p"}'], [], "mailboxes line 1: missing 'mailbox_id'"),
        (['{"mailbox_id": "A"}'], [], "mailboxes line 1: missing 'password'"),
        ([], ['{"workflow_id": "W"}', '{"senders": []}'], "workflows line 2: missing 'workflow_id'"),
        ([], ['"just a string"'], "workflows line 1"),
    ],
)
async def test_import_sandbox_names_the_bad_line_and_stores_nothing(
    mailbox_lines: list[str], workflow_lines: list[str], message: str
) -> None:
    service, store = directory()
    with pytest.raises(SandboxFileError, match=message):
        await service.import_sandbox(mailbox_lines, workflow_lines)
    assert store.mailboxes == {} and store.workflows == {}


# Workflow permissions (mesh-api.md section 7.7) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "recipient", "workflow_id", "expected"),
    [
        ("ANY", "ONE", "UNREGISTERED", None),
        ("ANY", "ONE", "OPEN", None),
        ("ALICE", "BOB", "CLOSED", None),
        ("EVE", "BOB", "CLOSED", ErrorCode.SENDER_NOT_ALLOWED),
        ("EVE", "MALLORY", "CLOSED", ErrorCode.SENDER_NOT_ALLOWED),
        ("ALICE", "MALLORY", "CLOSED", ErrorCode.WORKFLOW_NOT_REGISTERED),
        ("BOB", "ALICE", "CLOSED", ErrorCode.SENDER_NOT_ALLOWED),
    ],
)
async def test_check_permission(sender: str, recipient: str, workflow_id: str, expected: ErrorCode | None) -> None:
    service, store = directory()
    await store.put_workflow(Workflow("OPEN", False, ("ALICE",), ("BOB",)))
    await store.put_workflow(Workflow("CLOSED", True, ("ALICE",), ("BOB",)))
    if expected is None:
        await service.check_permission(sender, recipient, workflow_id)
        return
    with pytest.raises(BrokerError) as raised:
        await service.check_permission(sender, recipient, workflow_id)
    assert raised.value.code is expected
    assert (raised.value.code.spec.status, raised.value.code.spec.code) == (417, expected.spec.code)
    assert expected.spec.code in ("16", "17")
