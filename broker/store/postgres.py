"""The production metadata store: PostgreSQL through an asyncpg pool, every state change one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from broker.store import queries
from broker.store import transactions as tx
from broker.store.directory_cache import DirectoryCache
from broker.store.pg_directory import listen_for_directory_changes
from broker.store.protocol import DuplicateMessageId, StoreError, StoreUnavailable
from broker.store.sql_store import PlanFunction, SqlStore
from broker.store.token_batch import TokenBatch

try:
    import asyncpg
except ImportError:  # pragma: no cover - exercised only without the extra installed
    asyncpg = None

T = TypeVar("T")
Q = queries.load("postgres")
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
    """Turns asyncpg and connection errors into StoreError at this boundary: StoreUnavailable for those that say the
    database cannot serve now (see _unreachable), so that only they answer 503."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None or asyncpg is None:
            return
        if isinstance(exc, asyncpg.UniqueViolationError) and "messages_pkey" in str(exc):
            raise DuplicateMessageId(str(exc)) from None
        if _unreachable(exc):
            raise StoreUnavailable(f"postgresql unavailable: {exc}") from exc
        if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
            raise StoreError(f"postgresql error: {exc}") from exc


def _unreachable(exc: BaseException) -> bool:
    """Whether exc is about the connection rather than the statement: refused, reset or timed out (OSError, which
    TimeoutError is), lost mid-query or rejected (class 08), the server starting up, shutting down or out of
    connections, or a connection or pool already closed under the call."""
    if isinstance(exc, OSError):
        return True
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError
        | asyncpg.CrashShutdownError
        | asyncpg.TooManyConnectionsError,
    ):
        return True
    # asyncpg says "connection is closed", "pool is closing" or "pool is closed"; its other InterfaceErrors are
    # misuse (an operation already in progress, a cursor outside a transaction): bugs of ours.
    return isinstance(exc, asyncpg.InterfaceError) and any(word in str(exc) for word in ("closed", "closing"))


class PostgresStore(SqlStore):
    """Stateless over a pool: any node may serve any request, since every shared fact lives in the database.
    Times are timestamptz, read back in UTC; lists of IDs are bound as text[].

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
        super().__init__(DirectoryCache(None), _utc)
        self._directory.suspend()  # until the listener is in place; for good with directory_cache=False
        retry = {"retry_seconds": directory_retry_seconds} if directory_retry_seconds else {}
        self._listener = listen_for_directory_changes(dsn, self._directory, **retry) if directory_cache else None
        self._tokens = TokenBatch(lambda keys, expiries: self._token(tx.use_tokens, keys, expiries))

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
        await self._tokens.close()
        if self._listener is not None:
            await self._listener.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
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

    async def use_token(self, token_key: str, expires_at: datetime) -> bool:
        # Every request's first statement: those of concurrent requests go as one (TokenBatch).
        return await self._tokens.use(token_key, expires_at)

    # The runners (sql_store.py) --------------------------------------------------------------------------
    async def _lookup(self, plan: PlanFunction[T], *args: Any) -> T:
        async with _Translate(), self.pool.acquire() as conn:
            return await run(conn, plan, args)

    _scan = _lookup  # reads need no transaction: each plan's statements read what was committed

    async def _change(self, plan: PlanFunction[T], *args: Any) -> T:
        async with _Translate(), self.pool.acquire() as conn, conn.transaction():
            return await run(conn, plan, args)

    _single = _lookup  # each statement its own transaction (autocommit): no BEGIN and COMMIT round trips
    _note = _lookup  # one statement: autocommit is its transaction, and saves BEGIN and COMMIT round trips
    _token = _lookup

    # Figures ---------------------------------------------------------------------------------------------
    def pool_usage(self) -> tuple[int, int] | None:
        if self._pool is None:
            return None
        size = self._pool.get_size()
        return size, size - self._pool.get_idle_size()

    async def storage_bytes(self) -> dict[str, int]:
        async with _Translate():
            return {"database": int(await self.pool.fetchval("SELECT pg_database_size(current_database())"))}


async def run(conn: asyncpg.Connection, plan: Callable[..., tx.Plan[T]], args: Sequence[Any]) -> T:
    """Run a plan to its end on one connection (inside the caller's transaction, if any)."""
    steps = plan(*args)
    result: Any = None
    while True:
        try:
            statement = steps.send(result)
        except StopIteration as done:
            answer: T = done.value
            return answer
        sql = queries.placeholders(statement.query, "postgres") if statement.built else Q[statement.query]
        if statement.fetch is tx.Fetch.ROW:
            result = await conn.fetchrow(sql, *statement.params)
        elif statement.fetch is tx.Fetch.ROWS:
            result = await conn.fetch(sql, *statement.params)
        elif statement.fetch is tx.Fetch.MANY:
            result = await conn.executemany(sql, statement.params)
        else:
            result = _rowcount(await conn.execute(sql, *statement.params))


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _rowcount(status: str) -> int:
    """asyncpg returns the command tag ('UPDATE 1', 'DELETE 3'); the count is its last word."""
    return int(status.rsplit(" ", 1)[-1])
