"""The metadata store, cut by role: each caller depends on the few methods it uses (auth on a mailbox lookup and
the replay cache, housekeeping on the lifecycle and the figures, and so on), and MetadataStore is all of them
with a lifetime. The contract of each method is its docstring; tests/contract checks it against both stores.

Every state change is one transaction. Methods raise StoreError for backend failures: StoreUnavailable where the
backend cannot be reached or cannot serve now, so that the same call may succeed later."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from broker.models import Chunk, Event, Mailbox, Message, MessageType, Patient, Status, Workflow


class StoreError(Exception):
    """A backend failure, translated at the store boundary so nothing above imports a driver."""


class StoreUnavailable(StoreError):
    """The backend cannot serve now: the connection is refused or lost, the database is locked, shutting down or out
    of connections, its files cannot be read or written. Clients are told to retry (503 with Retry-After); every
    other StoreError (a statement that is wrong, a constraint nobody expected) is a fault of ours, a 500."""


class DuplicateMessageId(StoreError):
    """create_message was given an ID that already exists."""


@dataclass(frozen=True, slots=True)
class InboxCursor:
    """Where an inbox page ends: delivery time then message ID, the list's sort key."""

    delivered_at: datetime
    message_id: str


class FilterOp(enum.Enum):
    EQUALS = "equals"
    STARTS_WITH = "starts_with"
    CONTAINS = "contains"


@dataclass(frozen=True, slots=True)
class WorkflowFilter:
    op: FilterOp
    value: str
    negate: bool = False


class Box(enum.Enum):
    """Which side of a mailbox a rich list shows: messages to it, or messages from it."""

    INBOX = "inbox"
    OUTBOX = "outbox"


class Undeliverable(enum.Enum):
    """Why an accepted message can no longer be delivered."""

    EXPIRED = "expired"
    DEACTIVATED = "deactivated"


@dataclass(frozen=True, slots=True)
class UndeliverableCandidate:
    """An accepted message housekeeping should make undeliverable (its events are not loaded)."""

    message: Message
    reason: Undeliverable


@dataclass(frozen=True, slots=True)
class NonDelivery:
    """One claim: make message_id undeliverable with event, and store report (its REPORT) with its one chunk.
    A REPORT that expires has no report of its own (its sender, the central system, has no inbox)."""

    message_id: str
    event: Event
    report: Message | None = None
    report_chunk: Chunk | None = None


class ChunkOutcome(enum.Enum):
    STORED = "stored"
    COMPLETED = "completed"
    REFUSED = "refused"  # the message does not take the chunk (ChunkUpload's rules): nothing written
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class ChunkUpload:
    """What a chunk's uploader says of the message it writes to, which add_chunk checks against the message row
    it locks: that it is the sender, the total chunk count it declares and the chunk's content encoding; and the
    most bytes the whole message may hold."""

    sender: str
    total_chunks: int
    content_encoding: str
    max_message_bytes: int


@dataclass(frozen=True, slots=True)
class ChunkFacts:
    """What a chunk upload's rules read of its message (Messaging decides from these which error a refused chunk
    gets): from add_chunk's answer, or from a message read before the chunk's body (ChunkFacts.of)."""

    sender: str
    recipient: str
    workflow_id: str
    message_type: MessageType
    status: Status
    total_chunks: int
    content_encoding: str
    #: Bytes in the message's chunks other than the one being uploaded (a chunk sent again replaces its old bytes).
    other_bytes: int

    @classmethod
    def of(cls, message: Message, replaced: Chunk | None) -> ChunkFacts:
        """The facts of a message read with the chunk the upload would replace (None: not stored yet)."""
        return cls(
            message.sender.mailbox_id,
            message.recipient.mailbox_id,
            message.workflow_id,
            message.message_type,
            message.status,
            message.total_chunks,
            message.content_encoding,
            message.file_size - (0 if replaced is None else replaced.size),
        )


class ChunkAnswer(NamedTuple):
    """add_chunk's answer: the outcome and the message's facts as the statement found them (before its own
    write); facts is None only for NOT_FOUND."""

    outcome: ChunkOutcome
    facts: ChunkFacts | None


class MailboxLookup(Protocol):
    """The one directory read every request makes."""

    async def get_mailbox(self, mailbox_id: str) -> Mailbox | None:
        """The mailbox with this (upper-case) ID, active or not."""


class DirectoryStore(MailboxLookup, Protocol):
    """Mailboxes and workflows. Lookups by ID may be served from memory, so a change is seen by every node
    within a bounded time (SQLite: 0.1 s; PostgreSQL: on the database's notification, at most 5 s)."""

    async def put_mailbox(self, mailbox: Mailbox) -> None:
        """Create or replace a mailbox (when and with what client it last handshook is kept)."""

    async def list_mailboxes(self) -> list[Mailbox]:
        """All mailboxes ordered by ID."""

    async def count_mailboxes(self) -> int:
        """How many mailboxes exist."""

    async def record_handshake(self, mailbox_id: str, client: str, at: datetime) -> None:
        """Remember when and with what client a mailbox last handshook (bookkeeping: may skip the fsync)."""

    async def put_workflow(self, workflow: Workflow) -> None:
        """Create or replace a workflow with its senders and receivers."""

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        """The workflow, or None when it was never registered (unrestricted)."""

    async def list_workflows(self) -> list[Workflow]:
        """All workflows ordered by ID."""

    async def receivers(self, workflow_id: str, ods_code: str | None = None) -> list[Mailbox]:
        """Active mailboxes registered to receive the workflow, optionally only those of one ODS code
        (compared case-insensitively), ordered by ID."""


class PatientStore(Protocol):
    """The local demographics directory GP routing reads when no PDS is configured."""

    async def put_patients(self, patients: Sequence[Patient]) -> None:
        """Create or replace patients by NHS number, all in one transaction."""

    async def get_patient(self, nhs_number: str) -> Patient | None:
        """The patient with this NHS number, or None."""


class TokenStore(Protocol):
    """The replay cache: each NHSMESH token is accepted once."""

    async def use_token(self, token_key: str, expires_at: datetime) -> bool:
        """Record a token as used; False if it was already used (a replay). Concurrent calls with one key: one
        True."""

    async def purge_tokens(self, now: datetime) -> int:
        """Forget tokens whose expiry has passed; returns how many."""


class MessageStore(Protocol):
    """Messages as senders and recipients change them: a send, its chunks, delivery, acknowledgement."""

    async def create_message(self, message: Message, first_chunk: Chunk) -> None:
        """Insert a message, its chunk 1 (bytes included when the chunk is inline) and its events. Raises
        DuplicateMessageId."""

    async def get_message(self, message_id: str) -> Message | None:
        """The message with its events (oldest first), or None. One read: on PostgreSQL one round trip."""

    async def get_message_and_chunk(self, message_id: str, number: int) -> tuple[Message | None, Chunk | None]:
        """The message (with its events) and one of its chunks together (the download path), in one read."""

    async def add_chunk(self, chunk: Chunk, upload: ChunkUpload, delivery: Event, expires_at: datetime) -> ChunkAnswer:
        """Store chunk n of an uploading message when the message takes it: it is a DATA message still uploading,
        upload.sender is its sender, n <= its total_chunks, upload.total_chunks equals its total_chunks,
        upload.content_encoding its encoding, and its other chunks' bytes plus this one's are at most
        upload.max_message_bytes (a chunk sent before is replaced, so its old bytes do not count). The last missing
        chunk delivers the message: its status becomes the delivery event's, delivered_at the event's time,
        expires_at as given, and the event is appended. file_size is kept equal to the sum of the stored chunk
        sizes, while uploading too. Re-storing a chunk replaces it and queues the replaced blob as an orphan. Chunks
        of one message at different nodes are serialised, and these rules are checked on the message as the write
        finds it. REFUSED and NOT_FOUND change nothing; every answer but NOT_FOUND carries the message's facts as
        they were before the write. One statement: on PostgreSQL one round trip, unless chunks of the message race."""

    async def acknowledge(self, message_id: str, recipient: str, event: Event) -> str | None:
        """Move an accepted message addressed to recipient (a mailbox ID) to the event's status (acknowledged_at
        and status_at its time) and append it, in one statement; answers the message's workflow ID. None, and no
        change, when there is no such message: unknown, addressed to another mailbox, or in any other status (the
        caller reads the message to tell which). Of racing calls exactly one answers a workflow ID."""

    async def find_by_local_id(self, sender: str, local_id: str, limit: int = 2) -> list[Message]:
        """The sender's messages with this local ID, newest first."""


class InboxStore(Protocol):
    """A mailbox's lists: the inbox in delivery order, and the rich lists of what it sent and received."""

    async def list_inbox(
        self,
        recipient: str,
        limit: int,
        after: InboxCursor | None = None,
        workflow_filter: WorkflowFilter | None = None,
    ) -> tuple[list[str], InboxCursor | None]:
        """Accepted messages of the recipient in delivery order; the cursor is set when more may follow."""

    async def inbox_cursor(self, recipient: str, message_id: str) -> InboxCursor | None:
        """The cursor just after one of the recipient's messages (v1 continue_from is a message ID)."""

    async def count_inbox(self, recipient: str) -> int:
        """How many accepted messages wait in the recipient's inbox."""

    async def list_messages(
        self,
        mailbox_id: str,
        box: Box,
        since: datetime,
        limit: int,
        after: InboxCursor | None = None,
    ) -> tuple[list[Message], InboxCursor | None]:
        """The rich lists, newest first by (created_at, message_id), created at or after since: INBOX is every
        message to the mailbox except those still uploading, OUTBOX every message from it, in any status. The
        cursor (created_at, message_id of the last message) is set when more may follow."""


class LifecycleStore(Protocol):
    """What housekeeping changes: non-delivery, abandoned uploads, retention, orphaned blobs. Each change is
    claimed so that nodes running housekeeping at once never do one piece twice."""

    async def undeliverable_candidates(self, now: datetime, limit: int) -> list[UndeliverableCandidate]:
        """Up to limit accepted messages whose expires_at is at or before now (EXPIRED, oldest expiry first),
        then those whose recipient mailbox is deactivated (DEACTIVATED). A plain read: nothing is claimed."""

    async def mark_undeliverable(self, claims: list[NonDelivery]) -> list[str]:
        """In one transaction, for every claim whose message is still accepted: set it undeliverable, append
        the claim's event, and insert the claim's report (if any) with its chunk and events. Messages another
        node is claiming at the same moment are skipped (PostgreSQL: FOR UPDATE SKIP LOCKED), as are those no
        longer accepted; their reports are not stored. Returns the message IDs claimed."""

    async def abandon_uploads(self, created_before: datetime, event: Event, limit: int) -> list[str]:
        """In one transaction, up to limit messages still uploading and created before created_before: append
        event (its status, error, becomes theirs), delete their chunk rows and queue the chunks' blobs as
        orphans. Rows another node is changing are skipped. Returns the message IDs changed."""

    async def purge_messages(self, created_before: datetime, limit: int) -> list[str]:
        """In one transaction, delete up to limit messages (any status) created before created_before, with
        their chunks and events, queueing the chunks' blobs as orphans. Returns the message IDs deleted."""

    async def known_blob_keys(self, keys: list[str]) -> set[str]:
        """Which of keys a chunk row points at (the rest, if old enough, are crash leftovers)."""

    async def take_orphan_blobs(self, limit: int) -> list[str]:
        """Blob keys no row points at any more, removed from the queue as they are returned."""


class LeaseStore(Protocol):
    """Named leases for housekeeping work that cannot be claimed row by row (the leftover-blob sweep lists the
    whole blob store): the node holding a lease does the work; the others skip it until the lease lapses."""

    async def claim_lease(self, name: str, holder: str, until: datetime, now: datetime) -> bool:
        """Hold the lease named name until until, in one atomic statement: True (and the row written) when no one
        holds it, holder already does (a renewal), or another's hold ended at or before now; else False and no
        change. Of racing claimers of a free or lapsed lease exactly one is True."""

    async def release_lease(self, name: str, holder: str) -> bool:
        """Give up the lease if holder holds it, so that any claimer takes it at once; False if holder did not."""


class AdminStore(Protocol):
    """The sandbox's administration routes (never switched on over a production store)."""

    async def append_event(self, message_id: str, event: Event) -> bool:
        """Append an event and make its status the message's; False if the message is unknown."""

    async def delete_mailbox_messages(self, mailbox_id: str | None) -> int:
        """Delete messages to or from one mailbox (None: all), queueing their blobs as orphans."""


class StoreStats(Protocol):
    """Figures the metrics sample."""

    async def count_accepted(self) -> int:
        """How many accepted messages wait across all inboxes (the inbox-depth gauge)."""

    async def storage_bytes(self) -> dict[str, int]:
        """Bytes the store occupies, by part: "database" always; the embedded store adds "wal" (its write-ahead
        log, which a stuck checkpoint would let grow), "tokens" and "tokens_wal" (the replay cache's file)."""

    def pool_usage(self) -> tuple[int, int] | None:
        """(open, busy) connections of a pooled store; None for stores without a pool."""

    def directory_listening(self) -> bool | None:
        """For a store that caches the directory on word of changes (PostgreSQL): whether it hears them now, and
        so serves mailboxes and workflows from memory. None for stores with nothing to hear (SQLite's cache is
        told by a stamp file; a PostgreSQL store with the cache turned off)."""


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """The Idempotency-Key a sender gave on the first POST of a send (our extension), with a fingerprint of that
    send's headers: the same key with other headers is a different send, and refused."""

    sender: str
    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class KeyedSend:
    """The send that holds an idempotency key: its message and the fingerprint it was made with."""

    message_id: str
    fingerprint: str


class IdempotencyStore(Protocol):
    """Idempotency keys on sends: a repeated first POST answers the message the first one made. A key lives as
    long as its message (the retention period) and is scoped to the sending mailbox."""

    async def get_send_by_key(self, sender: str, key: str) -> KeyedSend | None:
        """The send holding the sender's key, or None."""

    async def create_message_once(self, message: Message, first_chunk: Chunk, key: IdempotencyKey) -> KeyedSend:
        """As create_message, with the key held for the message in the same transaction; when the sender's key
        is already held (by a send committed earlier or racing at another node) nothing is written and the
        holder is returned, so exactly one of racing calls with one key stores its message. Raises
        DuplicateMessageId as create_message does."""


@dataclass(frozen=True, slots=True)
class WebSession:
    """A person signed in to the web page (broker/ui). Expiry is the caller's to judge from the times."""

    #: The SHA-256 (hex) of the cookie's token: the token itself is never stored.
    session_key: str
    #: Who signed in: the mailbox ID for a password sign-in, the identity provider's subject for OpenID Connect.
    user_id: str
    #: The mailbox the session acts as now.
    mailbox_id: str
    #: Every mailbox the sign-in may act as (a password sign-in: its own mailbox only).
    mailboxes: tuple[str, ...]
    #: What every form of this session must carry back.
    csrf_token: str
    created_at: datetime
    seen_at: datetime
    #: The absolute expiry, however active the session.
    expires_at: datetime


class WebSessionStore(Protocol):
    """The web page's sign-ins: sessions that any node can serve, and failed sign-ins counted per key (a mailbox
    or an address) for the lock-out. The rules (expiry, thresholds, back-off) are the caller's."""

    async def create_web_session(self, session: WebSession) -> None:
        """Store a new session (durably: the person is told they are signed in)."""

    async def get_web_session(self, session_key: str) -> WebSession | None:
        """The session with this key, expired or not, or None."""

    async def touch_web_session(self, session_key: str, seen_at: datetime) -> None:
        """Record when the session was last used (bookkeeping: may skip the fsync); an unknown key changes
        nothing."""

    async def switch_web_session_mailbox(self, session_key: str, mailbox_id: str) -> None:
        """Make the session act as another mailbox (the caller checks it is one of its mailboxes)."""

    async def delete_web_session(self, session_key: str) -> bool:
        """Forget a session (sign out); False if there was none."""

    async def purge_web_sign_ins(self, now: datetime, idle_before: datetime, quiet_before: datetime) -> int:
        """Forget sessions whose expires_at is at or before now or whose seen_at is before idle_before, and
        failure counts whose last failure is before quiet_before and whose lock, if any, has passed by now.
        Returns how many sessions were forgotten."""

    async def note_sign_in_failure(self, key: str, at: datetime, quiet_before: datetime) -> int:
        """Count a failed sign-in against key and return its count, this one included. A key whose last failure
        is before quiet_before starts again at 1. Concurrent calls with one key are each counted."""

    async def lock_sign_in(self, key: str, until: datetime) -> None:
        """Refuse sign-in for key until the time given (replacing any earlier lock); the key has a failure
        count (note_sign_in_failure), else nothing changes."""

    async def sign_in_locked_until(self, keys: Sequence[str], now: datetime) -> datetime | None:
        """The latest time any of keys is locked until, when that is after now; else None."""

    async def clear_sign_in_failures(self, key: str) -> None:
        """Forget key's failure count and lock (a mailbox that has just signed in)."""


class MetadataStore(
    DirectoryStore,
    PatientStore,
    TokenStore,
    MessageStore,
    InboxStore,
    LifecycleStore,
    LeaseStore,
    AdminStore,
    StoreStats,
    IdempotencyStore,
    WebSessionStore,
    Protocol,
):
    """Every role, with a lifetime: what the app factory and the CLI open and hand out."""

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
