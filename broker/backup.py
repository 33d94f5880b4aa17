"""`mesh-broker backup DIR`: an online copy of the embedded store, safe beside a running broker.

The metadata database and the replay cache of used tokens are copied with SQLite's online backup API (a
consistent snapshot, however busy the broker), then the blob folder file by file. That order matters: a blob is
written before the row that points at it and deleted only after that row is gone, so every row in the snapshot
finds its blob in the copy. A blob deleted while the copy runs belonged to a purged message and is skipped.
Restoring is copying DIR's contents into an empty MESH_DATA_DIR while no broker runs (docs/operations.md).
PostgreSQL and S3 have backups of their own (pg_dump or point-in-time recovery, bucket versioning).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from broker import backends
from broker.settings import Settings


@dataclass(frozen=True, slots=True)
class BackupSummary:
    databases: tuple[Path, ...]
    blobs: int
    blob_bytes: int


def embedded_paths(settings: Settings) -> tuple[Path, Path]:
    """(metadata database, blob folder) of an embedded store; ValueError for PostgreSQL or S3."""
    database, blobs = urlparse(backends.database_url(settings)), urlparse(backends.blob_url(settings))
    if database.scheme != "sqlite" or blobs.scheme != "file":
        raise ValueError(
            "mesh-broker backup copies the embedded store (SQLite and a blob folder); back up PostgreSQL with "
            "pg_dump or point-in-time recovery and S3 with bucket versioning (docs/operations.md)"
        )
    return Path(unquote(database.path)), Path(unquote(blobs.path))


def tokens_database(database: Path) -> Path:
    """The replay cache beside the metadata database (broker/store/sqlite_connections.py names it so)."""
    return database.with_name(f"{database.stem}-tokens{database.suffix}")


def copy_database(source: Path, destination: Path) -> None:
    """SQLite's online backup: a consistent copy while writers carry on (it restarts if one writes mid-copy)."""
    reader = sqlite3.connect(source)
    try:
        writer = sqlite3.connect(destination)
        try:
            reader.backup(writer)
        finally:
            writer.close()
    finally:
        reader.close()


def copy_blobs(source: Path, destination: Path) -> tuple[int, int]:
    """Copy every file under source; returns (files, bytes). Files that vanish meanwhile were purged."""
    files = size = 0
    for folder, _dirs, names in os.walk(source):
        target = destination / Path(folder).relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            try:
                shutil.copy2(Path(folder) / name, target / name)
            except FileNotFoundError:
                continue
            files += 1
            size += (target / name).stat().st_size
    return files, size


def backup(settings: Settings, destination: Path) -> BackupSummary:
    """Copy the embedded store into destination (created; it must not hold anything yet)."""
    database, blobs = embedded_paths(settings)
    if not database.exists():
        raise ValueError(f"no database at {database}: nothing to back up")
    if destination.exists() and any(destination.iterdir()):
        raise ValueError(f"{destination} is not empty: back up into a new folder")
    destination.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in (database, tokens_database(database)):
        if source.exists():
            copy_database(source, destination / source.name)
            copied.append(destination / source.name)
    files, size = copy_blobs(blobs, destination / "blobs") if blobs.exists() else (0, 0)
    return BackupSummary(tuple(copied), files, size)
