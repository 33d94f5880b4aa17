"""The embedded blob store: one file per blob under a folder, written to a temp file, fsynced, then renamed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

from broker.blobs.protocol import BlobError, BlobNotFound, StoredBlob

T = TypeVar("T")

#: Bytes gathered before one write call: large enough to amortise the thread hop, small enough to bound memory.
WRITE_BUFFER = 1024 * 1024


class FilesystemBlobStore:
    """Blocking file calls run on a small thread pool so the event loop never waits on the disk."""

    def __init__(self, root: Path, *, threads: int = 4):
        self._root = root
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None

    @property
    def transfer_buffer_bytes(self) -> int:
        return WRITE_BUFFER

    async def open(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        (self._root / ".tmp").mkdir(exist_ok=True)
        self._pool = ThreadPoolExecutor(self._threads, "blob-fs")

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise BlobError(f"invalid blob key {key!r}")
        return self._root / key

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._pool is None:
            raise BlobError("the filesystem blob store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except FileNotFoundError as exc:
            raise BlobNotFound(str(exc)) from None
        except OSError as exc:
            raise BlobError(f"filesystem error: {exc}") from exc

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def put(self, key: str, data: AsyncIterable[bytes]) -> int:
        final = self._path(key)
        temp = self._root / ".tmp" / f"{secrets.token_hex(8)}.part"
        handle = await self._run(_open, temp, "wb")
        size = 0
        buffer = bytearray()
        try:
            async for piece in data:
                buffer += piece
                size += len(piece)
                if len(buffer) >= WRITE_BUFFER:
                    await self._run(handle.write, bytes(buffer))
                    buffer.clear()
            if buffer:
                await self._run(handle.write, bytes(buffer))
            await self._run(_finish, handle, temp, final, self._root)
        except BaseException:
            await asyncio.shield(self._run(_discard, handle, temp))
            raise
        return size

    async def get(self, key: str, *, piece_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        handle = await self._run(_open, self._path(key), "rb")
        try:
            while True:
                piece = await self._run(handle.read, piece_size)
                if not piece:
                    return
                yield piece
        finally:
            handle.close()

    async def size(self, key: str) -> int:
        return (await self._run(os.stat, self._path(key))).st_size

    async def delete(self, key: str) -> None:
        await self._run(_unlink_quietly, self._path(key))

    async def scan(self, *, page_size: int = 1000) -> AsyncIterator[list[StoredBlob]]:
        # The walk advances a page at a time on the pool, so a large tree is never listed whole in memory.
        walker = _walk(self._root)
        while page := await self._run(_take, walker, page_size):
            yield page


def _open(path: Path, mode: str) -> BinaryIO:
    return cast(BinaryIO, open(path, mode, buffering=0))


def _finish(handle: BinaryIO, temp: Path, final: Path, root: Path) -> None:
    """fsync the data, rename into place, then fsync every folder the rename touched or created."""
    os.fsync(handle.fileno())
    handle.close()
    created: list[Path] = []
    parent = final.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, final)
    for folder in [final.parent, *[c.parent for c in created], temp.parent]:
        _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(handle: BinaryIO, temp: Path) -> None:
    handle.close()
    _unlink_quietly(temp)


def _walk(root: Path) -> Iterator[StoredBlob]:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            try:
                modified = path.stat().st_mtime
            except FileNotFoundError:
                continue  # deleted since the folder was read
            yield StoredBlob(path.relative_to(root).as_posix(), datetime.fromtimestamp(modified, UTC))


def _take(items: Iterator[StoredBlob], count: int) -> list[StoredBlob]:
    return list(itertools.islice(items, count))


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
