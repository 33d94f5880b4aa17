"""Factories for the domain objects the contract suites store: sensible defaults, override what matters."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.models import Chunk, Event, Mailbox, Message, MessageMeta, MessageType, Party, Status, Workflow
from broker.services.messaging import DELIVERED
from broker.store.protocol import ChunkUpload, MetadataStore

#: A time with microseconds, so stores that drop precision fail loudly.
T0 = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
EXPIRY = timedelta(days=5)


def mailbox(mailbox_id: str, **overrides: Any) -> Mailbox:
    values: dict[str, Any] = {
        "password": f"pw-{mailbox_id}",
        "mailbox_name": f"{mailbox_id} name",
        "ods_code": "X26",
        "org_code": "X26",
        "org_name": "Test Org",
        "billing_entity": "England",
    }
    values.update(overrides)
    return Mailbox(mailbox_id, **values)


def party(mailbox_id: str) -> Party:
    return Party.of(mailbox(mailbox_id))


def workflow(workflow_id: str, senders: tuple[str, ...] = (), receivers: tuple[str, ...] = (), **kw: Any) -> Workflow:
    return Workflow(workflow_id, senders=senders, receivers=receivers, **kw)


def message_id(n: int) -> str:
    return f"20250304050607{n:06d}_{n:06X}"


def blob_key(mid: str, number: int, suffix: str = "a") -> str:
    return f"{mid[:8]}/{mid}/{number}.{suffix}"


def accepted(
    mid: str,
    *,
    sender: str = "ALICE",
    recipient: str = "BOB",
    workflow_id: str = "WF",
    delivered_at: datetime = T0,
    created_at: datetime | None = None,
    size: int = 11,
    **meta: Any,
) -> Message:
    """A single-chunk message, delivered (status accepted) as a send of 1:1 stores it."""
    created = delivered_at if created_at is None else created_at
    return Message(
        message_id=mid,
        message_type=MessageType.DATA,
        sender=party(sender),
        recipient=party(recipient),
        workflow_id=workflow_id,
        total_chunks=1,
        content_encoding="",
        meta=MessageMeta(**meta),
        status=Status.ACCEPTED,
        created_at=created,
        file_size=size,
        delivered_at=delivered_at,
        expires_at=delivered_at + EXPIRY,
        status_at=delivered_at,
        events=(Event(Status.ACCEPTED, delivered_at, "TRANSFER", "00", "Transferred to recipient mailbox"),),
    )


def uploading(mid: str, total_chunks: int, *, created_at: datetime = T0, **kw: Any) -> Message:
    """Chunk 1 of a chunked message: waiting for chunks 2..n."""
    return replace(
        accepted(mid, delivered_at=created_at, **kw),
        total_chunks=total_chunks,
        status=Status.UPLOADING,
        file_size=0,
        delivered_at=None,
        expires_at=None,
        events=(Event(Status.UPLOADING, created_at),),
    )


def chunk(mid: str, number: int, size: int = 10, suffix: str = "a") -> Chunk:
    return Chunk(mid, number, blob_key(mid, number, suffix), size)


def upload(
    total_chunks: int, *, sender: str = "ALICE", content_encoding: str = "", max_message_bytes: int = 10**12
) -> ChunkUpload:
    """What the sender of an uploading() message says of it when it uploads a chunk (what Messaging passes to
    add_chunk): the message takes a chunk this describes, if its size fits."""
    return ChunkUpload(sender, total_chunks, content_encoding, max_message_bytes)


async def deliver(store: MetadataStore, mid: str, **kw: Any) -> Message:
    """Create an accepted single-chunk message and return it."""
    message = accepted(mid, **kw)
    await store.create_message(message, chunk(mid, 1, message.file_size))
    return message


def delivery_event(at: datetime) -> Event:
    """The event the last missing chunk records (what Messaging passes to add_chunk)."""
    return Event(Status.ACCEPTED, at, *DELIVERED)


def ack_event(at: datetime) -> Event:
    """The event an acknowledgement records (what Messaging passes to acknowledge)."""
    return Event(Status.ACKNOWLEDGED, at)
