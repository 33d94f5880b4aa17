"""The embedded store's files, threads and connections: where each kind of SQLite work runs.

- the main file (`mesh.sqlite3`): one writer thread (SQLite allows one writer) committing concurrent writes
  together (sqlite_writer.GroupCommitWriter), a few reader threads for scans (sqlite_readers.ReaderThreads), and
  the event loop's own connection for point lookups;
- the replay cache's file (`<name>-tokens.sqlite3`) with a writer of its own: SQLite has one write lock per
  file, and in the main file every request's token check waited for whatever message commit (and fsync) was
  under way;
- a checkpointer thread per file, so no commit pays for moving the WAL into the database.

Message state changes commit with synchronous=FULL (durable before the client hears 202); token and handshake
bookkeeping commits with synchronous=NORMAL, which WAL keeps consistent and crash-safe.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from broker.store import queries
from broker.store.protocol import DuplicateMessageId, StoreError, StoreUnavailable
from broker.store.sqlite_readers import ReaderThreads
from broker.store.sqlite_writer import Checkpointer, GroupCommitWriter

T = TypeVar("T")
#: Page cache per connection (KiB; MESH_SQLITE_CACHE_MIB) and memory-mapped window; see _new_connection.
CACHE_KIB = 2 * 1024
MMAP_BYTES = 1024 * 1024 * 1024
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
#: SQLite's primary result codes that say the files cannot serve now, rather than that a statement is wrong: busy or
#: locked past the busy timeout, an I/O error, a file that cannot be opened, a full disk.
UNAVAILABLE_CODES = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_FULL}
)
#: The replay cache's own file, beside the main one.
TOKENS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS auth_tokens (token_key TEXT PRIMARY KEY, expires_at INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS auth_tokens_expiry ON auth_tokens (expires_at)",
)


class SqliteConnections:
    """Opens the two files, runs `fn(conn, *args)` where each kind of work belongs, and closes them."""

    def __init__(self, path: Path, *, readers: int = 2, busy_timeout_ms: int = 10_000, cache_kib: int = CACHE_KIB):
        self.path = path
        self._cache_kib = cache_kib
        self.tokens_path = path.with_name(f"{path.stem}-tokens{path.suffix}")
        self._readers = readers
        self._busy_timeout_ms = busy_timeout_ms
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writer: GroupCommitWriter | None = None
        self._tokens: GroupCommitWriter | None = None
        self._checkpointer: Checkpointer | None = None
        self._tokens_checkpointer: Checkpointer | None = None
        self._reader: ReaderThreads | None = None
        #: The event loop's own read connection, for point lookups (see lookup).
        self._inline: sqlite3.Connection | None = None

    # Lifetime --------------------------------------------------------------------------------------------
    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = GroupCommitWriter(self._writer_connection, translate)
        await loop.run_in_executor(None, writer.start)
        self._writer = writer
        self._checkpointer = Checkpointer(self._new_connection)
        self._checkpointer.start()
        # Before the migrations: the tokens writer adopts tokens the main file held before 0006 dropped them.
        tokens = GroupCommitWriter(self._tokens_writer_connection, translate, name="sqlite-tokens")
        await loop.run_in_executor(None, tokens.start)
        self._tokens = tokens
        self._tokens_checkpointer = Checkpointer(self._tokens_connection)
        self._tokens_checkpointer.start()
        reader = ReaderThreads(self._new_connection, translate, threads=self._readers)
        await loop.run_in_executor(None, reader.start)
        self._reader = reader
        await self.write(self._migrate)
        self._inline = self._new_connection()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for stoppable in (self._writer, self._checkpointer, self._tokens, self._tokens_checkpointer):
            if stoppable is not None:
                await loop.run_in_executor(None, stoppable.stop)
        if self._reader is not None:
            await loop.run_in_executor(None, self._reader.stop)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._writer = self._reader = self._checkpointer = self._inline = None
        self._tokens = self._tokens_checkpointer = None

    # Where work runs -------------------------------------------------------------------------------------
    def lookup(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a point lookup by key (a mailbox, a workflow, one message) on the event loop itself.

        A warm B-tree lookup costs tens of microseconds, less than handing it to a reader thread and back (a
        queue, two context switches, the GIL passed twice); moving these lookups inline was 20-30 % more
        requests per second under load (benchmarks/README.md). With the page cache and memory map sized in
        _new_connection the pages are almost always in memory. Scans (lists, counts) stay on reader threads.
        """
        conn = self._inline
        if conn is None:
            raise StoreUnavailable("the SQLite store is not open")
        try:
            return fn(conn, *args)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a scan on a reader thread."""
        if self._reader is None:
            raise StoreUnavailable("the SQLite store is not open")
        result: T = await self._reader.run(fn, args)
        return result

    async def write(self, fn: Callable[..., T], *args: Any, durable: bool = True) -> T:
        """Run fn(conn, *args) in a write transaction of the main file; durable=False for bookkeeping that may
        skip the fsync. fn may run twice (see GroupCommitWriter), so it must not keep state outside it."""
        if self._writer is None:
            raise StoreUnavailable("the SQLite store is not open")
        result: T = await self._writer.run(fn, args, durable)
        return result

    async def write_tokens(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(conn, *args) in a write transaction of the replay cache's file (no fsync)."""
        if self._tokens is None:
            raise StoreUnavailable("the SQLite store is not open")
        result: T = await self._tokens.run(fn, args, False)
        return result

    # Connections -----------------------------------------------------------------------------------------
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
        conn = self._connect(self.tokens_path)
        conn.execute("PRAGMA synchronous=NORMAL")  # bookkeeping: WAL keeps it consistent without an fsync
        return conn

    def _adopt_legacy_tokens(self, conn: sqlite3.Connection) -> None:
        """Copy the tokens a main file from before migration 0006 still holds (housekeeping purges the expired
        ones as usual): a used token stays valid for hours, so an upgrade must not forget it. Once 0006 has
        dropped the old table there is nothing to do."""
        if not self.path.exists():
            return
        main = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000)
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
        conn = self._connect(self.path)
        conn.execute("PRAGMA synchronous=FULL")
        # Memory-mapped reads keep the hot pages close as the store fills (a million messages' indexes are a few
        # hundred MB), with no system call per page and in the kernel's page cache, shared by every connection.
        # The page cache of each connection (pages it changes, and those mmap cannot serve) is private memory
        # that only grows until full: 64 MiB a connection grew the broker's RSS by 70-90 % over a soak, and was no
        # faster than 2 MiB under benchmarks/load.py (benchmarks/README.md); MESH_SQLITE_CACHE_MIB sets it.
        conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
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
            for statement in split_statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, datetime('now'))", (version, name))


def translate(exc: sqlite3.Error) -> StoreError:
    """Driver errors become store errors here, so nothing above imports sqlite3."""
    if isinstance(exc, sqlite3.IntegrityError):
        if "messages.message_id" in str(exc):
            return DuplicateMessageId(str(exc))
        return StoreError(f"sqlite integrity error: {exc}")
    # The extended code (SQLITE_IOERR_WRITE, SQLITE_BUSY_SNAPSHOT...) carries its primary code in its low byte.
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in UNAVAILABLE_CODES:
        return StoreUnavailable(f"sqlite unavailable: {exc}")
    return StoreError(f"sqlite error: {exc}")


def split_statements(sql: str) -> list[str]:
    """A migration's statements (none of ours holds a `;` inside a literal or a trigger body)."""
    return [s.strip() for s in sql.split(";") if s.strip() and not _only_comments(s)]


def _only_comments(block: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in block.splitlines())
