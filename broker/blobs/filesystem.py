"""The embedded blob store: one file per blob under a folder, written in place and fsynced with its folder."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

from broker.blobs import writeback
from broker.blobs.protocol import BlobError, BlobNotFound, BlobStoreFull, StoredBlob

T = TypeVar("T")

#: Bytes gathered before one write call: large enough to amortise the thread hop, small enough to bound memory.
WRITE_BUFFER = 1024 * 1024
#: Pieces handed to one writev as they came (no copy on the event loop); a body in more, smaller pieces than this is
#: joined first, as writev takes at most IOV_MAX (1024 on Linux) buffers and tiny ones gain nothing from it.
MAX_PIECES = 64
#: Errors that mean "no room": a full disk, a quota, a file-size limit (RLIMIT_FSIZE, a filesystem's maximum).
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class FilesystemBlobStore:
    """Blocking file calls run on a small thread pool so the event loop never waits on the disk; write-back of
    blobs being received runs on a second one, so reads and writes never queue behind a flush waiting on the disk."""

    def __init__(self, root: Path, *, threads: int = 4):
        self._root = root
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._flush_pool: ThreadPoolExecutor | None = None

    @property
    def transfer_buffer_bytes(self) -> int:
        # One buffer being written on a thread while the next one fills.
        return 2 * WRITE_BUFFER

    async def open(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(self._threads, "blob-fs")
        self._flush_pool = ThreadPoolExecutor(self._threads, "blob-fs-flush")

    async def close(self) -> None:
        for pool in (self._pool, self._flush_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._flush_pool = None

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise BlobError(f"invalid blob key {key!r}")
        return self._root / key

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await _translated(self._start(fn, *args))

    def _start(self, fn: Callable[..., T], *args: object, flush: bool = False) -> Future[T]:
        """Start fn on a thread and return at once: the caller awaits it (_translated) when it needs the outcome."""
        pool = self._flush_pool if flush else self._pool
        if pool is None:
            raise BlobError("the filesystem blob store is not open")
        return pool.submit(fn, *args)

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
        crash). A body that fits one write buffer, which is most messages, costs a single thread hop. A larger one
        is written a buffer at a time on a thread while the next buffer fills, with write-back started behind the
        writes (_Sink), so the network, the page cache and the disk all work at once.
        """
        final = self._path(key)
        sink: _Sink | None = None
        size = 0
        # The pieces themselves, not a copy: the thread writes them with one writev.
        buffer: list[bytes] = []
        buffered = 0
        try:
            async for piece in data:
                # A bytearray or memoryview may be reused by its producer once we ask for the next piece.
                buffer.append(piece if isinstance(piece, bytes) else bytes(piece))
                buffered += len(piece)
                size += len(piece)
                if buffered >= WRITE_BUFFER:
                    if sink is None:
                        handle = await self._run(_create, final, self._root, buffer)
                        sink = _Sink(self, handle, final, buffered)
                    else:
                        await sink.write(buffer, buffered)
                    buffer, buffered = [], 0
            if sink is None:
                await self._run(_write_whole, final, self._root, buffer)
            else:
                await sink.seal(buffer)
        except BaseException:
            if sink is not None:
                await asyncio.shield(sink.discard())
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


async def _translated(future: Future[T]) -> T:
    """The outcome of a file call on a thread, its operating-system error translated at the store's boundary."""
    try:
        return await asyncio.wrap_future(future)
    except FileNotFoundError as exc:
        raise BlobNotFound(str(exc)) from None
    except OSError as exc:
        if exc.errno in NO_ROOM:
            raise BlobStoreFull(f"no room for the blob: {exc}") from exc
        raise BlobError(f"filesystem error: {exc}") from exc


class _Sink:
    """One large blob being written: at most one write and one write-back in flight on the store's threads while
    the event loop gathers the next buffer. Write-back starts every writeback.WINDOW bytes and never holds up a
    write; the fsync in _seal still makes the blob durable, and finds little left to write."""

    def __init__(self, store: FilesystemBlobStore, handle: BinaryIO, final: Path, written: int):
        self._store = store
        self._handle = handle
        self._final = final
        self._writeback = writeback.WriteBack(handle.fileno(), sync_file_range=writeback.SYNC_FILE_RANGE)
        #: Bytes whose write calls have returned; the write in flight, and how many bytes it writes.
        self._written = written
        self._writing: Future[None] | None = None
        self._writing_size = 0
        self._flushing: Future[None] | None = None
        self._flushed = 0

    async def write(self, pieces: list[bytes], size: int) -> None:
        """Hand pieces (size bytes in all) to a thread to write, once the write before has finished (a failure of
        that one raises here)."""
        await self._settle_write()
        await self._maybe_flush()
        self._writing = self._store._start(_write_all, self._handle, pieces)
        self._writing_size = size

    async def seal(self, last: list[bytes]) -> None:
        """Write the last bytes and make the blob durable (fsync of the file and its folder); the handle closes."""
        await self._settle_write()
        if self._flushing is not None:
            await _translated(self._flushing)
            self._flushing = None
        await self._store._run(_seal, self._handle, self._final, last)

    async def discard(self) -> None:
        """Remove what a failed put wrote, once no thread is using the file any more (closing it under a running
        write would let that write land in whatever file next takes the descriptor's number)."""
        running = [asyncio.wrap_future(f) for f in (self._writing, self._flushing) if f is not None]
        if running:
            await asyncio.wait(running)
        await self._store._run(_discard, self._handle, self._final)

    async def _settle_write(self) -> None:
        if self._writing is not None:
            await _translated(self._writing)
            self._writing = None
            self._written += self._writing_size

    async def _maybe_flush(self) -> None:
        """Start write-back of what has been written, a WINDOW or more past the last, unless one is still running
        (the next one then covers both)."""
        if self._written - self._flushed < writeback.WINDOW:
            return
        if self._flushing is not None:
            if not self._flushing.done():
                return
            await _translated(self._flushing)  # raises what it raised: an I/O error is the put's error
        self._flushing = self._store._start(self._writeback.flush, self._written, flush=True)
        self._flushed = self._written


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


def _create(final: Path, root: Path, first: Sequence[bytes]) -> BinaryIO:
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


def _seal(handle: BinaryIO, final: Path, last: Sequence[bytes]) -> None:
    """Write the last bytes, fsync the file, then its folder so the new name is durable too."""
    try:
        _write_all(handle, last)
        os.fsync(handle.fileno())
    finally:
        handle.close()
    _fsync_dir(final.parent)


def _write_all(handle: BinaryIO, pieces: Sequence[bytes]) -> None:
    """Write pieces in order with writev. An unbuffered write may take only some of the bytes (a disk nearly full,
    a file-size limit); write on until all are taken or a write raises (ENOSPC, EFBIG), so a put never returns over
    a blob shorter than its body."""
    if len(pieces) > MAX_PIECES:
        pieces = [b"".join(pieces)]
    views = [memoryview(piece) for piece in pieces if piece]
    fd = handle.fileno()
    while views:
        written = os.writev(fd, views)
        if not written:
            raise OSError(errno.ENOSPC, "the file took no bytes")
        while views and written >= len(views[0]):
            written -= len(views[0])
            del views[0]
        if written:
            views[0] = views[0][written:]


def _write_whole(final: Path, root: Path, data: Sequence[bytes]) -> None:
    handle = _create(final, root, data)
    try:
        _seal(handle, final, ())
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
