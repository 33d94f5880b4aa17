"""broker/store/queries.py and the .sql files: every block is named and described, each name is defined once per
dialect, every query the plans name exists, none is dead, and every SQLite statement compiles."""

from __future__ import annotations

import re
import sqlite3
from importlib import resources
from pathlib import Path

import pytest

from broker.models import Status
from broker.store import paging, queries
from broker.store.protocol import Box, FilterOp
from broker.store.sqlite_connections import TOKENS_SCHEMA, split_statements

SQL_FILES = sorted(p.name for p in resources.files("broker.store").joinpath("sql").iterdir() if p.name.endswith(".sql"))
NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def plans_source() -> str:
    return resources.files("broker.store").joinpath("transactions.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("filename", SQL_FILES)
def test_every_block_is_named_described_and_parsed(filename: str) -> None:
    text = resources.files("broker.store").joinpath("sql", filename).read_text(encoding="utf-8")
    found = queries.blocks(filename)
    assert [b.name for b in found] == NAME.findall(text)
    assert len({b.name for b in found}) == len(found), "a name defined twice in one file"
    for block in found:
        assert len(block.description) > 10, f"{filename}: {block.name} says nothing about what it is for"
        assert block.sql and block.sql == block.sql.strip() and not block.sql.endswith(";"), block.name
        assert "--" not in block.sql, block.name
        assert "$" not in block.sql, f"{block.name}: write `?`; the loader numbers placeholders for PostgreSQL"


def test_dialect_files_define_the_same_names_and_none_of_the_shared_ones() -> None:
    shared = {b.name for b in queries.blocks(queries.SHARED_FILE)}
    sqlite = {b.name for b in queries.blocks("sqlite.sql")}
    postgres = {b.name for b in queries.blocks("postgres.sql")}
    assert sqlite == postgres
    assert not shared & sqlite


def test_a_dialect_file_block_that_repeats_a_shared_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = queries.blocks

    def doubled(filename: str) -> list[queries.Block]:
        found = real(filename)
        return found + real(queries.SHARED_FILE)[:1] if filename == "sqlite.sql" else found

    monkeypatch.setattr(queries, "blocks", doubled)
    queries.load.cache_clear()
    try:
        with pytest.raises(ValueError, match="defined twice"):
            queries.load("sqlite")
    finally:
        queries.load.cache_clear()


def test_dialect_blocks_truly_differ() -> None:
    """A block kept per dialect must not be the same text in both (it belongs in queries.sql then)."""
    sqlite = {b.name: b.sql for b in queries.blocks("sqlite.sql")}
    postgres = {b.name: b.sql for b in queries.blocks("postgres.sql")}
    same = [name for name in sqlite if " ".join(sqlite[name].split()) == " ".join(postgres[name].split())]
    assert same == []


def test_every_query_a_plan_names_exists_and_none_is_dead() -> None:
    named = set(re.findall(r'(?:row|rows|execute|execute_many)\(\s*"(\w+)"', plans_source()))
    for dialect in queries.DIALECTS:
        assert set(queries.load(dialect)) == named, dialect


def test_postgres_placeholders_are_numbered_outside_literals() -> None:
    sql = "SELECT ? WHERE a = '?' AND b = ? AND c = 'it''s ?' LIMIT ?"
    assert queries.placeholders(sql, "postgres") == "SELECT $1 WHERE a = '?' AND b = $2 AND c = 'it''s ?' LIMIT $3"
    assert queries.placeholders(sql, "sqlite") == sql
    assert queries.load("postgres")["acknowledge"].count("$5") == 1


def test_status_literals_in_sql_are_statuses() -> None:
    """SQL names a status as a literal only where a partial index needs it; each must be a models.Status."""
    texts = [b.sql for f in SQL_FILES for b in queries.blocks(f)]
    texts += [paging.inbox_page(True, (FilterOp.CONTAINS, True)), paging.rich_page(Box.INBOX, True)]
    for _, _, migration in queries.migrations("sqlite") + queries.migrations("postgres"):
        texts.append(migration)
    literals = {m for text in texts for m in re.findall(r"status\s*(?:=|<>)\s*'(\w+)'", text)}
    assert literals and literals <= {s.value for s in Status}


def test_migrations_are_numbered_alike_in_both_dialects() -> None:
    versions = {d: [v for v, _, _ in queries.migrations(d)] for d in queries.DIALECTS}
    for found in versions.values():
        assert found == list(range(1, len(found) + 1))
    assert versions["sqlite"] == versions["postgres"]


def test_every_sqlite_statement_compiles(tmp_path: Path) -> None:
    """PostgreSQL's are prepared against a migrated database in tests/contract/test_schema.py."""
    conn = sqlite3.connect(tmp_path / "schema.sqlite3")
    for _, _, sql in queries.migrations("sqlite"):
        for statement in split_statements(sql):
            conn.execute(statement)
    for statement in TOKENS_SCHEMA:  # the replay cache's own file (the token queries)
        conn.execute(statement)
    built = [paging.inbox_page(c, f) for c in (False, True) for f in (None, *_filter_shapes())]
    built += [paging.rich_page(box, c) for box in Box for c in (False, True)]
    for block in [*queries.load("sqlite").values(), *built]:
        for sql in queries.statements(block):
            # raises if the statement does not fit the schema
            conn.execute(f"EXPLAIN {sql}", (None,) * queries.parameter_count(sql))
    conn.close()


def test_numbered_placeholders_keep_their_numbers_and_may_repeat() -> None:
    sql = "UPDATE t SET a = ?2, b = ?1 WHERE c = ?2 AND d = '?3'"
    assert queries.placeholders(sql, "postgres") == "UPDATE t SET a = $2, b = $1 WHERE c = $2 AND d = '?3'"
    assert queries.placeholders(sql, "sqlite") == sql
    assert queries.parameter_count(sql) == 2
    assert queries.parameter_count("SELECT ? WHERE a = ? AND b = '?'") == 2
    with pytest.raises(ValueError, match="mixes"):
        queries.placeholders("SELECT ?1 WHERE a = ?", "postgres")


def test_a_block_splits_into_its_statements_outside_literals() -> None:
    assert queries.statements("UPDATE t SET a = ';' WHERE b = ?1; INSERT INTO u VALUES (?2)") == [
        "UPDATE t SET a = ';' WHERE b = ?1",
        "INSERT INTO u VALUES (?2)",
    ]
    assert queries.statements("SELECT 1") == ["SELECT 1"]


def test_only_sqlite_blocks_hold_several_statements() -> None:
    """PostgreSQL's are sent whole as one statement (one round trip); SQLite's several run in order."""
    assert all(len(queries.statements(sql)) == 1 for sql in queries.load("postgres").values())
    several = {name for name, sql in queries.load("sqlite").items() if len(queries.statements(sql)) > 1}
    assert several == {"create_message", "add_chunk", "acknowledge", "append_event"}


def _filter_shapes() -> list[tuple[FilterOp, bool]]:
    return [(op, negate) for op in FilterOp for negate in (False, True)]
