"""Loads named SQL blocks (`-- name: x`) from the .sql files beside the stores."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def load(filename: str) -> dict[str, str]:
    """Parse broker/store/sql/<filename> into {name: statement}."""
    text = resources.files("broker.store").joinpath("sql", filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """Numbered migrations for a dialect as (version, name, sql), in order."""
    folder = resources.files("broker.store").joinpath("migrations", dialect)
    found = []
    for entry in folder.iterdir():
        match = re.match(r"^(\d+)_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)
