"""REPORT messages: a status report from the central system mailbox placed in a mailbox's inbox.

Non-delivery reports (expiry, deactivated recipient), failed GP traces and the sandbox's injected
reports are all built here, so every REPORT has the same shape (mesh-api.md section 7.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.clock import SYSTEM_CLOCK, Clock
from broker.ids import new_message_id
from broker.models import CENTRAL_SYSTEM, Chunk, Event, Message, MessageMeta, MessageType, Party, Status
from broker.store.protocol import MessageStore, NonDelivery

#: The live service's NDR wording (mesh-api.md section 7.6), kept whatever MESH_INBOX_EXPIRY is: clients match it.
NDR_EXPIRED = "Message not collected by recipient after 5 days"
#: The live variant of code 14 for a recipient mailbox that was deactivated (mesh-api.md section 6.2).
NDR_DEACTIVATED = "Message was not collected as the mailbox is deactivated"
NDR_CODE, NDR_EVENT = "14", "SEND"


@dataclass(frozen=True, slots=True)
class PreparedReport:
    """A REPORT built but not stored: its row and its one chunk, an empty body kept inline in the row (a REPORT
    never touches the blob store, so building one does no I/O and dropping one leaves nothing behind)."""

    message: Message
    chunk: Chunk


class Reports:
    def __init__(self, store: MessageStore, *, inbox_expiry: timedelta, clock: Clock = SYSTEM_CLOCK):
        self._store = store
        self._inbox_expiry = inbox_expiry
        self._clock = clock

    async def deliver(
        self,
        recipient: Party,
        error: Event,
        *,
        workflow_id: str,
        subject: str = "",
        local_id: str = "",
        file_name: str = "",
    ) -> str:
        """Place a REPORT with an empty body in the recipient's inbox; returns its message ID."""
        prepared = self.prepare(
            recipient, error, workflow_id=workflow_id, subject=subject, local_id=local_id, file_name=file_name
        )
        await self._store.create_message(prepared.message, prepared.chunk)
        return prepared.message.message_id

    def prepare_non_delivery(self, original: Message, description: str, taken: set[str]) -> NonDelivery:
        """The claim that makes an accepted message undeliverable, with the NDR for its sender (section 7.6):
        code 14, event SEND, LinkedMsgID the original, workflow, subject and local ID copied unchanged.

        Hand it to LifecycleStore.mark_undeliverable, which stores the report only if the claim is won. taken
        holds report IDs already used in this batch (one clock reading can serve hundreds of reports) and gains
        this one. An expiring REPORT gets the event but no report.
        """
        now = self._clock.now()
        if original.message_type is MessageType.REPORT:
            # A report's sender is the central system, which has no inbox: an unread report just expires.
            return NonDelivery(original.message_id, Event(Status.UNDELIVERABLE, now, NDR_EVENT, NDR_CODE, description))
        report_id = new_message_id(now)
        while report_id in taken:
            report_id = new_message_id(now)
        taken.add(report_id)
        error = Event(Status.UNDELIVERABLE, now, NDR_EVENT, NDR_CODE, description, original.message_id)
        prepared = self.prepare(
            original.sender,
            error,
            workflow_id=original.workflow_id,
            subject=original.meta.subject,
            local_id=original.meta.local_id,
            message_id=report_id,
            at=now,
        )
        # The original's own history links forward to the report that told its sender.
        undeliverable = Event(Status.UNDELIVERABLE, now, NDR_EVENT, NDR_CODE, description, report_id)
        return NonDelivery(original.message_id, undeliverable, prepared.message, prepared.chunk)

    def prepare(
        self,
        recipient: Party,
        error: Event,
        *,
        workflow_id: str,
        subject: str = "",
        local_id: str = "",
        file_name: str = "",
        message_id: str | None = None,
        at: datetime | None = None,
    ) -> PreparedReport:
        """Build a REPORT's row and its empty inline chunk, without storing them.

        The report's history is the error event then `accepted`: its own status is accepted, so it is
        listed, downloaded and acknowledged like any message, while tracking and headers show the error.
        """
        now = at or self._clock.now()
        message_id = message_id or new_message_id(now)
        report = Message(
            message_id=message_id,
            message_type=MessageType.REPORT,
            sender=CENTRAL_SYSTEM,
            recipient=recipient,
            workflow_id=workflow_id,
            total_chunks=1,
            content_encoding="",
            meta=MessageMeta(subject=subject, local_id=local_id, file_name=file_name),
            status=Status.ACCEPTED,
            created_at=now,
            file_size=0,
            delivered_at=now,
            expires_at=now + self._inbox_expiry,
            status_at=now,
            linked_message_id=error.linked_message_id,
            events=(error, Event(Status.ACCEPTED, now)),
        )
        return PreparedReport(report, Chunk.inline(message_id, 1, b""))
