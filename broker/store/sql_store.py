"""Every metadata role, once, over the plans in transactions.py; a dialect supplies only how plans run.

A store method says what kind of work a plan is, and the dialect decides how to run that kind:

| kind      | what it is                                    | SQLite (sqlite.py)          | PostgreSQL (postgres.py) |
|-----------|-----------------------------------------------|-----------------------------|--------------------------|
| lookup    | a point read by key, on the request path      | inline on the event loop    | a pooled connection      |
| scan      | a list or a count                             | a reader thread             | a pooled connection      |
| change    | a state change, durable before it returns     | the writer thread, fsync'd  | one transaction          |
| single    | a state change made by one statement          | the writer thread, fsync'd  | autocommit, no BEGIN     |
| note      | one-statement bookkeeping that may skip fsync | the writer thread, no fsync | one statement            |
| token     | the replay cache's write                      | the tokens file's writer    | one statement            |

`single` is what a send, a chunk upload and an acknowledgement are: each is one statement on PostgreSQL, so
one round trip, where a transaction would add BEGIN and COMMIT (transactions.py, sql/postgres.sql).

Adding a table costs its queries in sql/queries.sql (or one per dialect where they truly differ), a plan in
transactions.py and a method here: nothing per dialect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from broker.models import Chunk, Event, Mailbox, Message, Patient, Workflow
from broker.store import transactions as tx
from broker.store.directory_cache import DirectoryCache
from broker.store.protocol import (
    Box,
    ChunkAnswer,
    ChunkUpload,
    IdempotencyKey,
    InboxCursor,
    KeyedSend,
    NonDelivery,
    StoreError,
    UndeliverableCandidate,
    WebSession,
    WorkflowFilter,
)

T = TypeVar("T")
PlanFunction = Callable[..., tx.Plan[T]]


class SqlStore:
    """The roles of broker.store.protocol over a dialect's five runners (see the module docstring)."""

    def __init__(self, directory: DirectoryCache, times: tx.Times):
        self._directory = directory
        self._times = times

    # What a dialect supplies -------------------------------------------------------------------------------
    def _lookup(self, plan: PlanFunction[T], *args: Any) -> Awaitable[T]:
        raise NotImplementedError

    def _scan(self, plan: PlanFunction[T], *args: Any) -> Awaitable[T]:
        raise NotImplementedError

    def _change(self, plan: PlanFunction[T], *args: Any) -> Awaitable[T]:
        raise NotImplementedError

    def _single(self, plan: PlanFunction[T], *args: Any) -> Awaitable[T]:
        """A change whose plan yields statements each complete on its own (one, or one run again): no statement
        depends on another's being in the same transaction."""
        raise NotImplementedError

    def _note(self, plan: PlanFunction[T], *args: Any) -> Awaitable[T]:
        raise NotImplementedError

    def _token(self, plan: PlanFunction[T], *args: Any) -> Awaitable[T]:
        raise NotImplementedError

    # Directory -------------------------------------------------------------------------------------------
    async def get_mailbox(self, mailbox_id: str) -> Mailbox | None:
        return await self._directory.through(("mailbox", mailbox_id), lambda: self._lookup(tx.get_mailbox, mailbox_id))

    async def put_mailbox(self, mailbox: Mailbox) -> None:
        await self._change(tx.put_mailbox, mailbox)
        self._directory.changed()  # this node at once; others by the stamp file or the database's notification

    async def list_mailboxes(self) -> list[Mailbox]:
        return await self._scan(tx.list_mailboxes)

    async def count_mailboxes(self) -> int:
        return await self._scan(tx.count_mailboxes)

    async def record_handshake(self, mailbox_id: str, client: str, at: datetime) -> None:
        await self._note(tx.record_handshake, mailbox_id, client, at)

    async def put_workflow(self, workflow: Workflow) -> None:
        await self._change(tx.put_workflow, workflow)
        self._directory.changed()

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        return await self._directory.through(
            ("workflow", workflow_id), lambda: self._lookup(tx.get_workflow, workflow_id)
        )

    async def list_workflows(self) -> list[Workflow]:
        return await self._scan(tx.list_workflows)

    async def receivers(self, workflow_id: str, ods_code: str | None = None) -> list[Mailbox]:
        return await self._scan(tx.receivers, workflow_id, ods_code)

    # Local demographics directory ------------------------------------------------------------------------
    async def put_patients(self, patients: Sequence[Patient]) -> None:
        await self._change(tx.put_patients, list(patients))

    async def get_patient(self, nhs_number: str) -> Patient | None:
        return await self._lookup(tx.get_patient, nhs_number)

    # Replay cache ----------------------------------------------------------------------------------------
    async def use_token(self, token_key: str, expires_at: datetime) -> bool:
        return await self._token(tx.use_token, token_key, expires_at)

    async def purge_tokens(self, now: datetime) -> int:
        return await self._token(tx.purge_tokens, now)

    # Messages --------------------------------------------------------------------------------------------
    async def create_message(self, message: Message, first_chunk: Chunk) -> None:
        await self._single(tx.create_message, message, first_chunk)

    async def get_message(self, message_id: str) -> Message | None:
        return await self._lookup(tx.get_message, self._times, message_id)

    async def get_message_and_chunk(self, message_id: str, number: int) -> tuple[Message | None, Chunk | None]:
        return await self._lookup(tx.get_message_and_chunk, self._times, message_id, number)

    async def add_chunk(self, chunk: Chunk, upload: ChunkUpload, delivery: Event, expires_at: datetime) -> ChunkAnswer:
        return await self._single(tx.add_chunk, chunk, upload, delivery, expires_at)

    async def acknowledge(self, message_id: str, recipient: str, event: Event) -> str | None:
        return await self._single(tx.acknowledge, message_id, recipient, event)

    async def find_by_local_id(self, sender: str, local_id: str, limit: int = 2) -> list[Message]:
        return await self._scan(tx.find_by_local_id, self._times, sender, local_id, limit)

    # Inbox and listings ----------------------------------------------------------------------------------
    async def list_inbox(
        self,
        recipient: str,
        limit: int,
        after: InboxCursor | None = None,
        workflow_filter: WorkflowFilter | None = None,
    ) -> tuple[list[str], InboxCursor | None]:
        return await self._scan(tx.list_inbox, self._times, recipient, limit, after, workflow_filter)

    async def inbox_cursor(self, recipient: str, message_id: str) -> InboxCursor | None:
        return await self._lookup(tx.inbox_cursor, self._times, recipient, message_id)

    async def count_inbox(self, recipient: str) -> int:
        return await self._scan(tx.count_inbox, recipient)

    async def list_messages(
        self,
        mailbox_id: str,
        box: Box,
        since: datetime,
        limit: int,
        after: InboxCursor | None = None,
    ) -> tuple[list[Message], InboxCursor | None]:
        return await self._scan(tx.list_messages, self._times, mailbox_id, box, since, limit, after)

    # Lifecycle -------------------------------------------------------------------------------------------
    async def undeliverable_candidates(self, now: datetime, limit: int) -> list[UndeliverableCandidate]:
        return await self._scan(tx.undeliverable_candidates, self._times, now, limit)

    async def mark_undeliverable(self, claims: list[NonDelivery]) -> list[str]:
        return await self._change(tx.mark_undeliverable, claims) if claims else []

    async def abandon_uploads(self, created_before: datetime, event: Event, limit: int) -> list[str]:
        return await self._change(tx.abandon_uploads, created_before, event, limit)

    async def purge_messages(self, created_before: datetime, limit: int) -> list[str]:
        return await self._change(tx.purge_messages, created_before, datetime.now(UTC), limit)

    async def known_blob_keys(self, keys: list[str]) -> set[str]:
        return await self._scan(tx.known_blob_keys, keys) if keys else set()

    async def take_orphan_blobs(self, limit: int) -> list[str]:
        return await self._change(tx.take_orphan_blobs, limit)

    # Housekeeping leases ---------------------------------------------------------------------------------
    async def claim_lease(self, name: str, holder: str, until: datetime, now: datetime) -> bool:
        return await self._change(tx.claim_lease, name, holder, until, now)

    async def release_lease(self, name: str, holder: str) -> bool:
        return await self._change(tx.release_lease, name, holder)

    # Sandbox administration ------------------------------------------------------------------------------
    async def append_event(self, message_id: str, event: Event) -> bool:
        return await self._single(tx.append_event, message_id, event)

    async def delete_mailbox_messages(self, mailbox_id: str | None) -> int:
        return await self._change(tx.delete_mailbox_messages, mailbox_id, datetime.now(UTC))

    # Figures ---------------------------------------------------------------------------------------------
    async def count_accepted(self) -> int:
        return await self._scan(tx.count_accepted)

    # Idempotency keys ------------------------------------------------------------------------------------
    async def get_send_by_key(self, sender: str, key: str) -> KeyedSend | None:
        return await self._lookup(tx.get_idempotency_key, sender, key)

    async def create_message_once(self, message: Message, first_chunk: Chunk, key: IdempotencyKey) -> KeyedSend:
        try:
            return await self._change(tx.create_message_once, message, first_chunk, key)
        except tx.KeyTaken:
            held = await self._lookup(tx.get_idempotency_key, key.sender, key.key)
            if held is None:  # the holder was purged between the two statements: a retention-old key
                raise StoreError(f"idempotency key {key.key!r} was held and is gone") from None
            return held

    # Web page sign-ins -----------------------------------------------------------------------------------
    async def create_web_session(self, session: WebSession) -> None:
        await self._change(tx.create_web_session, session)

    async def get_web_session(self, session_key: str) -> WebSession | None:
        return await self._lookup(tx.get_web_session, self._times, session_key)

    async def touch_web_session(self, session_key: str, seen_at: datetime) -> None:
        await self._note(tx.touch_web_session, session_key, seen_at)

    async def switch_web_session_mailbox(self, session_key: str, mailbox_id: str) -> None:
        await self._change(tx.switch_web_session_mailbox, session_key, mailbox_id)

    async def delete_web_session(self, session_key: str) -> bool:
        return await self._change(tx.delete_web_session, session_key)

    async def purge_web_sign_ins(self, now: datetime, idle_before: datetime, quiet_before: datetime) -> int:
        return await self._change(tx.purge_web_sign_ins, now, idle_before, quiet_before)

    async def note_sign_in_failure(self, key: str, at: datetime, quiet_before: datetime) -> int:
        return await self._change(tx.note_sign_in_failure, key, at, quiet_before)

    async def lock_sign_in(self, key: str, until: datetime) -> None:
        await self._change(tx.lock_sign_in, key, until)

    async def sign_in_locked_until(self, keys: Sequence[str], now: datetime) -> datetime | None:
        return await self._lookup(tx.sign_in_locked_until, self._times, list(keys), now)

    async def clear_sign_in_failures(self, key: str) -> None:
        await self._change(tx.clear_sign_in_failures, key)
