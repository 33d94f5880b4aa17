"""REPORT messages: a status report from the central system mailbox placed in a mailbox's inbox.

Non-delivery reports (expiry, deactivated recipient), failed GP traces and the sandbox's injected
reports are all built here, so every REPORT has the same shape (mesh-api.md section 7.6).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

from broker.blobs.protocol import BlobStore
from broker.clock import SYSTEM_CLOCK, Clock
from broker.ids import new_message_id
from broker.models import CENTRAL_SYSTEM, Chunk, Event, Message, MessageMeta, MessageType, Party, Status
from broker.services.messaging import blob_key
from broker.store.protocol import MetadataStore


class Reports:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        *,
        inbox_expiry: timedelta,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self._store = store
        self._blobs = blobs
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
        """Place a REPORT with an empty body in the recipient's inbox; returns its message ID.

        The report's history is the error event then `accepted`: its own status is accepted, so it is
        listed, downloaded and acknowledged like any message, while tracking and headers show the error.
        """
        now = self._clock.now()
        message_id = new_message_id(now)
        key = blob_key(message_id, 1)
        size = await self._blobs.put(key, _empty())
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
            file_size=size,
            delivered_at=now,
            expires_at=now + self._inbox_expiry,
            status_at=now,
            linked_message_id=error.linked_message_id,
            events=(error, Event(Status.ACCEPTED, now)),
        )
        try:
            await self._store.create_message(report, Chunk(message_id, 1, key, size))
        except BaseException:
            await self._blobs.delete(key)
            raise
        return message_id


async def _empty() -> AsyncIterator[bytes]:
    empty: tuple[bytes, ...] = ()
    for piece in empty:
        yield piece
