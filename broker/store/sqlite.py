"""The embedded metadata store: SQLite in WAL mode; writes and scans on worker threads, key lookups inline."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from broker.models import Chunk, Event, Mailbox, Message, Patient, Status, Workflow
from broker.store import queries
from broker.store.directory_cache import DirectoryCache
from broker.store.filters import like_pattern
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
    event_from_row,
    from_micros,
    mailbox_from_row,
    mailbox_values,
    message_from_row,
    message_values,
    patient_from_row,
    to_micros,
)
from broker.store.sqlite_writer import Checkpointer, GroupCommitWriter

T = TypeVar("T")
#: Page cache per connection (KiB) and memory-mapped window; see _new_connection.
CACHE_KIB = 64 * 1024
MMAP_BYTES = 1024 * 1024 * 1024
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
Q = queries.load("sqlite.sql")
#: The replay cache's own file, beside the main one (see SqliteStore.use_token).
TOKENS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS auth_tokens (token_key TEXT PRIMARY KEY, expires_at INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS auth_tokens_expiry ON auth_tokens (expires_at)",
)


class SqliteStore:
    """One writer thread (SQLite allows one writer) and a few reader threads, each with its own connection.

    Message state changes commit with synchronous=FULL (durable before the client hears 202); token and
    handshake bookkeeping commits with synchronous=NORMAL, which WAL keeps consistent and crash-safe. Concurrent
    writes share one commit (sqlite_writer.GroupCommitWriter).

    The replay cache (one write per request) lives in a file of its own, `<name>-tokens.sqlite3`, with its own
    writer thread: SQLite has one write lock per file, so in the main file every request's token check waited
    for whatever message commit (and fsync) was under way.
    """

    def __init__(self, path: Path, *, readers: int = 2, busy_timeout_ms: int = 10_000):
        self._path = path
        self._readers = readers
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writer: GroupCommitWriter | None = None
        self._tokens_path = path.with_name(f"{path.stem}-tokens{path.suffix}")
        self._directory = DirectoryCache(path.with_name(f"{path.stem}-directory.stamp"))
        self._tokens: GroupCommitWriter | None = None
        self._tokens_checkpointer: Checkpointer | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._checkpointer: Checkpointer | None = None
        #: The event loop's own read connection, for point lookups (see _lookup).
        self._inline: sqlite3.Connection | None = None

    # Lifecycle -------------------------------------------------------------------------------------------
    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        writer = GroupCommitWriter(self._writer_connection, _translate)
        await asyncio.get_running_loop().run_in_executor(None, writer.start)
        self._writer = writer
        self._checkpointer = Checkpointer(self._new_connection)
        self._checkpointer.start()
        # Before the migrations: the tokens writer adopts tokens the main file held before 0006 dropped them.
        tokens = GroupCommitWriter(self._tokens_writer_connection, _translate, name="sqlite-tokens")
        await asyncio.get_running_loop().run_in_executor(None, tokens.start)
        self._tokens = tokens
        self._tokens_checkpointer = Checkpointer(self._tokens_connection)
        self._tokens_checkpointer.start()
        self._reader = ThreadPoolExecutor(self._readers, "sqlite-reader", initializer=self._connect_reader)
        await self._write(self._migrate)
        self._inline = self._new_connection()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for stoppable in (self._writer, self._checkpointer, self._tokens, self._tokens_checkpointer):
            if stoppable is not None:
                await loop.run_in_executor(None, stoppable.stop)
        if self._reader is not None:
            self._reader.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._writer = self._reader = self._checkpointer = self._inline = None
        self._tokens = self._tokens_checkpointer = None

    def _connect_reader(self) -> None:
        self._local.conn = self._new_connection()

    def _writer_connection(self) -> sqlite3.Connection:
        conn = self._new_connection()
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer thread does it, off the commit path
        return conn

    def _tokens_writer_connection(self) -> sqlite3.Connection:
        conn = self._tokens_connection()
        conn.execute("PRAGMA wal_autocheckpoint=0")
        for statement in TOKENS_SCHEMA:
            conn.execute(statement)
        self._adopt_legacy_tokens(conn)
        return conn

    def _tokens_connection(self) -> sqlite3.Connection:
        conn = self._connect(self._tokens_path)
        conn.execute("PRAGMA synchronous=NORMAL")  # bookkeeping: WAL keeps it consistent without an fsync
        return conn

    def _adopt_legacy_tokens(self, conn: sqlite3.Connection) -> None:
        """Copy the tokens a main file from before migration 0006 still holds (housekeeping purges the expired
        ones as usual): a used token stays valid for hours, so an upgrade must not forget it. Once 0006 has
        dropped the old table there is nothing to do."""
        if not self._path.exists():
            return
        main = sqlite3.connect(self._path, timeout=self._busy_timeout_ms / 1000)
        try:
            has_table = main.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'auth_tokens'"
            ).fetchone()
            rows = main.execute("SELECT token_key, expires_at FROM auth_tokens").fetchall() if has_table else []
        finally:
            main.close()
        if rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR IGNORE INTO auth_tokens (token_key, expires_at) VALUES (?, ?)", rows)
            conn.execute("COMMIT")

    def _new_connection(self) -> sqlite3.Connection:
        conn = self._connect(self._path)
        conn.execute("PRAGMA synchronous=FULL")
        # SQLite's default page cache is 2 MB per connection; once the indexes outgrow it (a million messages
        # is a few hundred MB) every insert and lookup re-reads index pages through system calls. A larger
        # cache and memory-mapped reads keep the hot pages close as the store fills.
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        # Workflow filters match case-sensitively, as workflow IDs are compared everywhere else.
        conn.execute("PRAGMA case_sensitive_like=ON")
        return conn

    def _connect(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout_ms / 1000
        )
        self._enable_wal(conn)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        # When the log starts over (see Checkpointer), the WAL file is cut back to this size, so a burst of
        # writes does not leave a large file behind.
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        with self._lock:
            self._connections.append(conn)
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch a new file to WAL. The switch takes an exclusive lock that SQLite's busy handler does not wait
        for, so processes opening one new file at once retry here rather than fail with "database is locked"."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply numbered migrations not yet applied, in the writer's transaction (BEGIN IMMEDIATE serialises
        nodes and CLI processes that start at once)."""
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in queries.migrations("sqlite"):
            if version in applied:
                continue
            for statement in _split_statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, datetime('now'))", (version, name))

    # Thread plumbing ------------------------------------------------------------------------------------
    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._reader is None:
            raise StoreError("the SQLite store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._reader, self._call_reader, fn, args)

    async def _lookup(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a point lookup by key (a mailbox, a workflow, one message) on the event loop itself.

        A warm B-tree lookup costs tens of microseconds, less than handing it to a reader thread and back (a
        queue, two context switches, the GIL passed twice); moving these lookups inline was 20-30 % more
        requests per second under load (benchmarks/README.md). With the page cache and memory map sized in
        _new_connection the pages are almost always in memory. Scans (lists, counts) stay on reader threads.
        """
        conn = self._inline
        if conn is None:
            raise StoreError("the SQLite store is not open")
        try:
            return fn(conn, *args)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def _write(self, fn: Callable[..., T], *args: Any, durable: bool = True) -> T:
        """Run fn(conn, *args) in a write transaction; durable=False for bookkeeping that may skip the fsync."""
        if self._writer is None:
            raise StoreError("the SQLite store is not open")
        result: T = await self._writer.run(fn, args, durable)
        return result

    def _call_reader(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(self._local.conn, *args)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    # Directory -------------------------------------------------------------------------------------------
    async def get_mailbox(self, mailbox_id: str) -> Mailbox | None:
        return await self._directory.through(("mailbox", mailbox_id), lambda: self._lookup(_get_mailbox, mailbox_id))

    async def put_mailbox(self, mailbox: Mailbox) -> None:
        await self._write(lambda conn: conn.execute(Q["put_mailbox"], mailbox_values(mailbox)))
        self._directory.changed()

    async def list_mailboxes(self) -> list[Mailbox]:
        return await self._read(lambda conn: [mailbox_from_row(r) for r in conn.execute(Q["list_mailboxes"])])

    async def count_mailboxes(self) -> int:
        return await self._read(lambda conn: int(conn.execute(Q["count_mailboxes"]).fetchone()[0]))

    async def record_handshake(self, mailbox_id: str, client: str, at: datetime) -> None:
        await self._write(
            lambda conn: conn.execute(Q["record_handshake"], (to_micros(at), client, mailbox_id)),
            durable=False,
        )

    async def put_workflow(self, workflow: Workflow) -> None:
        def put(conn: sqlite3.Connection) -> None:
            conn.execute(Q["put_workflow"], (workflow.workflow_id, workflow.restricted, workflow.patient_addressing))
            conn.execute(Q["clear_workflow_members"], (workflow.workflow_id,))
            members = [(workflow.workflow_id, "sender", m) for m in workflow.senders]
            members += [(workflow.workflow_id, "receiver", m) for m in workflow.receivers]
            conn.executemany(Q["add_workflow_member"], members)

        await self._write(put)
        self._directory.changed()

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        def get(conn: sqlite3.Connection) -> Workflow | None:
            row = conn.execute(Q["get_workflow"], (workflow_id,)).fetchone()
            return None if row is None else _workflow(conn, row)

        return await self._directory.through(("workflow", workflow_id), lambda: self._lookup(get))

    async def list_workflows(self) -> list[Workflow]:
        return await self._read(
            lambda conn: [_workflow(conn, row) for row in conn.execute(Q["list_workflows"]).fetchall()]
        )

    async def receivers(self, workflow_id: str, ods_code: str | None = None) -> list[Mailbox]:
        def find(conn: sqlite3.Connection) -> list[Mailbox]:
            if ods_code is None:
                rows = conn.execute(Q["receivers"], (workflow_id,))
            else:
                rows = conn.execute(Q["receivers_by_ods"], (workflow_id, ods_code))
            return [mailbox_from_row(r) for r in rows]

        return await self._read(find)

    # Local demographics directory ------------------------------------------------------------------------
    async def put_patients(self, patients: Sequence[Patient]) -> None:
        rows = [(p.nhs_number, _iso_date(p), p.family_name, p.gp_ods_code) for p in patients]
        await self._write(lambda conn: conn.executemany(Q["put_patient"], rows))

    async def get_patient(self, nhs_number: str) -> Patient | None:
        def get(conn: sqlite3.Connection) -> Patient | None:
            row = conn.execute(Q["get_patient"], (nhs_number,)).fetchone()
            return None if row is None else patient_from_row(row)

        return await self._lookup(get)

    # Auth ------------------------------------------------------------------------------------------------
    async def use_token(self, token_key: str, expires_at: datetime) -> bool:
        return await self._token_write(_use_token, token_key, to_micros(expires_at))

    async def purge_tokens(self, now: datetime) -> int:
        return await self._token_write(lambda conn: conn.execute(Q["purge_tokens"], (to_micros(now),)).rowcount)

    async def _token_write(self, fn: Callable[..., T], *args: Any) -> T:
        if self._tokens is None:
            raise StoreError("the SQLite store is not open")
        result: T = await self._tokens.run(fn, args, False)
        return result

    # Messages --------------------------------------------------------------------------------------------
    async def create_message(self, message: Message, first_chunk: Chunk) -> None:
        await self._write(_create_message, message, first_chunk)

    async def get_message(self, message_id: str) -> Message | None:
        return await self._lookup(_get_message, message_id)

    async def get_message_and_chunk(self, message_id: str, number: int) -> tuple[Message | None, Chunk | None]:
        def get(conn: sqlite3.Connection) -> tuple[Message | None, Chunk | None]:
            message = _get_message(conn, message_id)
            if message is None:
                return None, None
            row = conn.execute(Q["get_chunk"], (message_id, number)).fetchone()
            return message, None if row is None else chunk_from_row(message_id, number, row)

        return await self._lookup(get)

    async def add_chunk(self, chunk: Chunk, at: datetime, expires_at: datetime) -> ChunkOutcome:
        return await self._write(_add_chunk, chunk, to_micros(at), to_micros(expires_at))

    async def acknowledge(self, message_id: str, at: datetime) -> bool:
        def ack(conn: sqlite3.Connection) -> bool:
            when = to_micros(at)
            if conn.execute(Q["acknowledge"], (when, when, message_id)).rowcount != 1:
                return False
            _insert_event(conn, message_id, Event(Status.ACKNOWLEDGED, at))
            return True

        return await self._write(ack)

    async def append_event(self, message_id: str, event: Event) -> bool:
        return await self._write(_set_status, message_id, event)

    async def list_inbox(
        self,
        recipient: str,
        limit: int,
        after: InboxCursor | None = None,
        workflow_filter: WorkflowFilter | None = None,
    ) -> tuple[list[str], InboxCursor | None]:
        sql = ["SELECT delivered_at, message_id FROM messages WHERE recipient = ? AND status = 'accepted'"]
        params: list[Any] = [recipient]
        if after is not None:
            sql.append("AND (delivered_at, message_id) > (?, ?)")
            params += [to_micros(after.delivered_at), after.message_id]
        if workflow_filter is not None:
            clause, value = _filter_sql(workflow_filter)
            sql.append(clause)
            params.append(value)
        sql.append("ORDER BY delivered_at, message_id LIMIT ?")
        params.append(limit + 1)
        statement = " ".join(sql)

        def page(conn: sqlite3.Connection) -> tuple[list[str], InboxCursor | None]:
            rows = conn.execute(statement, params).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            cursor = InboxCursor(from_micros(rows[-1][0]), rows[-1][1]) if more else None
            return [r[1] for r in rows], cursor

        return await self._read(page)

    async def inbox_cursor(self, recipient: str, message_id: str) -> InboxCursor | None:
        def find(conn: sqlite3.Connection) -> InboxCursor | None:
            row = conn.execute(Q["inbox_cursor"], (recipient, message_id)).fetchone()
            return None if row is None else InboxCursor(from_micros(row[0]), row[1])

        return await self._lookup(find)

    async def count_inbox(self, recipient: str) -> int:
        return await self._read(lambda conn: int(conn.execute(Q["count_inbox"], (recipient,)).fetchone()[0]))

    async def count_accepted(self) -> int:
        return await self._read(lambda conn: int(conn.execute(Q["count_accepted"]).fetchone()[0]))

    def pool_usage(self) -> tuple[int, int] | None:
        return None

    def directory_listening(self) -> bool | None:
        return None  # the stamp file, not a connection, tells this store of changes

    async def storage_bytes(self) -> dict[str, int]:
        files = {
            "database": self._path,
            "wal": self._path.with_name(self._path.name + "-wal"),
            "tokens": self._tokens_path,
            "tokens_wal": self._tokens_path.with_name(self._tokens_path.name + "-wal"),
        }
        return await asyncio.get_running_loop().run_in_executor(None, _file_sizes, files)

    async def find_by_local_id(self, sender: str, local_id: str, limit: int = 2) -> list[Message]:
        def find(conn: sqlite3.Connection) -> list[Message]:
            ids = [r[0] for r in conn.execute(Q["find_by_local_id"], (sender, local_id, limit))]
            return [m for m in (_get_message(conn, i) for i in ids) if m is not None]

        return await self._read(find)

    async def list_messages(
        self,
        mailbox_id: str,
        box: Box,
        since: datetime,
        limit: int,
        after: InboxCursor | None = None,
    ) -> tuple[list[Message], InboxCursor | None]:
        if box is Box.INBOX:
            sql = ["SELECT created_at, message_id FROM messages WHERE recipient = ? AND status <> 'uploading'"]
        else:
            sql = ["SELECT created_at, message_id FROM messages WHERE sender = ?"]
        params: list[Any] = [mailbox_id]
        sql.append("AND created_at >= ?")
        params.append(to_micros(since))
        if after is not None:
            sql.append("AND (created_at, message_id) < (?, ?)")
            params += [to_micros(after.delivered_at), after.message_id]
        sql.append("ORDER BY created_at DESC, message_id DESC LIMIT ?")
        params.append(limit + 1)
        statement = " ".join(sql)

        def page(conn: sqlite3.Connection) -> tuple[list[Message], InboxCursor | None]:
            rows = conn.execute(statement, params).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            cursor = InboxCursor(from_micros(rows[-1][0]), rows[-1][1]) if more else None
            found = [_get_message(conn, r[1]) for r in rows]
            return [m for m in found if m is not None], cursor

        return await self._read(page)

    # Housekeeping ----------------------------------------------------------------------------------------
    async def undeliverable_candidates(self, now: datetime, limit: int) -> list[UndeliverableCandidate]:
        def find(conn: sqlite3.Connection) -> list[UndeliverableCandidate]:
            when = to_micros(now)
            found = [
                UndeliverableCandidate(message_from_row(r, (), from_micros), Undeliverable.EXPIRED)
                for r in conn.execute(Q["expired_messages"], (when, limit))
            ]
            if len(found) < limit:
                found += [
                    UndeliverableCandidate(message_from_row(r, (), from_micros), Undeliverable.DEACTIVATED)
                    for r in conn.execute(Q["deactivated_messages"], (when, limit - len(found)))
                ]
            return found

        return await self._read(find)

    async def mark_undeliverable(self, claims: list[NonDelivery]) -> list[str]:
        def mark(conn: sqlite3.Connection) -> list[str]:
            # The single writer serialises nodes sharing the file: the status check and the change are atomic.
            wanted = json.dumps([c.message_id for c in claims])
            accepted = {r[0] for r in conn.execute(Q["still_accepted"], (wanted,))}
            claimed = [c for c in claims if c.message_id in accepted]
            for claim in claimed:
                _set_status(conn, claim.message_id, claim.event)
                if claim.report is not None and claim.report_chunk is not None:
                    _create_message(conn, claim.report, claim.report_chunk)
            return [c.message_id for c in claimed]

        return await self._write(mark) if claims else []

    async def abandon_uploads(self, created_before: datetime, event: Event, limit: int) -> list[str]:
        def abandon(conn: sqlite3.Connection) -> list[str]:
            ids = [r[0] for r in conn.execute(Q["abandoned_uploads"], (to_micros(created_before), limit))]
            if ids:
                _queue_and_drop_chunks(conn, ids, to_micros(event.timestamp))
                for message_id in ids:
                    _set_status(conn, message_id, event)
            return ids

        return await self._write(abandon)

    async def purge_messages(self, created_before: datetime, limit: int) -> list[str]:
        def purge(conn: sqlite3.Connection, now: int) -> list[str]:
            ids = [r[0] for r in conn.execute(Q["retention_expired"], (to_micros(created_before), limit))]
            if ids:
                _queue_and_drop_chunks(conn, ids, now)
                conn.execute(Q["delete_messages"], (json.dumps(ids),))
            return ids

        return await self._write(purge, to_micros(_utcnow()))

    async def known_blob_keys(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        return await self._read(lambda conn: {r[0] for r in conn.execute(Q["known_blob_keys"], (json.dumps(keys),))})

    async def delete_mailbox_messages(self, mailbox_id: str | None) -> int:
        def delete(conn: sqlite3.Connection, now: int) -> int:
            if mailbox_id is None:
                conn.execute(Q["queue_all_orphans"], (now,))
                return int(conn.execute(Q["delete_all_messages"]).rowcount)
            conn.execute(Q["queue_mailbox_orphans"], (now, mailbox_id, mailbox_id))
            return int(conn.execute(Q["delete_mailbox_messages"], (mailbox_id, mailbox_id)).rowcount)

        return await self._write(delete, to_micros(_utcnow()))

    async def take_orphan_blobs(self, limit: int) -> list[str]:
        return await self._write(lambda conn: [r[0] for r in conn.execute(Q["take_orphans"], (limit,)).fetchall()])


# Transaction bodies (run on the store's threads) -----------------------------------------------------------


def _translate(exc: sqlite3.Error) -> StoreError:
    """Driver errors become store errors here, so nothing above imports sqlite3."""
    if isinstance(exc, sqlite3.IntegrityError):
        if "messages.message_id" in str(exc):
            return DuplicateMessageId(str(exc))
        return StoreError(f"sqlite integrity error: {exc}")
    return StoreError(f"sqlite error: {exc}")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _split_statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip() and not _only_comments(s)]


def _only_comments(block: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in block.splitlines())


def _get_mailbox(conn: sqlite3.Connection, mailbox_id: str) -> Mailbox | None:
    row = conn.execute(Q["get_mailbox"], (mailbox_id,)).fetchone()
    return None if row is None else mailbox_from_row(row)


def _workflow(conn: sqlite3.Connection, row: Any) -> Workflow:
    members = conn.execute(Q["workflow_members"], (row[0],)).fetchall()
    return Workflow(
        workflow_id=row[0],
        restricted=bool(row[1]),
        senders=tuple(m for role, m in members if role == "sender"),
        receivers=tuple(m for role, m in members if role == "receiver"),
        patient_addressing=bool(row[2]),
    )


def _iso_date(patient: Patient) -> str | None:
    return None if patient.date_of_birth is None else patient.date_of_birth.isoformat()


def _use_token(conn: sqlite3.Connection, token_key: str, expires_at: int) -> bool:
    return bool(conn.execute(Q["use_token"], (token_key, expires_at)).rowcount == 1)


def event_values(message_id: str, event: Event) -> tuple[Any, ...]:
    """insert_event parameters (the message ID twice: once for the row, once for its next seq)."""
    return (
        message_id,
        message_id,
        event.status.value,
        to_micros(event.timestamp),
        event.event,
        event.code,
        event.description,
        event.linked_message_id,
    )


def _insert_event(conn: sqlite3.Connection, message_id: str, event: Event) -> None:
    conn.execute(Q["insert_event"], event_values(message_id, event))


def _set_status(conn: sqlite3.Connection, message_id: str, event: Event) -> bool:
    """Append an event and make its status the message's; False (and nothing written) for an unknown message."""
    params = {"status": event.status.value, "at": to_micros(event.timestamp), "message_id": message_id}
    if conn.execute(Q["set_status"], params).rowcount != 1:
        return False
    _insert_event(conn, message_id, event)
    return True


def _queue_and_drop_chunks(conn: sqlite3.Connection, message_ids: list[str], since: int) -> None:
    """Queue the messages' chunk blobs as orphans (deleted after commit), then delete the chunk rows."""
    wanted = json.dumps(message_ids)
    conn.execute(Q["queue_message_orphans"], (since, wanted))
    conn.execute(Q["delete_message_chunks"], (wanted,))


def _create_message(conn: sqlite3.Connection, message: Message, first_chunk: Chunk) -> None:
    conn.execute(Q["insert_message"], message_values(message, to_micros))
    conn.execute(Q["insert_chunk"], chunk_values(first_chunk))
    for event in message.events:
        _insert_event(conn, message.message_id, event)


def _get_message(conn: sqlite3.Connection, message_id: str) -> Message | None:
    row = conn.execute(Q["get_message"], (message_id,)).fetchone()
    if row is None:
        return None
    events = tuple(event_from_row(e) for e in conn.execute(Q["get_events"], (message_id,)))
    return message_from_row(row, events, from_micros)


def _add_chunk(conn: sqlite3.Connection, chunk: Chunk, at: int, expires_at: int) -> ChunkOutcome:
    row = conn.execute(Q["message_status"], (chunk.message_id,)).fetchone()
    if row is None:
        return ChunkOutcome.NOT_FOUND
    status, total = row
    if status != Status.UPLOADING.value:
        return ChunkOutcome.NOT_UPLOADING
    previous = conn.execute(Q["get_chunk"], (chunk.message_id, chunk.number)).fetchone()
    if previous is not None and previous[0] and previous[0] != chunk.blob_key:
        conn.execute(Q["queue_orphan"], (previous[0], at))
    conn.execute(Q["upsert_chunk"], chunk_values(chunk))
    stored, size = conn.execute(Q["chunk_totals"], (chunk.message_id,)).fetchone()
    if stored < total:
        conn.execute(Q["set_file_size"], (size, chunk.message_id))
        return ChunkOutcome.STORED
    conn.execute(Q["deliver"], (at, expires_at, size, at, chunk.message_id))
    _insert_event(
        conn,
        chunk.message_id,
        Event(Status.ACCEPTED, from_micros(at), "TRANSFER", "00", "Transferred to recipient mailbox"),
    )
    return ChunkOutcome.COMPLETED


def _filter_sql(workflow_filter: WorkflowFilter) -> tuple[str, str]:
    if workflow_filter.op is FilterOp.EQUALS:
        return f"AND workflow_id {'<>' if workflow_filter.negate else '='} ?", like_pattern(workflow_filter)
    return f"AND workflow_id {'NOT LIKE' if workflow_filter.negate else 'LIKE'} ? ESCAPE '\\'", like_pattern(
        workflow_filter
    )


def _file_sizes(files: dict[str, Path]) -> dict[str, int]:
    """Each file's size; 0 for one that is not there (a WAL exists only while connections are open)."""
    sizes = {}
    for part, path in files.items():
        try:
            sizes[part] = path.stat().st_size
        except FileNotFoundError:
            sizes[part] = 0
    return sizes
