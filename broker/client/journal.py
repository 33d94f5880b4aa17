"""The client's own record of a chunked transfer under way, so a crash costs at most the chunk in flight.

A journal is one small JSON file, replaced atomically (written beside, fsynced, renamed) after each chunk the
server accepted or each chunk written and fsynced here. An upload's journal keeps its Idempotency-Key: chunk 1
sent again after a crash answers the message it created (our broker; elsewhere the journal's message ID is what
resumes it), and chunks are sent from the one after the last accepted. A download's keeps how many chunks and
bytes are safely on disk; the file is cut back to that many bytes and the next chunk fetched.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import orjson


def write_atomically(path: Path, data: bytes) -> None:
    """Replace path with data so that a crash leaves the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in directory durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        loaded = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None


class _Journal:
    """Load, save and finish for a journal dataclass whose `location` field names its file (not saved in it)."""

    location: str

    @classmethod
    def load(cls, location: Path) -> Self | None:
        found = _read(location)
        if found is None:
            return None
        try:
            return cls(**{**found, "location": str(location)})
        except TypeError:  # a journal from another version: start again
            return None

    def finish(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            Path(self.location).unlink()

    def _save(self) -> None:
        values = asdict(self)  # type: ignore[call-overload]
        del values["location"]
        write_atomically(Path(self.location), orjson.dumps(values))


@dataclass
class UploadJournal(_Journal):
    path: str
    size: int
    mtime_ns: int
    chunk_size: int
    compress: bool
    recipient: str
    idempotency_key: str
    message_id: str = ""
    chunks_done: int = 0
    location: str = field(default="", repr=False)

    @classmethod
    def start(
        cls, location: Path, source: Path, size: int, chunk_size: int, compress: bool, recipient: str, key: str
    ) -> UploadJournal:
        journal = cls(
            str(source), size, source.stat().st_mtime_ns, chunk_size, compress, recipient, key, location=str(location)
        )
        journal._save()
        return journal

    def matches(self, source: Path, size: int, chunk_size: int, compress: bool, recipient: str) -> bool:
        """The same send of the same, unchanged file (a file rewritten since is a new send)."""
        try:
            mtime = source.stat().st_mtime_ns
        except OSError:
            return False
        return (self.size, self.mtime_ns, self.chunk_size, self.compress, self.recipient) == (
            size,
            mtime,
            chunk_size,
            compress,
            recipient,
        )

    def accepted(self, message_id: str, number: int) -> None:
        self.message_id, self.chunks_done = message_id, number
        self._save()


@dataclass
class DownloadJournal(_Journal):
    message_id: str
    chunks_done: int = 0
    bytes_done: int = 0
    total: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    location: str = field(default="", repr=False)

    @classmethod
    def start(cls, location: Path, message_id: str) -> DownloadJournal:
        return cls(message_id, location=str(location))

    def received(self, number: int, bytes_done: int, total: int, headers: dict[str, str]) -> None:
        self.chunks_done, self.bytes_done, self.total, self.headers = number, bytes_done, total, headers
        self._save()
