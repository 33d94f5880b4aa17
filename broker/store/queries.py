"""Named SQL blocks, written once: `sql/queries.sql` for what both dialects share, `sql/<dialect>.sql` for what
differs. A block is `-- name: <name>`, then at least one comment line saying what it is for, then one statement.
Placeholders are `?`; for PostgreSQL the loader numbers them `$1, $2, ...` (asyncpg's style)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
#: A string literal (skipped when numbering) or a placeholder.
_LITERAL_OR_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?")

SHARED_FILE = "queries.sql"
DIALECTS = ("sqlite", "postgres")


@dataclass(frozen=True, slots=True)
class Block:
    name: str
    description: str
    sql: str


def blocks(filename: str) -> list[Block]:
    """The named blocks of broker/store/sql/<filename>, in file order, `?` placeholders as written."""
    text = resources.files("broker.store").joinpath("sql", filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    found = []
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = body.strip().splitlines()
        comments = []
        while lines and lines[0].lstrip().startswith("--"):
            comments.append(lines.pop(0).lstrip()[2:].strip())
        statement = "\n".join(line for line in lines if not line.lstrip().startswith("--")).strip().rstrip(";")
        found.append(Block(name, " ".join(comments), statement))
    return found


@functools.cache
def load(dialect: str) -> dict[str, str]:
    """{name: statement} for a dialect: the shared blocks and the dialect's own, placeholders in its style. A
    name defined twice is an error (a dialect block does not silently override a shared one)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    queries: dict[str, str] = {}
    for block in blocks(SHARED_FILE) + blocks(f"{dialect}.sql"):
        if block.name in queries:
            raise ValueError(f"query {block.name!r} is defined twice for {dialect}")
        queries[block.name] = placeholders(block.sql, dialect)
    return queries


@functools.lru_cache(maxsize=256)
def placeholders(sql: str, dialect: str) -> str:
    """`?` placeholders as the dialect's driver wants them: unchanged for sqlite3, `$n` for asyncpg. Cached, as
    the paging builder's statements pass through here on every list."""
    if dialect != "postgres":
        return sql
    counter = iter(range(1, sql.count("?") + 1))

    def number(match: re.Match[str]) -> str:
        return match.group(0) if match.group(0) != "?" else f"${next(counter)}"

    return _LITERAL_OR_PLACEHOLDER.sub(number, sql)


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """Numbered migrations for a dialect as (version, name, sql), in order."""
    folder = resources.files("broker.store").joinpath("migrations", dialect)
    found = []
    for entry in folder.iterdir():
        match = re.match(r"^(\d+)_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)
