"""The production metadata store: PostgreSQL through an asyncpg pool, every state change one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from broker.models import Chunk, Event, Mailbox, Message, Patient, Status, Workflow
from broker.store import queries
from broker.store.directory_cache import DirectoryCache
from broker.store.filters import like_pattern
from broker.store.pg_directory import DirectoryListener
from broker.store.protocol import (
    Box,
    ChunkOutcome,
    DuplicateMessageId,
    FilterOp,
    InboxCursor,
    NonDelivery,
    StoreError,
    Undeliverable,
    UndeliverableCandidate,
    WorkflowFilter,
)
from broker.store.rows import (
    chunk_from_row,
    chunk_values,
    mailbox_from_row,
    mailbox_values,
    message_from_row,
    message_values,
    patient_from_row,
)

try:
    import asyncpg
except ImportError:  # pragma: no cover - exercised only without the extra installed
    asyncpg = None

Q = queries.load("postgres.sql")
#: Serialises migrations across nodes starting at once (an arbitrary constant: "MESH" in ASCII).
MIGRATION_LOCK = 0x4D455348
INSTALL_HINT = "PostgreSQL support needs asyncpg: pip install 'mesh-broker[postgres]'"


async def _no_session_state(_conn: Any) -> None:
    """The pool's reset step, which by default sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` on every release: a round trip per store call, about a sixth of the event loop's time and a fifth
    of the requests a second under load (benchmarks/README.md). Nothing here needs it. asyncpg still rolls back
    a transaction left open and drops listeners before calling this, and this store keeps no other session state
    on pool connections: no SET, no session-level advisory lock (migrations take pg_advisory_xact_lock), no
    LISTEN (the directory listener has a connection of its own), no cursor outside a transaction."""


class _Translate:
    """Turns asyncpg and connection errors into StoreError at this boundary."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None or asyncpg is None:
            return
        if isinstance(exc, asyncpg.UniqueViolationError) and "messages_pkey" in str(exc):
            raise DuplicateMessageId(str(exc)) from None
        if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
            raise StoreError(f"postgresql error: {exc}") from exc


class PostgresStore:
    """Stateless over a pool: any node may serve any request, since every shared fact lives in the database.

    The one thing a node keeps is a cache of mailboxes and workflows, forgotten whenever the database announces
    a directory change (broker/store/pg_directory.py)."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        migrate: bool = True,
        directory_cache: bool = True,
        directory_retry_seconds: tuple[float, ...] | None = None,
    ):
        if asyncpg is None:
            raise StoreError(INSTALL_HINT)
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._migrate_on_open = migrate
        self._pool: asyncpg.Pool | None = None
        self._directory = DirectoryCache(None)
        self._directory.suspend()  # until the listener is in place; for good with directory_cache=False
        retry = {"retry_seconds": directory_retry_seconds} if directory_retry_seconds else {}
        self._listener = DirectoryListener(dsn, self._directory, **retry) if directory_cache else None

    async def open(self) -> None:
        async with _Translate():
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._min_size, max_size=self._max_size, reset=_no_session_state
            )
        if self._migrate_on_open:
            await self.migrate()
        if self._listener is not None:
            await self._listener.start()  # after the migrations, which create the triggers it needs

    def directory_listening(self) -> bool | None:
        return None if self._listener is None else self._listener.listening

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open")
        return self._pool

    async def migrate(self) -> list[int]:
        """Apply pending numbered migrations under an advisory lock; returns the versions applied."""
        applied_now: list[int] = []
        async with _Translate(), self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in queries.migrations("postgres"):
                if version in done:
                    continue
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
                applied_now.append(version)
        return applied_now

    # Directory -------------------------------------------------------------------------------------------
    async def get_mailbox(self, mailbox_id: str) -> Mailbox | None:
        async def fetch() -> Mailbox | None:
            async with _Translate():
                row = await self.pool.fetchrow(Q["get_mailbox"], mailbox_id)
            return None if row is None else mailbox_from_row(row)

        return await self._directory.through(("mailbox", mailbox_id), fetch)

    async def put_mailbox(self, mailbox: Mailbox) -> None:
        async with _Translate():
            await self.pool.execute(Q["put_mailbox"], *mailbox_values(mailbox))
        self._directory.changed()  # this node at once; the others when the trigger's notification arrives

    async def list_mailboxes(self) -> list[Mailbox]:
        async with _Translate():
            return [mailbox_from_row(r) for r in await self.pool.fetch(Q["list_mailboxes"])]

    async def count_mailboxes(self) -> int:
        async with _Translate():
            return int(await self.pool.fetchval(Q["count_mailboxes"]))

    async def record_handshake(self, mailbox_id: str, client: str, at: datetime) -> None:
        async with _Translate():
            await self.pool.execute(Q["record_handshake"], at, client, mailbox_id)

    async def put_workflow(self, workflow: Workflow) -> None:
        members = [(workflow.workflow_id, "sender", m) for m in workflow.senders]
        members += [(workflow.workflow_id, "receiver", m) for m in workflow.receivers]
        async with _Translate(), self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                Q["put_workflow"], workflow.workflow_id, workflow.restricted, workflow.patient_addressing
            )
            await conn.execute(Q["clear_workflow_members"], workflow.workflow_id)
            if members:
                await conn.executemany(Q["add_workflow_member"], members)
        self._directory.changed()

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        async def fetch() -> Workflow | None:
            async with _Translate(), self.pool.acquire() as conn:
                row = await conn.fetchrow(Q["get_workflow"], workflow_id)
                return None if row is None else await _workflow(conn, row)

        return await self._directory.through(("workflow", workflow_id), fetch)

    async def list_workflows(self) -> list[Workflow]:
        async with _Translate(), self.pool.acquire() as conn:
            return [await _workflow(conn, row) for row in await conn.fetch(Q["list_workflows"])]

    async def receivers(self, workflow_id: str, ods_code: str | None = None) -> list[Mailbox]:
        async with _Translate():
            if ods_code is None:
                rows = await self.pool.fetch(Q["receivers"], workflow_id)
            else:
                rows = await self.pool.fetch(Q["receivers_by_ods"], workflow_id, ods_code)
        return [mailbox_from_row(r) for r in rows]

    # Local demographics directory ------------------------------------------------------------------------
    async def put_patients(self, patients: Sequence[Patient]) -> None:
        rows = [(p.nhs_number, p.date_of_birth, p.family_name, p.gp_ods_code) for p in patients]
        if not rows:
            return
        async with _Translate(), self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(Q["put_patient"], rows)

    async def get_patient(self, nhs_number: str) -> Patient | None:
        async with _Translate():
            row = await self.pool.fetchrow(Q["get_patient"], nhs_number)
        return None if row is None else patient_from_row(row)

    # Auth ------------------------------------------------------------------------------------------------
    async def use_token(self, token_key: str, expires_at: datetime) -> bool:
        async with _Translate():
            return await self.pool.fetchval(Q["use_token"], token_key, expires_at) is not None

    async def purge_tokens(self, now: datetime) -> int:
        async with _Translate():
            return _rowcount(await self.pool.execute(Q["purge_tokens"], now))

    # Messages --------------------------------------------------------------------------------------------
    async def create_message(self, message: Message, first_chunk: Chunk) -> None:
        async with _Translate(), self.pool.acquire() as conn, conn.transaction():
            await _create_message(conn, message, first_chunk)

    async def get_message(self, message_id: str) -> Message | None:
        async with _Translate(), self.pool.acquire() as conn:
            return await _get_message(conn, message_id)

    async def get_message_and_chunk(self, message_id: str, number: int) -> tuple[Message | None, Chunk | None]:
        async with _Translate(), self.pool.acquire() as conn:
            message = await _get_message(conn, message_id)
            if message is None:
                return None, None
            row = await conn.fetchrow(Q["get_chunk"], message_id, number)
        return message, None if row is None else chunk_from_row(message_id, number, row)

    async def add_chunk(self, chunk: Chunk, at: datetime, expires_at: datetime) -> ChunkOutcome:
        async with _Translate(), self.pool.acquire() as conn, conn.transaction():
            # The row lock serialises chunks of one message arriving at different nodes.
            row = await conn.fetchrow(Q["lock_message"], chunk.message_id)
            if row is None:
                return ChunkOutcome.NOT_FOUND
            if row[0] != Status.UPLOADING.value:
                return ChunkOutcome.NOT_UPLOADING
            previous = await conn.fetchrow(Q["get_chunk"], chunk.message_id, chunk.number)
            if previous is not None and previous[0] and previous[0] != chunk.blob_key:
                await conn.execute(Q["queue_orphan"], previous[0], at)
            await conn.execute(Q["upsert_chunk"], *chunk_values(chunk))
            stored, size = await conn.fetchrow(Q["chunk_totals"], chunk.message_id)
            if stored < row[1]:
                await conn.execute(Q["set_file_size"], size, chunk.message_id)
                return ChunkOutcome.STORED
            await conn.execute(Q["deliver"], at, expires_at, size, chunk.message_id)
            await _insert_event(
                conn,
                chunk.message_id,
                Event(Status.ACCEPTED, at, "TRANSFER", "00", "Transferred to recipient mailbox"),
            )
            return ChunkOutcome.COMPLETED

    async def acknowledge(self, message_id: str, at: datetime) -> bool:
        async with _Translate(), self.pool.acquire() as conn, conn.transaction():
            # Of two nodes racing, the UPDATE's row lock lets exactly one see status 'accepted'.
            if _rowcount(await conn.execute(Q["acknowledge"], at, message_id)) != 1:
                return False
            await _insert_event(conn, message_id, Event(Status.ACKNOWLEDGED, at))
            return True

    async def append_event(self, message_id: str, event: Event) -> bool:
        async with _Translate(), self.pool.acquire() as conn, conn.transaction():
            return await _set_status(conn, message_id, event)

    async def list_inbox(
        self,
        recipient: str,
        limit: int,
        after: InboxCursor | None = None,
        workflow_filter: WorkflowFilter | None = None,
    ) -> tuple[list[str], InboxCursor | None]:
        sql = ["SELECT delivered_at, message_id FROM messages WHERE recipient = $1 AND status = 'accepted'"]
        params: list[Any] = [recipient]
        if after is not None:
            sql.append(f"AND (delivered_at, message_id) > (${len(params) + 1}, ${len(params) + 2})")
            params += [after.delivered_at, after.message_id]
        if workflow_filter is not None:
            sql.append(_filter_clause(workflow_filter, len(params) + 1))
            params.append(like_pattern(workflow_filter))
        sql.append(f"ORDER BY delivered_at, message_id LIMIT ${len(params) + 1}")
        params.append(limit + 1)
        async with _Translate():
            rows = await self.pool.fetch(" ".join(sql), *params)
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = InboxCursor(_utc(rows[-1][0]), rows[-1][1]) if more else None
        return [r[1] for r in rows], cursor

    async def inbox_cursor(self, recipient: str, message_id: str) -> InboxCursor | None:
        async with _Translate():
            row = await self.pool.fetchrow(Q["inbox_cursor"], recipient, message_id)
        return None if row is None else InboxCursor(_utc(row[0]), row[1])

    async def count_inbox(self, recipient: str) -> int:
        async with _Translate():
            return int(await self.pool.fetchval(Q["count_inbox"], recipient))

    async def count_accepted(self) -> int:
        async with _Translate():
            return int(await self.pool.fetchval(Q["count_accepted"]))

    def pool_usage(self) -> tuple[int, int] | None:
        if self._pool is None:
            return None
        size = self._pool.get_size()
        return size, size - self._pool.get_idle_size()

    async def storage_bytes(self) -> dict[str, int]:
        async with _Translate():
            return {"database": int(await self.pool.fetchval("SELECT pg_database_size(current_database())"))}

    async def find_by_local_id(self, sender: str, local_id: str, limit: int = 2) -> list[Message]:
        async with _Translate(), self.pool.acquire() as conn:
            ids = [r[0] for r in await conn.fetch(Q["find_by_local_id"], sender, local_id, limit)]
            found = [await _get_message(conn, i) for i in ids]
        return [m for m in found if m is not None]

    async def list_messages(
        self,
        mailbox_id: str,
        box: Box,
        since: datetime,
        limit: int,
        after: InboxCursor | None = None,
    ) -> tuple[list[Message], InboxCursor | None]:
        if box is Box.INBOX:
            sql = ["SELECT created_at, message_id FROM messages WHERE recipient = $1 AND status <> 'uploading'"]
        else:
            sql = ["SELECT created_at, message_id FROM messages WHERE sender = $1"]
        params: list[Any] = [mailbox_id, since]
        sql.append("AND created_at >= $2")
        if after is not None:
            sql.append("AND (created_at, message_id) < ($3, $4)")
            params += [after.delivered_at, after.message_id]
        sql.append(f"ORDER BY created_at DESC, message_id DESC LIMIT ${len(params) + 1}")
        params.append(limit + 1)
        async with _Translate(), self.pool.acquire() as conn:
            rows = await conn.fetch(" ".join(sql), *params)
            more = len(rows) > limit
            rows = rows[:limit]
            found = [await _get_message(conn, r[1]) for r in rows]
        cursor = InboxCursor(_utc(rows[-1][0]), rows[-1][1]) if more else None
        return [m for m in found if m is not None], cursor

    # Housekeeping ----------------------------------------------------------------------------------------
    async def undeliverable_candidates(self, now: datetime, limit: int) -> list[UndeliverableCandidate]:
        async with _Translate(), self.pool.acquire() as conn:
            found = [
                UndeliverableCandidate(message_from_row(r, (), _utc), Undeliverable.EXPIRED)
                for r in await conn.fetch(Q["expired_messages"], now, limit)
            ]
            if len(found) < limit:
                found += [
                    UndeliverableCandidate(message_from_row(r, (), _utc), Undeliverable.DEACTIVATED)
                    for r in await conn.fetch(Q["deactivated_messages"], now, limit - len(found))
                ]
        return found

    async def mark_undeliverable(self, claims: list[NonDelivery]) -> list[str]:
        if not claims:
            return []
        async with _Translate(), self.pool.acquire() as conn, conn.transaction():
            # Row locks make the claim: a message another node holds is skipped, not waited for, and one it has
            # already made undeliverable is no longer accepted; either way this node changes nothing for it.
            rows = await conn.fetch(Q["claim_accepted"], [c.message_id for c in claims])
            locked = {r[0] for r in rows}
            claimed = [c for c in claims if c.message_id in locked]
            for claim in claimed:
                await _set_status(conn, claim.message_id, claim.event)
                if claim.report is not None and claim.report_chunk is not None:
                    await _create_message(conn, claim.report, claim.report_chunk)
        return [c.message_id for c in claimed]

    async def abandon_uploads(self, created_before: datetime, event: Event, limit: int) -> list[str]:
        async with _Translate(), self.pool.acquire() as conn, conn.transaction():
            ids = [r[0] for r in await conn.fetch(Q["claim_abandoned_uploads"], created_before, limit)]
            if ids:
                await _queue_and_drop_chunks(conn, ids, event.timestamp)
                for message_id in ids:
                    await _set_status(conn, message_id, event)
        return ids

    async def purge_messages(self, created_before: datetime, limit: int) -> list[str]:
        async with _Translate(), self.pool.acquire() as conn, conn.transaction():
            ids = [r[0] for r in await conn.fetch(Q["claim_retention_expired"], created_before, limit)]
            if ids:
                await _queue_and_drop_chunks(conn, ids, datetime.now(UTC))
                await conn.execute(Q["delete_messages"], ids)
        return ids

    async def known_blob_keys(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        async with _Translate():
            return {r[0] for r in await self.pool.fetch(Q["known_blob_keys"], keys)}

    async def delete_mailbox_messages(self, mailbox_id: str | None) -> int:
        now = datetime.now(UTC)
        async with _Translate(), self.pool.acquire() as conn, conn.transaction():
            if mailbox_id is None:
                await conn.execute(Q["queue_all_orphans"], now)
                return _rowcount(await conn.execute(Q["delete_all_messages"]))
            await conn.execute(Q["queue_mailbox_orphans"], now, mailbox_id)
            return _rowcount(await conn.execute(Q["delete_mailbox_messages"], mailbox_id))

    async def take_orphan_blobs(self, limit: int) -> list[str]:
        async with _Translate():
            return [r[0] for r in await self.pool.fetch(Q["take_orphans"], limit)]


def _same(value: datetime) -> datetime:
    return value


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _maybe_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _rowcount(status: str) -> int:
    """asyncpg returns the command tag ('UPDATE 1', 'DELETE 3'); the count is its last word."""
    return int(status.rsplit(" ", 1)[-1])


def _filter_clause(workflow_filter: WorkflowFilter, index: int) -> str:
    if workflow_filter.op is FilterOp.EQUALS:
        return f"AND workflow_id {'<>' if workflow_filter.negate else '='} ${index}"
    return f"AND workflow_id {'NOT LIKE' if workflow_filter.negate else 'LIKE'} ${index} ESCAPE '\\'"


async def _workflow(conn: asyncpg.Connection, row: Any) -> Workflow:
    members = await conn.fetch(Q["workflow_members"], row[0])
    return Workflow(
        workflow_id=row[0],
        restricted=bool(row[1]),
        senders=tuple(m for role, m in members if role == "sender"),
        receivers=tuple(m for role, m in members if role == "receiver"),
        patient_addressing=bool(row[2]),
    )


async def _create_message(conn: asyncpg.Connection, message: Message, first_chunk: Chunk) -> None:
    await conn.execute(Q["insert_message"], *message_values(message, _same))
    await conn.execute(Q["insert_chunk"], *chunk_values(first_chunk))
    for event in message.events:
        await _insert_event(conn, message.message_id, event)


async def _set_status(conn: asyncpg.Connection, message_id: str, event: Event) -> bool:
    """Append an event and make its status the message's; False (and nothing written) for an unknown message."""
    if _rowcount(await conn.execute(Q["set_status"], event.status.value, event.timestamp, message_id)) != 1:
        return False
    await _insert_event(conn, message_id, event)
    return True


async def _queue_and_drop_chunks(conn: asyncpg.Connection, message_ids: list[str], since: datetime) -> None:
    """Queue the messages' chunk blobs as orphans (deleted after commit), then delete the chunk rows."""
    await conn.execute(Q["queue_message_orphans"], since, message_ids)
    await conn.execute(Q["delete_message_chunks"], message_ids)


async def _insert_event(conn: asyncpg.Connection, message_id: str, event: Event) -> None:
    await conn.execute(
        Q["insert_event"],
        message_id,
        event.status.value,
        event.timestamp,
        event.event,
        event.code,
        event.description,
        event.linked_message_id,
    )


async def _get_message(conn: asyncpg.Connection, message_id: str) -> Message | None:
    row = await conn.fetchrow(Q["get_message"], message_id)
    if row is None:
        return None
    events = tuple(
        Event(Status(e[0]), _utc(e[1]), e[2], e[3], e[4], e[5]) for e in await conn.fetch(Q["get_events"], message_id)
    )
    return message_from_row(row, events, _utc)
