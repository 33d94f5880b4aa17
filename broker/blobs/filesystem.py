"""The embedded blob store: one file per blob under a folder, written in place and fsynced with its folder."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

from broker.blobs.protocol import BlobError, BlobNotFound, BlobStoreFull, StoredBlob

T = TypeVar("T")

#: Bytes gathered before one write call: large enough to amortise the thread hop, small enough to bound memory.
WRITE_BUFFER = 1024 * 1024
#: Errors that mean "no room": a full disk, a quota, a file-size limit (RLIMIT_FSIZE, a filesystem's maximum).
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


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
            if exc.errno in NO_ROOM:
                raise BlobStoreFull(f"no room for the blob: {exc}") from exc
            raise BlobError(f"filesystem error: {exc}") from exc

    async def open_file(self, key: str) -> BinaryIO | None:
        # Opened on the pool like every other file call, so a missing blob is BlobNotFound here, not a raw
        # FileNotFoundError for the caller to know about.
        return await self._run(_open, self._path(key), "rb")

    async def put(self, key: str, data: AsyncIterable[bytes]) -> int:
        """Write straight to the blob's own path, fsync the file and its folder, and only then return, so the row
        that will point at it is never ahead of the bytes. The broker never reuses a key (each has a random
        suffix), so nothing live is ever overwritten; a put to an existing key replaces it, as on S3.

        There is no temp file and rename: a rename is a second journal commit per blob, and a half-written file
        is harmless where it lies, as no row points at it until put returns (the orphan sweep removes it after a
        crash). A body that fits one write buffer, which is most messages, costs a single thread hop.
        """
        final = self._path(key)
        handle: BinaryIO | None = None
        size = 0
        buffer = bytearray()
        try:
            async for piece in data:
                buffer += piece
                size += len(piece)
                if len(buffer) >= WRITE_BUFFER:
                    if handle is None:
                        handle = await self._run(_create, final, self._root, bytes(buffer))
                    else:
                        await self._run(_write_all, handle, bytes(buffer))
                    buffer.clear()
            if handle is None:
                await self._run(_write_whole, final, self._root, bytes(buffer))
            else:
                await self._run(_seal, handle, final, bytes(buffer))
        except BaseException:
            if handle is not None:
                await asyncio.shield(self._run(_discard, handle, final))
            raise
        return size

    async def get(self, key: str, *, piece_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        # Opening, sizing and the first read share one thread hop, so a blob that fits one piece (most messages)
        # costs one hop instead of three.
        handle, piece, size = await self._run(_open_and_read, self._path(key), piece_size)
        try:
            served = len(piece)
            while piece:
                yield piece
                if served >= size:
                    return
                piece = await self._run(handle.read, piece_size)
                served += len(piece)
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


def _open_and_read(path: Path, piece_size: int) -> tuple[BinaryIO, bytes, int]:
    handle = _open(path, "rb")
    try:
        size = os.fstat(handle.fileno()).st_size
        return handle, handle.read(piece_size), size
    except BaseException:
        handle.close()
        raise


def _open(path: Path, mode: str) -> BinaryIO:
    return cast(BinaryIO, open(path, mode, buffering=0))


def _create(final: Path, root: Path, first: bytes) -> BinaryIO:
    """Create (or truncate) the blob's file, making and syncing any new folders first, and write the first bytes."""
    _make_folders(final.parent, root)
    handle = cast(BinaryIO, open(final, "wb", buffering=0))  # noqa: SIM115 - returned open to the caller
    try:
        _write_all(handle, first)
    except BaseException:
        handle.close()
        _unlink_quietly(final)
        raise
    return handle


def _seal(handle: BinaryIO, final: Path, last: bytes) -> None:
    """Write the last bytes, fsync the file, then its folder so the new name is durable too."""
    try:
        _write_all(handle, last)
        os.fsync(handle.fileno())
    finally:
        handle.close()
    _fsync_dir(final.parent)


def _write_all(handle: BinaryIO, data: bytes) -> None:
    """An unbuffered write may take only some of the bytes (a disk nearly full, a file-size limit); write on until
    all are taken or a write raises (ENOSPC, EFBIG), so a put never returns over a blob shorter than its body."""
    view = memoryview(data)
    while view:
        written = handle.write(view)
        if not written:
            raise OSError(errno.ENOSPC, "the file took no bytes")
        view = view[written:]


def _write_whole(final: Path, root: Path, data: bytes) -> None:
    handle = _create(final, root, data)
    try:
        _seal(handle, final, b"")
    except BaseException:
        _unlink_quietly(final)
        raise


def _make_folders(folder: Path, root: Path) -> None:
    """mkdir -p, then fsync each new folder's parent, outermost first, so no new folder can vanish in a crash."""
    missing: list[Path] = []
    while not folder.exists() and folder != root:
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        _fsync_dir(new.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(handle: BinaryIO, final: Path) -> None:
    """Remove what a failed put wrote; nothing points at it yet."""
    handle.close()
    _unlink_quietly(final)


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
