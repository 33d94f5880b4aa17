"""mesh-sandbox's admin and test endpoints (reset, inject report, append event), for suites written against it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from broker.blobs.protocol import BlobStore
from broker.errors import BrokerError, ErrorCode
from broker.ids import new_message_id
from broker.models import (
    CENTRAL_SYSTEM,
    Chunk,
    Event,
    Mailbox,
    Message,
    MessageMeta,
    MessageType,
    Party,
    Status,
)
from broker.services.messaging import blob_key
from broker.store.protocol import MetadataStore

NDR_DESCRIPTION = "Message not collected by recipient after 5 days"


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
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        *,
        inbox_expiry: timedelta,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._store = store
        self._blobs = blobs
        self._inbox_expiry = inbox_expiry
        self._now = now

    def now(self) -> datetime:
        return self._now()

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
        now = self._now()
        message_id = new_message_id(now)
        undeliverable = request.status.lower() == "undeliverable"
        if undeliverable:
            error = Event(
                Status.UNDELIVERABLE,
                now,
                "SEND",
                request.code or "14",
                request.description or NDR_DESCRIPTION,
                request.linked_message_id,
            )
            subject = f"NDR: {request.subject}" if request.subject else "NDR"
            file_name = ""
        else:
            error = Event(Status.ERROR, now, "TRANSFER", request.code, request.description, request.linked_message_id)
            subject, file_name = request.subject, request.file_name
        key = blob_key(message_id, 1)
        size = await self._blobs.put(key, _nothing())
        report = Message(
            message_id=message_id,
            message_type=MessageType.REPORT,
            sender=CENTRAL_SYSTEM,
            recipient=Party.of(recipient),
            workflow_id=request.workflow_id,
            total_chunks=1,
            content_encoding="",
            meta=MessageMeta(subject=subject, local_id=request.local_id, file_name=file_name),
            status=Status.ACCEPTED,
            created_at=now,
            file_size=size,
            delivered_at=now,
            expires_at=now + self._inbox_expiry,
            status_at=now,
            linked_message_id=request.linked_message_id,
            events=(error, Event(Status.ACCEPTED, now)),
        )
        await self._store.create_message(report, Chunk(message_id, 1, key, size))
        return message_id

    async def append_event(self, message_id: str, event: Event) -> None:
        if not await self._store.append_event(message_id.upper(), event):
            raise BrokerError(ErrorCode.NOT_FOUND)


async def _nothing() -> AsyncIterator[bytes]:
    empty: tuple[bytes, ...] = ()
    for piece in empty:
        yield piece
