"""The domain: mailboxes, workflows, messages, chunks and events as plain dataclasses, with no I/O."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime


class Status(enum.StrEnum):
    """A message's status is its newest event's status (mesh-api.md section 7.1)."""

    UPLOADING = "uploading"
    ACCEPTED = "accepted"
    ACKNOWLEDGED = "acknowledged"
    UNDELIVERABLE = "undeliverable"
    ERROR = "error"

    @property
    def titled(self) -> str:
        """v1 tracking shows statuses title-cased (`Accepted`)."""
        return self.value.capitalize()


class MessageType(enum.StrEnum):
    DATA = "DATA"
    REPORT = "REPORT"


@dataclass(frozen=True, slots=True)
class Mailbox:
    mailbox_id: str
    password: str
    mailbox_name: str = ""
    ods_code: str = ""
    org_code: str = ""
    org_name: str = ""
    billing_entity: str = ""
    active: bool = True


@dataclass(frozen=True, slots=True)
class Workflow:
    workflow_id: str
    restricted: bool = False
    senders: tuple[str, ...] = ()
    receivers: tuple[str, ...] = ()
    #: Accepts `mex-To: GPPROVIDER_<NHS number>_<date of birth>_<surname>` (routing to the patient's GP).
    patient_addressing: bool = False


@dataclass(frozen=True, slots=True)
class Patient:
    """What a demographics directory knows of a patient: enough to cross-check and find the GP practice."""

    nhs_number: str
    date_of_birth: date | None
    family_name: str
    #: The registered GP practice's ODS code; "" when the patient has none.
    gp_ods_code: str = ""


@dataclass(frozen=True, slots=True)
class Party:
    """A mailbox as a message records it: enough to render tracking without a second lookup."""

    mailbox_id: str
    mailbox_name: str = ""
    ods_code: str = ""
    org_code: str = ""
    org_name: str = ""
    billing_entity: str = ""

    @classmethod
    def of(cls, mailbox: Mailbox) -> Party:
        return cls(
            mailbox.mailbox_id,
            mailbox.mailbox_name,
            mailbox.ods_code,
            mailbox.org_code,
            mailbox.org_name,
            mailbox.billing_entity,
        )


#: The sender of reports (NDRs): the central system mailbox, which has an empty ID.
CENTRAL_SYSTEM = Party("", "Central System Mailbox", "X26", "X26", "NHS England", "")


@dataclass(frozen=True, slots=True)
class Event:
    status: Status
    timestamp: datetime
    event: str = ""
    code: str = ""
    description: str = ""
    linked_message_id: str = ""


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What the sender says about a message on chunk 1; copied onto every download."""

    subject: str = ""
    local_id: str = ""
    partner_id: str = ""
    file_name: str = ""
    content_type: str = ""
    checksum: str = ""
    encrypted: bool = False
    compressed: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    message_type: MessageType
    sender: Party
    recipient: Party
    workflow_id: str
    total_chunks: int
    content_encoding: str
    meta: MessageMeta
    status: Status
    created_at: datetime
    file_size: int = 0
    delivered_at: datetime | None = None
    expires_at: datetime | None = None
    acknowledged_at: datetime | None = None
    status_at: datetime | None = None
    linked_message_id: str = ""
    events: tuple[Event, ...] = field(default=())

    @property
    def error_event(self) -> Event | None:
        for event in reversed(self.events):
            if event.status in (Status.ERROR, Status.UNDELIVERABLE) or (event.code and event.code != "00"):
                return event
        return None

    @property
    def accepted_event(self) -> Event | None:
        for event in reversed(self.events):
            if event.status is Status.ACCEPTED:
                return event
        return None


@dataclass(frozen=True, slots=True)
class Chunk:
    message_id: str
    number: int
    #: Where the blob store holds the bytes; "" for a chunk stored inline (data is not None).
    blob_key: str
    size: int
    #: Hex SHA-256 of the stored bytes ("" when unknown, e.g. rows written before it was recorded).
    sha256: str = ""
    #: The bytes themselves for a small chunk kept in its metadata row (MESH_INLINE_CHUNK_BYTES), else None.
    data: bytes | None = None

    @classmethod
    def inline(cls, message_id: str, number: int, data: bytes, sha256: str | None = None) -> Chunk:
        """A chunk kept in its row; its SHA-256 is computed here unless the caller already has it."""
        digest = hashlib.sha256(data).hexdigest() if sha256 is None else sha256
        return cls(message_id, number, "", len(data), digest, data)


@dataclass(frozen=True, slots=True)
class InboxPage:
    message_ids: list[str]
    next_token: str | None
    approx_count: int
