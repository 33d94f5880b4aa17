"""The two dialects' schemas agree after all migrations (tables, columns, keys, indexes), an install upgraded one
migration at a time ends as a fresh install does, and every PostgreSQL statement prepares against the schema."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from broker.devsupport import pg_server
from broker.store import paging, queries
from broker.store.postgres import PostgresStore
from broker.store.protocol import Box, FilterOp
from broker.store.sqlite import SqliteStore

#: How each dialect keeps a column's values (the representation the store binds and reads, see rows.py and the
#: runners): SQLite keeps times as microseconds since the epoch, booleans as 0/1, JSON and dates as text.
POSTGRES_KINDS = {
    "text": "text",
    "jsonb": "text",
    "date": "text",
    "integer": "integer",
    "bigint": "integer",
    "boolean": "integer",
    "timestamp with time zone": "integer",
    "bytea": "bytes",
}
SQLITE_KINDS = {"TEXT": "text", "INTEGER": "integer", "BLOB": "bytes"}
BOOKKEEPING = {"schema_migrations"}

Schema = dict[str, Any]


def _index_shape(definition: str) -> tuple[str, str]:
    """(columns, predicate) of a CREATE INDEX, with each dialect's decorations taken off."""
    body = re.sub(r"^CREATE (UNIQUE )?INDEX \w+ ON [\w.]+", "", definition.strip(), flags=re.I)
    body = re.sub(r"USING btree", "", body, flags=re.I)
    columns, _, predicate = body.partition(" WHERE ")

    def plain(text: str) -> str:
        return re.sub(r"[()\s]|::text", "", text).lower()

    return plain(columns), plain(predicate)


def sqlite_schema(path: Path) -> Schema:
    """The main file's schema and the replay cache's file's, as one."""
    schema: Schema = {"columns": {}, "primary_keys": {}, "foreign_keys": set(), "indexes": {}}
    for file in (path, path.with_name(f"{path.stem}-tokens{path.suffix}")):
        conn = sqlite3.connect(file)
        try:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in set(tables) - BOOKKEEPING:
                info = conn.execute(f"PRAGMA table_info({table})").fetchall()
                schema["columns"][table] = {r[1]: (SQLITE_KINDS[r[2]], bool(r[3] or r[5])) for r in info}
                schema["primary_keys"][table] = tuple(r[1] for r in sorted(info, key=lambda r: r[5]) if r[5])
                for fk in conn.execute(f"PRAGMA foreign_key_list({table})"):
                    schema["foreign_keys"].add((table, fk[3], fk[2], fk[4], fk[6]))
            for name, definition in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"):
                if definition is not None:  # None: a primary key's own index, compared as a key above
                    schema["indexes"][name] = _index_shape(definition)
        finally:
            conn.close()
    return schema


async def postgres_schema(dsn: str) -> Schema:
    schema: Schema = {"columns": {}, "primary_keys": {}, "foreign_keys": set(), "indexes": {}}
    conn = await asyncpg.connect(dsn)
    try:
        for r in await conn.fetch(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        ):
            if r["table_name"] not in BOOKKEEPING:
                kind = (POSTGRES_KINDS[r["data_type"]], r["is_nullable"] == "NO")
                schema["columns"].setdefault(r["table_name"], {})[r["column_name"]] = kind
        for r in await conn.fetch(
            "SELECT c.conrelid::regclass::text AS tbl, c.contype::text AS contype, "
            "pg_get_constraintdef(c.oid) AS definition "
            "FROM pg_constraint c JOIN pg_namespace s ON s.oid = c.connamespace "
            "WHERE s.nspname = 'public' AND c.contype IN ('p', 'f')"
        ):
            if r["tbl"] in BOOKKEEPING:
                continue
            if r["contype"] == "p":  # PRIMARY KEY (a, b)
                columns = re.search(r"\((.*)\)", r["definition"]).group(1)  # type: ignore[union-attr]
                schema["primary_keys"][r["tbl"]] = tuple(c.strip() for c in columns.split(","))
                continue
            # FOREIGN KEY (a) REFERENCES t(b) ON DELETE CASCADE
            found = re.match(
                r"FOREIGN KEY \((\w+)\) REFERENCES (\w+)\((\w+)\)(?: ON DELETE ([A-Z ]+))?", r["definition"]
            )
            assert found is not None, r["definition"]
            column, ref, ref_column, on_delete = found.groups()
            schema["foreign_keys"].add((r["tbl"], column, ref, ref_column, on_delete or "NO ACTION"))
        for r in await conn.fetch(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' AND NOT EXISTS ("
            "  SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname AND c.contype = 'p')"
        ):
            schema["indexes"][r["indexname"]] = _index_shape(r["indexdef"])
    finally:
        await conn.close()
    return schema


@pytest.fixture
def pg_database(pg_admin_dsn: str) -> Callable[[], Awaitable[str]]:
    """Makes empty databases (not cloned from the migrated template)."""
    return lambda: pg_server.clone_database(pg_admin_dsn, template="template0")


async def _open_close(store: SqliteStore | PostgresStore) -> None:
    await store.open()
    await store.close()


def _first_migrations(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Make the stores see only the first `count` migrations of each dialect (an older release)."""
    real = queries.migrations
    monkeypatch.setattr(queries, "migrations", lambda dialect: real(dialect)[:count])


async def test_the_dialects_schemas_agree(tmp_path: Path, pg_database: Callable[[], Awaitable[str]]) -> None:
    path = tmp_path / "mesh.sqlite3"
    await _open_close(SqliteStore(path))
    dsn = await pg_database()
    await _open_close(PostgresStore(dsn, min_size=1, max_size=1, directory_cache=False))
    sqlite, postgres = sqlite_schema(path), await postgres_schema(dsn)
    assert sqlite["columns"] == postgres["columns"]
    assert sqlite["primary_keys"] == postgres["primary_keys"]
    assert sqlite["foreign_keys"] == postgres["foreign_keys"]
    assert sqlite["indexes"] == postgres["indexes"]
    assert {"messages", "message_chunks", "message_events", "auth_tokens"} <= set(sqlite["columns"])


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
async def test_upgrading_one_migration_at_a_time_ends_as_a_fresh_install(
    dialect: str, tmp_path: Path, pg_database: Callable[[], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    if dialect == "sqlite":
        fresh: Any = tmp_path / "fresh.sqlite3"
        upgraded: Any = tmp_path / "upgraded.sqlite3"
    else:
        fresh, upgraded = await pg_database(), await pg_database()

    def store(target: Any) -> SqliteStore | PostgresStore:
        if dialect == "sqlite":
            return SqliteStore(target)
        return PostgresStore(target, min_size=1, max_size=1, directory_cache=False)

    async def schema(target: Any) -> Schema:
        return sqlite_schema(target) if dialect == "sqlite" else await postgres_schema(target)

    await _open_close(store(fresh))
    with monkeypatch.context() as patch:
        for count in range(1, len(queries.migrations(dialect))):
            _first_migrations(patch, count)
            await _open_close(store(upgraded))
    await _open_close(store(upgraded))
    assert await schema(upgraded) == await schema(fresh)


async def test_every_postgres_statement_prepares(pg_database: Callable[[], Awaitable[str]]) -> None:
    dsn = await pg_database()
    await _open_close(PostgresStore(dsn, min_size=1, max_size=1, directory_cache=False))
    shapes = [None, *((op, negate) for op in FilterOp for negate in (False, True))]
    built = [paging.inbox_page(c, f) for c in (False, True) for f in shapes]
    built += [paging.rich_page(box, c) for box in Box for c in (False, True)]
    conn = await asyncpg.connect(dsn)
    try:
        for sql in [*queries.load("postgres").values(), *(queries.placeholders(b, "postgres") for b in built)]:
            await conn.prepare(sql)  # raises if the statement does not fit the schema
    finally:
        await conn.close()
