"""Named SQL blocks, written once: `sql/queries.sql` for what both dialects share, `sql/<dialect>.sql` for what
differs. A block is `-- name: <name>`, then at least one comment line saying what it is for, then one statement
(in sqlite.sql, where PostgreSQL's block of the same name is one statement with data-modifying WITH clauses that
SQLite lacks, possibly several separated by `;`: see statements()). Placeholders are `?`, or numbered `?1, ?2`
where a parameter is used more than once; for PostgreSQL the loader writes them `$1, $2, ...` (asyncpg's style)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
#: A string literal (skipped when numbering) or a placeholder, `?` or numbered (`?3`).
_LITERAL_OR_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?(\d*)")
#: A string literal (skipped when splitting) or the `;` between statements.
_LITERAL_OR_SEMICOLON = re.compile(r"'(?:[^']|'')*'|;")

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
    kinds: set[bool] = set()

    def number(match: re.Match[str]) -> str:
        if match.group(0)[0] != "?":
            return match.group(0)
        kinds.add(bool(match.group(1)))
        return f"${match.group(1) or next(counter)}"

    numbered = _LITERAL_OR_PLACEHOLDER.sub(number, sql)
    if len(kinds) > 1:
        raise ValueError(f"a statement mixes `?` and numbered placeholders: {sql[:80]!r}")
    return numbered


def statements(sql: str) -> list[str]:
    """A block's statements: one, or several separated by `;` (outside string literals)."""
    found, start = [], 0
    for match in _LITERAL_OR_SEMICOLON.finditer(sql):
        if match.group(0) == ";":
            found.append(sql[start : match.start()].strip())
            start = match.end()
    found.append(sql[start:].strip())
    return [s for s in found if s]


def parameter_count(sql: str) -> int:
    """How many parameters a statement binds: its `?`s, or its highest numbered placeholder (SQLite binds every
    index up to that one, used or not)."""
    counts = [int(m.group(1) or 0) for m in _LITERAL_OR_PLACEHOLDER.finditer(sql) if m.group(0)[0] == "?"]
    if any(counts):
        return max(counts)
    return len(counts)


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """Numbered migrations for a dialect as (version, name, sql), in order."""
    folder = resources.files("broker.store").joinpath("migrations", dialect)
    found = []
    for entry in folder.iterdir():
        match = re.match(r"^(\d+)_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)
