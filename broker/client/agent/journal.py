"""The folder agent's journal: one record per transfer under way, kept in an append-only log with group commit.

Each change is a line `{"n": name, "r": record}` (`"r": null` removes the record) appended to TEMP/.journal/
agent.jsonl. `save` returns once the line is on disk; the fsync that puts it there is shared by every save made
while the previous fsync ran (groupcommit.py), so many files in flight cost one fsync, not one each. `remove` is
not waited for: it reaches the disk with the next save or at close. A removal lost in a crash leaves a record whose
step is found already done when the agent starts again (agent.py's recovery checks TEMP before repeating a step).

The log is read back whole at start-up (a last line cut short by a crash was never acknowledged to anyone and is
skipped) and rewritten as a snapshot of the live records, atomically, at start-up and whenever it has grown to
several times their number. Records of the earlier layout, one `send-*.json`/`recv-*.json` file each, are taken
into the first snapshot and then deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import IO, Any

import orjson

from broker.client.agent.groupcommit import GroupCommit
from broker.client.journal import write_atomically

LOG_NAME = "agent.jsonl"
#: The log is rewritten as a snapshot once it has this many lines and several times as many as live records.
COMPACT_MIN_LINES = 10_000
COMPACT_RATIO = 4
LEGACY_PREFIXES = ("send-", "recv-")

log = logging.getLogger("broker.agent")


class Journal:
    """Records by name, in memory and in the log. open() before use and close() after (both block: call them
    from a thread); every other method runs on the event loop."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.log_path = directory / LOG_NAME
        self._records: dict[str, dict[str, Any]] = {}
        self._pending: list[bytes] = []
        self._lines = 0  # lines in the log file
        self._file: IO[bytes] | None = None
        self._group = GroupCommit(self._flush)

    def path(self, name: str) -> Path:
        """Where a file of the client's own (an upload's or a download's chunk journal) is kept."""
        return self.directory / f"{name}.json"

    # Start and stop (blocking) ---------------------------------------------------------------------------------
    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        records: dict[str, dict[str, Any] | None] = {}
        legacy = sorted(p for p in self.directory.glob("*.json") if p.name.startswith(LEGACY_PREFIXES) and p.is_file())
        for path in legacy:
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                found = orjson.loads(path.read_bytes())
                if isinstance(found, dict):
                    records[path.stem] = found
        with contextlib.suppress(FileNotFoundError):
            records.update(_replay(self.log_path.read_bytes()))
        self._records = {name: record for name, record in records.items() if record is not None}
        self._rewrite(self._snapshot())
        for path in legacy:  # only now that the snapshot holding them is durable
            path.unlink(missing_ok=True)

    async def aclose(self) -> None:
        """Wait for a flush under way, then close (from the event loop)."""
        await self._group.wait()
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Write what is staged (the removals no one waited for) and close the log."""
        if self._file is not None:
            if self._pending:
                lines, self._pending = self._pending, []
                self._append(lines)
            self._file.close()
            self._file = None

    # On the event loop -----------------------------------------------------------------------------------------
    def get(self, name: str) -> dict[str, Any] | None:
        return self._records.get(name)

    def names(self, prefix: str) -> list[str]:
        return sorted(name for name in self._records if name.startswith(prefix))

    def stage(self, name: str, record: dict[str, Any] | None) -> None:
        """Change a record in memory and queue its line for the next flush (not yet durable)."""
        if record is None:
            if self._records.pop(name, None) is None:
                return
        else:
            self._records[name] = record
        self._pending.append(orjson.dumps({"n": name, "r": record}) + b"\n")

    async def save(self, name: str, record: dict[str, Any]) -> None:
        """Set a record and return once it is on disk."""
        self.stage(name, record)
        await self._group.wait()

    def remove(self, name: str) -> None:
        """Drop a record; durable with the next flush (see the module docstring for why that is enough)."""
        self.stage(name, None)

    async def _flush(self) -> None:
        lines, self._pending = self._pending, []
        if not lines:
            return
        if self._lines + len(lines) >= max(COMPACT_MIN_LINES, COMPACT_RATIO * len(self._records)):
            # The records in memory already hold every staged change: a snapshot of them replaces the log.
            await asyncio.to_thread(self._rewrite, self._snapshot())
        else:
            await asyncio.to_thread(self._append, lines)

    # Blocking helpers (one at a time: the group commit runs one flush at once) --------------------------------
    def _snapshot(self) -> list[bytes]:
        return [orjson.dumps({"n": name, "r": record}) + b"\n" for name, record in self._records.items()]

    def _append(self, lines: list[bytes]) -> None:
        assert self._file is not None, "the journal is not open"
        self._file.write(b"".join(lines))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._lines += len(lines)

    def _rewrite(self, lines: list[bytes]) -> None:
        if self._file is not None:
            self._file.close()
        write_atomically(self.log_path, b"".join(lines))
        self._file = self.log_path.open("ab")
        self._lines = len(lines)


def _replay(data: bytes) -> dict[str, dict[str, Any] | None]:
    """The records a log's lines leave, in order; a line that cannot be read (cut short by a crash) is skipped."""
    records: dict[str, dict[str, Any] | None] = {}
    for number, line in enumerate(data.splitlines(), 1):
        try:
            entry = orjson.loads(line)
            name, record = entry["n"], entry["r"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning(
                "skipping an unreadable journal line", extra={"action": "agent_journal_skipped", "line": number}
            )
            continue
        if isinstance(name, str) and (record is None or isinstance(record, dict)):
            records[name] = record
    return records
