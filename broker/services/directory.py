"""Mailboxes and workflows: administration, sandbox imports, demo data, permissions and endpoint lookup."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import date
from typing import Any, Protocol

import orjson

from broker.clock import SYSTEM_CLOCK, Clock
from broker.errors import BrokerError, ErrorCode
from broker.models import Mailbox, Patient, Workflow
from broker.store.protocol import DirectoryStore, PatientStore

#: mesh-sandbox's canned mailboxes and workflows (mesh-api.md section 9.3), seeded in demo mode.
DEMO_MAILBOXES = (
    Mailbox("X26ABC1", "password", "TESTMB1", "X26", "X26", "TEST Org 1", "England"),
    Mailbox("X26ABC2", "password", "TESTMB2", "X26", "X26", "TEST Org 2", "Wales"),
    Mailbox("X26ABC3", "password", "TESTMB3", "X27", "X27", "TEST Org 3", "England"),
)
DEMO_WORKFLOWS = (
    Workflow("TEST_WORKFLOW", senders=("X26ABC1",), receivers=("X26ABC2",)),
    Workflow("TEST_WORKFLOW_ACK", senders=("X26ABC2",), receivers=("X26ABC1", "X26ABC3")),
    Workflow("TEST_WORKFLOW2", senders=("X26ABC1",), receivers=("X26ABC1", "X26ABC2", "X26ABC3")),
)

#: The workflows MESH accepts GPPROVIDER patient addressing on (mesh-ecosystem.md section 4).
PATIENT_ADDRESSING_WORKFLOWS = (
    "TOC_FHIR_IP_DISCH",
    "TOC_FHIR_MH_DISCH",
    "TOC_FHIR_EC_DISCH",
    "TOC_FHIR_OP_ATTEN",
    "TOC_OUTP_ATT_DMS",
    "GPFED_CONSULT_REPORT",
    "GPFED_CONSULT_REPORT_ACK",
    "GPCONNECT_UPDATE_RECORD",
    "GPCONNECT_UPDATE_RECORD_ACK",
    "GPCONNECT_SEND_DOCUMENT",
)
#: Demo GP practices: A99901 has one mailbox on every patient-addressed workflow, A99902 two (so a trace
#: there ends in EPL-150), A99903 none (EPL-151).
DEMO_GP_MAILBOXES = (
    Mailbox("X26GP01", "password", "DEMO PRACTICE ONE", "A99901", "A99901", "Demo Practice One", "England"),
    Mailbox("X26GP02A", "password", "DEMO PRACTICE TWO A", "A99902", "A99902", "Demo Practice Two", "England"),
    Mailbox("X26GP02B", "password", "DEMO PRACTICE TWO B", "A99902", "A99902", "Demo Practice Two", "England"),
)
DEMO_GP_WORKFLOWS = tuple(
    Workflow(workflow_id, receivers=tuple(m.mailbox_id for m in DEMO_GP_MAILBOXES), patient_addressing=True)
    for workflow_id in PATIENT_ADDRESSING_WORKFLOWS
)
#: Synthetic patients: NHS numbers from the 999 test range (never issued to real people), valid check digits.
DEMO_PATIENTS = (
    Patient("9990000018", date(1967, 1, 26), "Smith", "A99901"),
    Patient("9990000026", date(1985, 7, 14), "O'Brien-Núñez", "A99901"),
    Patient("9990000034", date(1990, 3, 2), "Jones", "A99902"),
    Patient("9990000042", date(2001, 11, 30), "Taylor", "A99903"),
)


class DirectoryServiceStore(DirectoryStore, PatientStore, Protocol):
    """The directory, and the demo patients seeded beside the demo mailboxes."""


class SandboxFileError(ValueError):
    """A line of a sandbox JSONL file could not be read; the message names the file and line."""


class Directory:
    def __init__(self, store: DirectoryServiceStore, *, clock: Clock = SYSTEM_CLOCK):
        self._store = store
        self._clock = clock

    async def record_handshake(self, mailbox: Mailbox, client: str) -> None:
        """Keep the last connection time and client of a mailbox (the handshake's live semantics)."""
        await self._store.record_handshake(mailbox.mailbox_id, client[:300], self._clock.now())

    async def add_mailbox(self, mailbox: Mailbox) -> Mailbox:
        normalised = replace(mailbox, mailbox_id=mailbox.mailbox_id.strip().upper())
        if not normalised.mailbox_id or ":" in normalised.mailbox_id or " " in normalised.mailbox_id:
            raise ValueError(f"invalid mailbox ID {mailbox.mailbox_id!r}: no spaces or colons")
        if not normalised.password:
            raise ValueError("a mailbox needs a password")
        await self._store.put_mailbox(normalised)
        return normalised

    async def change_password(self, mailbox_id: str, password: str) -> Mailbox:
        mailbox = await self._existing(mailbox_id)
        if not password:
            raise ValueError("a mailbox needs a password")
        updated = replace(mailbox, password=password)
        await self._store.put_mailbox(updated)
        return updated

    async def set_active(self, mailbox_id: str, active: bool) -> Mailbox:
        updated = replace(await self._existing(mailbox_id), active=active)
        await self._store.put_mailbox(updated)
        return updated

    async def list_mailboxes(self) -> list[Mailbox]:
        return await self._store.list_mailboxes()

    async def list_workflows(self) -> list[Workflow]:
        return await self._store.list_workflows()

    async def _existing(self, mailbox_id: str) -> Mailbox:
        mailbox = await self._store.get_mailbox(mailbox_id.strip().upper())
        if mailbox is None:
            raise LookupError(f"no mailbox {mailbox_id.upper()}")
        return mailbox

    async def add_workflow(self, workflow: Workflow) -> Workflow:
        workflow_id = workflow.workflow_id.strip()
        if not workflow_id:
            raise ValueError("a workflow needs an ID")
        normalised = Workflow(
            workflow_id,
            workflow.restricted,
            tuple(sorted({m.strip().upper() for m in workflow.senders if m.strip()})),
            tuple(sorted({m.strip().upper() for m in workflow.receivers if m.strip()})),
            workflow.patient_addressing,
        )
        await self._store.put_workflow(normalised)
        return normalised

    async def seed_demo(self) -> bool:
        """Seed the sandbox's demo mailboxes and workflows, and the GP routing demo (practices, patient-addressed
        workflows, synthetic patients), into an empty store; False if it had mailboxes."""
        if await self._store.count_mailboxes():
            return False
        for mailbox in DEMO_MAILBOXES + DEMO_GP_MAILBOXES:
            await self.add_mailbox(mailbox)
        for workflow in DEMO_WORKFLOWS + DEMO_GP_WORKFLOWS:
            await self.add_workflow(workflow)
        await self._store.put_patients(DEMO_PATIENTS)
        return True

    async def import_sandbox(
        self, mailbox_lines: Iterable[str], workflow_lines: Iterable[str] = (), *, restricted: bool = False
    ) -> tuple[int, int]:
        """Load mesh-sandbox's mailboxes.jsonl and workflows.jsonl; returns (mailboxes, workflows)."""
        mailboxes = [_sandbox_mailbox(row, n) for n, row in _jsonl(mailbox_lines, "mailboxes")]
        workflows = [_sandbox_workflow(row, n, restricted) for n, row in _jsonl(workflow_lines, "workflows")]
        for mailbox in mailboxes:
            await self.add_mailbox(mailbox)
        for workflow in workflows:
            await self.add_workflow(workflow)
        return len(mailboxes), len(workflows)

    async def check_permission(self, sender: str, recipient: str, workflow_id: str) -> None:
        """A restricted workflow admits only its senders (else 16) sending to its receivers (else 17)."""
        workflow = await self._store.get_workflow(workflow_id)
        if workflow is None or not workflow.restricted:
            return
        if sender not in workflow.senders:
            raise BrokerError(ErrorCode.SENDER_NOT_ALLOWED)
        if recipient not in workflow.receivers:
            raise BrokerError(ErrorCode.WORKFLOW_NOT_REGISTERED)

    async def endpoint_lookup(self, ods_code: str, workflow_id: str) -> list[Mailbox]:
        if not ods_code.strip():
            raise BrokerError(ErrorCode.ODS_MISSING)
        if not workflow_id.strip():
            raise BrokerError(ErrorCode.WORKFLOW_MISSING)
        return await self._store.receivers(workflow_id, ods_code)

    async def workflow_search(self, workflow_id: str) -> list[Mailbox]:
        if not workflow_id.strip():
            raise BrokerError(ErrorCode.WORKFLOW_MISSING)
        return await self._store.receivers(workflow_id)


def _jsonl(lines: Iterable[str], what: str) -> Iterable[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise SandboxFileError(f"{what} line {number}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise SandboxFileError(f"{what} line {number}: expected a JSON object")
        yield number, row


def _sandbox_mailbox(row: dict[str, Any], number: int) -> Mailbox:
    try:
        return Mailbox(
            mailbox_id=str(row["mailbox_id"]),
            password=str(row["password"]),
            mailbox_name=str(row.get("mailbox_name") or ""),
            ods_code=str(row.get("ods_code") or ""),
            org_code=str(row.get("org_code") or ""),
            org_name=str(row.get("org_name") or ""),
            billing_entity=str(row.get("billing_entity") or ""),
            active=bool(row.get("active", True)),
        )
    except KeyError as exc:
        raise SandboxFileError(f"mailboxes line {number}: missing {exc.args[0]!r}") from None


def _sandbox_workflow(row: dict[str, Any], number: int, restricted: bool) -> Workflow:
    try:
        return Workflow(
            workflow_id=str(row["workflow_id"]),
            restricted=bool(row.get("restricted", restricted)),
            senders=tuple(str(m) for m in row.get("senders") or ()),
            receivers=tuple(str(m) for m in row.get("receivers") or ()),
        )
    except KeyError as exc:
        raise SandboxFileError(f"workflows line {number}: missing {exc.args[0]!r}") from None
