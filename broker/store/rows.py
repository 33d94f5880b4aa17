"""Conversions between domain objects and the flat values stores keep (times, parties, metadata)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import orjson

from broker.models import Chunk, Event, Mailbox, Message, MessageMeta, MessageType, Party, Patient, Status

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(at: datetime) -> int:
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)


def party_json(party: Party) -> str:
    return orjson.dumps(
        [
            party.mailbox_id,
            party.mailbox_name,
            party.ods_code,
            party.org_code,
            party.org_name,
            party.billing_entity,
        ]
    ).decode()


def party_from_json(raw: str | bytes) -> Party:
    return Party(*orjson.loads(raw))


def meta_json(meta: MessageMeta) -> str:
    return orjson.dumps(
        [
            meta.subject,
            meta.local_id,
            meta.partner_id,
            meta.file_name,
            meta.content_type,
            meta.checksum,
            meta.encrypted,
            meta.compressed,
        ]
    ).decode()


def meta_from_json(raw: str | bytes) -> MessageMeta:
    return MessageMeta(*orjson.loads(raw))


def mailbox_from_row(row: Any) -> Mailbox:
    return Mailbox(
        mailbox_id=row[0],
        password=row[1],
        mailbox_name=row[2],
        ods_code=row[3],
        org_code=row[4],
        org_name=row[5],
        billing_entity=row[6],
        active=bool(row[7]),
    )


def mailbox_values(mailbox: Mailbox) -> tuple[Any, ...]:
    return (
        mailbox.mailbox_id,
        mailbox.password,
        mailbox.mailbox_name,
        mailbox.ods_code,
        mailbox.org_code,
        mailbox.org_name,
        mailbox.billing_entity,
        mailbox.active,
    )


def patient_from_row(row: Any) -> Patient:
    """A `get_patient` row; SQLite keeps the date of birth as ISO text, PostgreSQL as a date."""
    born = row[1]
    if isinstance(born, str):
        born = date.fromisoformat(born)
    return Patient(nhs_number=row[0], date_of_birth=born, family_name=row[2], gp_ods_code=row[3])


#: How many columns of a `get_message` row are the message's; the event's six follow.
MESSAGE_COLUMNS = 16
EVENT_COLUMNS = 6


def event_from_row(row: Any, to_time: Callable[[Any], datetime], at: int = 0) -> Event:
    """An event's six columns, from row[at] on (status, time, event, code, description, linked message); to_time
    reads the store's times."""
    return Event(
        status=Status(row[at]),
        timestamp=to_time(row[at + 1]),
        event=row[at + 2],
        code=row[at + 3],
        description=row[at + 4],
        linked_message_id=row[at + 5],
    )


def message_from_row(row: Any, events: tuple[Event, ...], to_time: Callable[[Any], datetime]) -> Message:
    """A `get_message` row (the same columns in every store) as a Message; to_time reads the store's times."""

    def maybe(value: Any) -> datetime | None:
        return None if value is None else to_time(value)

    return Message(
        message_id=row[0],
        message_type=MessageType(row[1]),
        sender=party_from_json(row[2]),
        recipient=party_from_json(row[3]),
        workflow_id=row[4],
        total_chunks=row[5],
        content_encoding=row[6],
        meta=meta_from_json(row[7]),
        status=Status(row[8]),
        created_at=to_time(row[9]),
        file_size=row[10],
        delivered_at=maybe(row[11]),
        expires_at=maybe(row[12]),
        acknowledged_at=maybe(row[13]),
        status_at=maybe(row[14]),
        linked_message_id=row[15],
        events=events,
    )


def message_values(message: Message) -> tuple[Any, ...]:
    """The message row's parameters of `create_message`, ?1..?19 (times as datetimes: each store's runner binds
    them its own way)."""
    return (
        message.message_id,
        message.message_type.value,
        message.sender.mailbox_id,
        party_json(message.sender),
        message.recipient.mailbox_id,
        party_json(message.recipient),
        message.workflow_id,
        message.total_chunks,
        message.content_encoding,
        meta_json(message.meta),
        message.meta.local_id,
        message.status.value,
        message.file_size,
        message.created_at,
        message.delivered_at,
        message.expires_at,
        message.acknowledged_at,
        message.status_at or message.created_at,
        message.linked_message_id,
    )


def chunk_values(chunk: Chunk) -> tuple[Any, ...]:
    """A chunk row's columns in order (create_message's ?21..?25 after the message ID, add_chunk's ?1..?6)."""
    return chunk.message_id, chunk.number, chunk.blob_key, chunk.size, chunk.sha256, chunk.data


def chunk_from_row(message_id: str, number: int, row: Any, at: int = 0) -> Chunk:
    """A chunk from its columns (blob_key, size, sha256, data), from row[at] on."""
    return Chunk(message_id, number, row[at], row[at + 1], row[at + 2], row[at + 3])
