"""Every metadata read and state change, written once for both stores as a plan of statements.

A plan is a generator: it yields a Statement, is sent the result, decides what to run next and finally returns
the answer. It does no I/O of its own, so the same decisions (which status, which event, which rows) hold on
SQLite, where a plan runs synchronously on the writer thread or inline, and on PostgreSQL, where it runs as a
coroutine over a pooled connection (see sql_store.py for the runners). Values are domain values (datetimes,
lists, enums' values); each runner binds them as its driver wants. Rows come back as the driver gives them, so
a plan that reads a time column is handed the store's `Times` to read it with.

A plan may be run more than once (SQLite's group commit retries a write alone when its batch fails), so a plan
function must build a fresh generator each call and keep no state outside it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from broker.models import Chunk, Event, Mailbox, Message, MessageType, Patient, Status, Workflow
from broker.store import paging
from broker.store.protocol import (
    Box,
    ChunkAnswer,
    ChunkFacts,
    ChunkOutcome,
    ChunkUpload,
    IdempotencyKey,
    InboxCursor,
    KeyedSend,
    NonDelivery,
    StoreError,
    Undeliverable,
    UndeliverableCandidate,
    WebSession,
    WorkflowFilter,
)
from broker.store.rows import (
    EVENT_COLUMNS,
    MESSAGE_COLUMNS,
    chunk_from_row,
    chunk_values,
    event_from_row,
    mailbox_from_row,
    mailbox_values,
    message_from_row,
    message_values,
    patient_from_row,
)

T = TypeVar("T")


class Fetch(enum.Enum):
    """What a statement hands back to its plan."""

    ROW = "row"  # the first row, or None
    ROWS = "rows"  # every row
    COUNT = "count"  # how many rows it changed
    MANY = "many"  # run once per parameter row (executemany); None


class Statement(NamedTuple):
    """A named query (from the .sql files) or, for built SQL (paging), its text with `?` placeholders. A tuple,
    not a dataclass: several are made per request, and a frozen dataclass costs a few times more to build."""

    query: str
    params: Sequence[Any] = ()
    fetch: Fetch = Fetch.COUNT
    built: bool = False


Plan = Generator[Statement, Any, T]
#: Reads a time column as the store keeps it (SQLite: microseconds since the epoch; PostgreSQL: timestamptz).
Times = Callable[[Any], datetime]


def row(query: str, *params: Any) -> Statement:
    return Statement(query, params, Fetch.ROW)


def rows(query: str, *params: Any) -> Statement:
    return Statement(query, params, Fetch.ROWS)


def execute(query: str, *params: Any) -> Statement:
    return Statement(query, params, Fetch.COUNT)


def execute_many(query: str, param_rows: Sequence[Sequence[Any]]) -> Statement:
    return Statement(query, param_rows, Fetch.MANY)


# Directory ---------------------------------------------------------------------------------------------------


def get_mailbox(mailbox_id: str) -> Plan[Mailbox | None]:
    found = yield row("get_mailbox", mailbox_id)
    return None if found is None else mailbox_from_row(found)


def put_mailbox(mailbox: Mailbox) -> Plan[None]:
    yield execute("put_mailbox", *mailbox_values(mailbox))


def list_mailboxes() -> Plan[list[Mailbox]]:
    found = yield rows("list_mailboxes")
    return [mailbox_from_row(r) for r in found]


def count_mailboxes() -> Plan[int]:
    return int((yield row("count_mailboxes"))[0])


def record_handshake(mailbox_id: str, client: str, at: datetime) -> Plan[None]:
    yield execute("record_handshake", at, client, mailbox_id)


def put_workflow(workflow: Workflow) -> Plan[None]:
    yield execute("put_workflow", workflow.workflow_id, workflow.restricted, workflow.patient_addressing)
    yield execute("clear_workflow_members", workflow.workflow_id)
    members = [(workflow.workflow_id, "sender", m) for m in workflow.senders]
    members += [(workflow.workflow_id, "receiver", m) for m in workflow.receivers]
    if members:
        yield execute_many("add_workflow_member", members)


def get_workflow(workflow_id: str) -> Plan[Workflow | None]:
    found = yield row("get_workflow", workflow_id)
    return None if found is None else (yield from _workflow(found))


def list_workflows() -> Plan[list[Workflow]]:
    workflows = []
    for found in (yield rows("list_workflows")):
        workflows.append((yield from _workflow(found)))
    return workflows


def _workflow(found: Any) -> Plan[Workflow]:
    members = yield rows("workflow_members", found[0])
    return Workflow(
        workflow_id=found[0],
        restricted=bool(found[1]),
        senders=tuple(m for role, m in members if role == "sender"),
        receivers=tuple(m for role, m in members if role == "receiver"),
        patient_addressing=bool(found[2]),
    )


def receivers(workflow_id: str, ods_code: str | None) -> Plan[list[Mailbox]]:
    if ods_code is None:
        found = yield rows("receivers", workflow_id)
    else:
        found = yield rows("receivers_by_ods", workflow_id, ods_code)
    return [mailbox_from_row(r) for r in found]


# Local demographics directory --------------------------------------------------------------------------------


def put_patients(patients: Sequence[Patient]) -> Plan[None]:
    if patients:
        yield execute_many(
            "put_patient", [(p.nhs_number, p.date_of_birth, p.family_name, p.gp_ods_code) for p in patients]
        )


def get_patient(nhs_number: str) -> Plan[Patient | None]:
    found = yield row("get_patient", nhs_number)
    return None if found is None else patient_from_row(found)


# Replay cache ------------------------------------------------------------------------------------------------


def use_token(token_key: str, expires_at: datetime) -> Plan[bool]:
    inserted: int = yield execute("use_token", token_key, expires_at)
    return inserted == 1  # none inserted: the token was used before, a replay


def use_tokens(token_keys: list[str], expiries: list[datetime]) -> Plan[set[str]]:
    """Record many tokens in one statement (expiries in the same places); the keys recorded, i.e. not used before."""
    recorded = yield rows("use_tokens", token_keys, expiries)
    return {str(found[0]) for found in recorded}


def purge_tokens(now: datetime) -> Plan[int]:
    return int((yield execute("purge_tokens", now)))


# Messages ----------------------------------------------------------------------------------------------------


# The writes of a send, a chunk upload and an acknowledgement are one statement each on PostgreSQL (run without
# BEGIN and COMMIT by the store's `single` runner: one round trip) and a few statements on SQLite's writer; the
# plan decides what they write (statuses, events, the answer) and hands both dialects the same parameters. An
# event's seq is the message row's event_count, taken by the statement that changes the row.


def create_message(message: Message, first_chunk: Chunk) -> Plan[None]:
    events = message.events
    yield execute(
        "create_message",
        *message_values(message),
        len(events),
        *chunk_values(first_chunk)[1:],
        [e.status.value for e in events],
        [e.timestamp for e in events],
        [e.event for e in events],
        [e.code for e in events],
        [e.description for e in events],
        [e.linked_message_id for e in events],
    )


# A message and its events are read in one statement (a row per event, the message's columns on each), so a read
# is one round trip on PostgreSQL; the download's read brings the chunk in the same statement.


def get_message(times: Times, message_id: str) -> Plan[Message | None]:
    found = yield rows("get_message", message_id)
    return _joined_message(times, found)


def get_message_and_chunk(times: Times, message_id: str, number: int) -> Plan[tuple[Message | None, Chunk | None]]:
    found = yield rows("get_message_and_chunk", message_id, number)
    message = _joined_message(times, found)
    at = MESSAGE_COLUMNS + EVENT_COLUMNS
    if message is None or found[0][at] is None:  # a chunk's blob_key is never null: no such chunk
        return message, None
    return message, chunk_from_row(message_id, number, found[0], at)


def _joined_message(times: Times, found: list[Any]) -> Message | None:
    """The message of get_message's rows (none: no such message), with the events they carry."""
    if not found:
        return None
    events = tuple(event_from_row(r, times, MESSAGE_COLUMNS) for r in found if r[MESSAGE_COLUMNS] is not None)
    return message_from_row(found[0], events, times)


#: How many times add_chunk runs again when another writer changed the message between its snapshot and its row
#: lock (each rerun reads after that writer's commit, so only a message written to without pause gets this far).
CHUNK_ATTEMPTS = 100


def add_chunk(chunk: Chunk, upload: ChunkUpload, delivery: Event, expires_at: datetime) -> Plan[ChunkAnswer]:
    """Store chunk n of an uploading message that takes it (the rules of ChunkUpload, checked by the statement on
    the row it locks; a chunk sent before is replaced, its blob queued as an orphan); the last missing one delivers
    the message with `delivery` (its time is the delivery's). The statement answers the message's facts whatever
    it did, so a refusal needs no second read to be explained. It locks the message row, so chunks of one message
    at different nodes queue; one that finds the row changed since its snapshot writes nothing and is run again."""
    at = delivery.timestamp
    params = (
        *chunk_values(chunk),
        Status.UPLOADING.value,
        delivery.status.value,
        at,
        expires_at,
        *_event_values(delivery),
        upload.sender,
        upload.total_chunks,
        upload.content_encoding,
        upload.max_message_bytes,
        MessageType.DATA.value,
    )
    for _attempt in range(CHUNK_ATTEMPTS):
        found = yield row("add_chunk", *params)
        if found is None:
            return ChunkAnswer(ChunkOutcome.NOT_FOUND, None)
        fresh, stored, delivered, sender, recipient, workflow_id, kind, status, total, encoding, others = found
        if not fresh:
            continue
        facts = ChunkFacts(
            sender, recipient, workflow_id, MessageType(kind), Status(status), total, encoding, int(others)
        )
        if not stored:
            return ChunkAnswer(ChunkOutcome.REFUSED, facts)
        return ChunkAnswer(ChunkOutcome.COMPLETED if delivered else ChunkOutcome.STORED, facts)
    raise StoreError(f"message {chunk.message_id} kept changing while chunk {chunk.number} was stored")


def acknowledge(message_id: str, recipient: str, event: Event) -> Plan[str | None]:
    """Move the recipient's accepted message to the event's status and append the event; its workflow ID, or None
    when nothing changed. Of two nodes racing, the UPDATE's row lock (or the single writer) lets exactly one see it
    still accepted."""
    changed = yield row(
        "acknowledge",
        event.status.value,
        event.timestamp,
        message_id,
        Status.ACCEPTED.value,
        *_event_values(event),
        recipient,
    )
    return None if changed is None else str(changed[0])


def append_event(message_id: str, event: Event) -> Plan[bool]:
    """Append an event and make its status the message's; False (and nothing written) for an unknown message."""
    changed = yield execute(
        "append_event",
        event.status.value,
        event.timestamp,
        event.status is Status.ACKNOWLEDGED,
        event.status is Status.ACCEPTED,
        message_id,
        *_event_values(event),
    )
    return int(changed) == 1


def _event_values(event: Event) -> tuple[str, str, str, str]:
    """An event's own columns after its status and time (event, code, description, linked message)."""
    return event.event, event.code, event.description, event.linked_message_id


def find_by_local_id(times: Times, sender: str, local_id: str, limit: int) -> Plan[list[Message]]:
    found = yield rows("find_by_local_id", sender, local_id, limit)
    return (yield from _messages(times, [r[0] for r in found]))


# Inbox and listings ------------------------------------------------------------------------------------------


def list_inbox(
    times: Times, recipient: str, limit: int, after: InboxCursor | None, workflow_filter: WorkflowFilter | None
) -> Plan[tuple[list[str], InboxCursor | None]]:
    params: list[Any] = [recipient]
    if after is not None:
        params += [after.delivered_at, after.message_id]
    shape = None
    if workflow_filter is not None:
        shape = (workflow_filter.op, workflow_filter.negate)
        params.append(paging.like_pattern(workflow_filter))
    params.append(limit + 1)
    found = yield Statement(paging.inbox_page(after is not None, shape), params, Fetch.ROWS, built=True)
    page, cursor = _page(times, found, limit)
    return [r[1] for r in page], cursor


def inbox_cursor(times: Times, recipient: str, message_id: str) -> Plan[InboxCursor | None]:
    found = yield row("inbox_cursor", recipient, message_id)
    return None if found is None else InboxCursor(times(found[0]), found[1])


def count_inbox(recipient: str) -> Plan[int]:
    return int((yield row("count_inbox", recipient))[0])


def count_accepted() -> Plan[int]:
    return int((yield row("count_accepted"))[0])


def list_messages(
    times: Times, mailbox_id: str, box: Box, since: datetime, limit: int, after: InboxCursor | None
) -> Plan[tuple[list[Message], InboxCursor | None]]:
    params: list[Any] = [mailbox_id, since]
    if after is not None:
        params += [after.delivered_at, after.message_id]
    params.append(limit + 1)
    found = yield Statement(paging.rich_page(box, after is not None), params, Fetch.ROWS, built=True)
    page, cursor = _page(times, found, limit)
    return (yield from _messages(times, [r[1] for r in page])), cursor


def _messages(times: Times, message_ids: list[str]) -> Plan[list[Message]]:
    """The listed messages with their events, in order; any deleted meanwhile left out."""
    messages = []
    for message_id in message_ids:
        message = yield from get_message(times, message_id)
        if message is not None:
            messages.append(message)
    return messages


def _page(times: Times, found: list[Any], limit: int) -> tuple[list[Any], InboxCursor | None]:
    """A page's rows (time, message ID) and the cursor after its last one when a row more came back."""
    page = found[:limit]
    cursor = InboxCursor(times(page[-1][0]), page[-1][1]) if len(found) > limit else None
    return page, cursor


# Lifecycle ---------------------------------------------------------------------------------------------------


def undeliverable_candidates(times: Times, now: datetime, limit: int) -> Plan[list[UndeliverableCandidate]]:
    expired = yield rows("expired_messages", now, limit)
    found = [UndeliverableCandidate(message_from_row(r, (), times), Undeliverable.EXPIRED) for r in expired]
    if len(found) < limit:
        deactivated = yield rows("deactivated_messages", now, limit - len(found))
        found += [
            UndeliverableCandidate(message_from_row(r, (), times), Undeliverable.DEACTIVATED) for r in deactivated
        ]
    return found


def mark_undeliverable(claims: list[NonDelivery]) -> Plan[list[str]]:
    """Claim those still accepted (on PostgreSQL, and not held by another node), then change them and store
    their reports; the others are left alone, their reports unstored."""
    if not claims:
        return []
    accepted = yield rows("claim_accepted", [c.message_id for c in claims])
    still = {r[0] for r in accepted}
    claimed = [c for c in claims if c.message_id in still]
    for claim in claimed:
        yield from append_event(claim.message_id, claim.event)
        if claim.report is not None and claim.report_chunk is not None:
            yield from create_message(claim.report, claim.report_chunk)
    return [c.message_id for c in claimed]


def abandon_uploads(created_before: datetime, event: Event, limit: int) -> Plan[list[str]]:
    claimed = yield rows("claim_abandoned_uploads", created_before, limit)
    ids = [r[0] for r in claimed]
    if ids:
        yield from _queue_and_drop_chunks(ids, event.timestamp)
        for message_id in ids:
            yield from append_event(message_id, event)
    return ids


def purge_messages(created_before: datetime, now: datetime, limit: int) -> Plan[list[str]]:
    claimed = yield rows("claim_retention_expired", created_before, limit)
    ids = [r[0] for r in claimed]
    if ids:
        yield from _queue_and_drop_chunks(ids, now)
        yield execute("delete_messages", ids)
    return ids


def _queue_and_drop_chunks(message_ids: list[str], since: datetime) -> Plan[None]:
    """Queue the messages' chunk blobs as orphans (deleted after commit), then delete the chunk rows."""
    yield execute("queue_message_orphans", since, message_ids)
    yield execute("delete_message_chunks", message_ids)


def known_blob_keys(keys: list[str]) -> Plan[set[str]]:
    if not keys:
        return set()
    found = yield rows("known_blob_keys", keys)
    return {r[0] for r in found}


def delete_mailbox_messages(mailbox_id: str | None, now: datetime) -> Plan[int]:
    if mailbox_id is None:
        yield execute("queue_all_orphans", now)
        return int((yield execute("delete_all_messages")))
    yield execute("queue_mailbox_orphans", now, mailbox_id, mailbox_id)
    return int((yield execute("delete_mailbox_messages", mailbox_id, mailbox_id)))


def take_orphan_blobs(limit: int) -> Plan[list[str]]:
    taken = yield rows("take_orphans", limit)
    return [r[0] for r in taken]


# Housekeeping leases -----------------------------------------------------------------------------------------


def claim_lease(name: str, holder: str, until: datetime, now: datetime) -> Plan[bool]:
    """One statement, so the claim is atomic on both stores: PostgreSQL's upsert locks the row (a racing claimer
    waits, then finds the winner's unexpired lease), SQLite's single writer serialises the claims."""
    changed: int = yield execute("claim_lease", name, holder, until, now)
    return changed == 1


def release_lease(name: str, holder: str) -> Plan[bool]:
    return int((yield execute("release_lease", name, holder))) == 1


# Idempotency keys --------------------------------------------------------------------------------------------


class KeyTaken(Exception):
    """Raised inside create_message_once when a send committed at another node holds the key: the plan's
    transaction rolls back (nothing of this send is kept) and the store reads the holder instead."""


def get_idempotency_key(sender: str, key: str) -> Plan[KeyedSend | None]:
    found = yield row("get_idempotency_key", sender, key)
    return None if found is None else KeyedSend(found[1], found[0])


def create_message_once(message: Message, first_chunk: Chunk, key: IdempotencyKey) -> Plan[KeyedSend]:
    """create_message, unless the sender's key is already held: then nothing is written and the holder is the
    answer. The key row goes in after the message row (it refers to it), in the same transaction."""
    held = yield from get_idempotency_key(key.sender, key.key)
    if held is not None:
        return held
    yield from create_message(message, first_chunk)
    claimed = yield execute("claim_idempotency_key", key.sender, key.key, key.fingerprint, message.message_id)
    if claimed != 1:  # PostgreSQL: a racing send's insert committed while this one waited on the key
        raise KeyTaken(key.key)
    return KeyedSend(message.message_id, key.fingerprint)


# Web page sign-ins -------------------------------------------------------------------------------------------
# A session's mailboxes are kept as one text of IDs separated by spaces (a mailbox ID never holds a space).


def create_web_session(session: WebSession) -> Plan[None]:
    yield execute(
        "insert_web_session",
        session.session_key,
        session.user_id,
        session.mailbox_id,
        " ".join(session.mailboxes),
        session.csrf_token,
        session.created_at,
        session.seen_at,
        session.expires_at,
    )


def get_web_session(times: Times, session_key: str) -> Plan[WebSession | None]:
    found = yield row("get_web_session", session_key)
    if found is None:
        return None
    key, user_id, mailbox_id, mailboxes, csrf, created_at, seen_at, expires_at = found
    when = (times(created_at), times(seen_at), times(expires_at))
    return WebSession(key, user_id, mailbox_id, tuple(mailboxes.split()), csrf, *when)


def touch_web_session(session_key: str, seen_at: datetime) -> Plan[None]:
    yield execute("touch_web_session", seen_at, session_key)


def switch_web_session_mailbox(session_key: str, mailbox_id: str) -> Plan[None]:
    yield execute("switch_web_session_mailbox", mailbox_id, session_key)


def delete_web_session(session_key: str) -> Plan[bool]:
    return int((yield execute("delete_web_session", session_key))) == 1


def purge_web_sign_ins(now: datetime, idle_before: datetime, quiet_before: datetime) -> Plan[int]:
    purged = int((yield execute("purge_web_sessions", now, idle_before)))
    yield execute("purge_sign_in_failures", quiet_before, now)
    return purged


def note_sign_in_failure(key: str, at: datetime, quiet_before: datetime) -> Plan[int]:
    """Count the failure and read the count back in one transaction (the upsert's row lock on PostgreSQL, the
    single writer on SQLite, so racing failures each count)."""
    yield execute("note_sign_in_failure", key, at, quiet_before)
    return int((yield row("sign_in_failures", key))[0])


def lock_sign_in(key: str, until: datetime) -> Plan[None]:
    yield execute("lock_sign_in", until, key)


def sign_in_locked_until(times: Times, keys: Sequence[str], now: datetime) -> Plan[datetime | None]:
    latest: datetime | None = None
    for key in keys:
        found = yield row("sign_in_failures", key)
        if found is not None and found[1] is not None:
            until = times(found[1])
            if until > now and (latest is None or until > latest):
                latest = until
    return latest


def clear_sign_in_failures(key: str) -> Plan[None]:
    yield execute("clear_sign_in_failures", key)
