"""broker/store/queries.py: every named SQL block is parsed, and every one the SQLite store uses compiles."""

from __future__ import annotations

import re
import sqlite3
from importlib import resources
from pathlib import Path

import pytest

import broker.store.sqlite
from broker.store import queries

NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
SQL_FILES = sorted(p.name for p in resources.files("broker.store").joinpath("sql").iterdir() if p.name.endswith(".sql"))


@pytest.mark.parametrize("filename", SQL_FILES)
def test_load_parses_every_named_block(filename: str) -> None:
    text = resources.files("broker.store").joinpath("sql", filename).read_text(encoding="utf-8")
    names = NAME.findall(text)
    loaded = queries.load(filename)
    assert len(names) == len(set(names)), "duplicate query names"
    assert list(loaded) == names
    for name, sql in loaded.items():
        assert sql, name
        assert not sql.endswith(";"), name
        assert "-- name" not in sql, name
        assert sql == sql.strip(), name


def test_migrations_are_numbered_in_order() -> None:
    for dialect in ("sqlite",):
        found = queries.migrations(dialect)
        assert found, dialect
        versions = [version for version, _, _ in found]
        assert versions == sorted(versions) and versions[0] == 1
        assert len(set(versions)) == len(versions)


def test_every_query_the_sqlite_store_names_exists_and_compiles(tmp_path: Path) -> None:
    loaded = queries.load("sqlite.sql")
    source = Path(broker.store.sqlite.__file__).read_text(encoding="utf-8")
    used = set(re.findall(r'Q\["(\w+)"\]', source))
    assert used <= set(loaded), used - set(loaded)

    conn = sqlite3.connect(tmp_path / "schema.sqlite3")
    for _, _, sql in queries.migrations("sqlite"):
        conn.executescript(sql)
    for statement in broker.store.sqlite.TOKENS_SCHEMA:  # the replay cache's own file (the token queries)
        conn.execute(statement)
    for sql in loaded.values():
        named = re.findall(r":(\w+)", sql)
        params: dict[str, None] | tuple[None, ...] = dict.fromkeys(named) if named else (None,) * sql.count("?")
        conn.execute(f"EXPLAIN {sql}", params)  # raises if the statement does not fit the schema
    conn.close()
