"""mesh-sandbox's admin and test endpoints (reset, inject report, append event), for suites written against it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from broker.clock import SYSTEM_CLOCK, Clock
from broker.errors import BrokerError, ErrorCode
from broker.models import Event, Mailbox, Message, Party, Status
from broker.services.reports import NDR_EXPIRED, Reports
from broker.store.protocol import AdminStore, MailboxLookup, MessageStore


class SandboxStore(MailboxLookup, MessageStore, AdminStore, Protocol):
    """What the sandbox's administration routes read and change."""


@dataclass(frozen=True, slots=True)
class ReportRequest:
    mailbox_id: str
    code: str
    description: str
    workflow_id: str
    subject: str = ""
    local_id: str = ""
    status: str = "undeliverable"
    file_name: str = ""
    linked_message_id: str = ""


class SandboxAdmin:
    def __init__(self, store: SandboxStore, reports: Reports, *, clock: Clock = SYSTEM_CLOCK):
        self._store = store
        self._reports = reports
        self._clock = clock

    def now(self) -> datetime:
        return self._clock.now()

    async def reset(self, mailbox_id: str | None = None) -> None:
        """Forget all messages, or those to and from one mailbox (404 if it is unknown)."""
        if mailbox_id is not None:
            await self.mailbox(mailbox_id)
        await self._store.delete_mailbox_messages(mailbox_id)

    async def mailbox(self, mailbox_id: str) -> Mailbox:
        mailbox = await self._store.get_mailbox(mailbox_id.upper())
        if mailbox is None:
            raise BrokerError(ErrorCode.NOT_FOUND)
        return mailbox

    async def message(self, message_id: str) -> Message:
        message = await self._store.get_message(message_id.upper())
        if message is None:
            raise BrokerError(ErrorCode.NOT_FOUND)
        return message

    async def inject_report(self, request: ReportRequest) -> str:
        """Place a REPORT in a mailbox's inbox with the sandbox's NDR or error semantics."""
        recipient = await self.mailbox(request.mailbox_id)
        now = self._clock.now()
        if request.status.lower() == "undeliverable":
            error = Event(
                Status.UNDELIVERABLE,
                now,
                "SEND",
                request.code or "14",
                request.description or NDR_EXPIRED,
                request.linked_message_id,
            )
            subject = f"NDR: {request.subject}" if request.subject else "NDR"
            file_name = ""
        else:
            error = Event(Status.ERROR, now, "TRANSFER", request.code, request.description, request.linked_message_id)
            subject, file_name = request.subject, request.file_name
        return await self._reports.deliver(
            Party.of(recipient),
            error,
            workflow_id=request.workflow_id,
            subject=subject,
            local_id=request.local_id,
            file_name=file_name,
        )

    async def append_event(self, message_id: str, event: Event) -> None:
        if not await self._store.append_event(message_id.upper(), event):
            raise BrokerError(ErrorCode.NOT_FOUND)
