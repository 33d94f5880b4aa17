"""The file store's write path for large blobs: each buffer written on a thread while the next one fills,
write-back started behind the writes (sync_file_range, or fdatasync where there is none), and still an fsync of the
file and its folder before put returns. The bytes are the same whichever path wrote them."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import itertools
import os
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.blobs import filesystem, writeback
from broker.blobs.filesystem import WRITE_BUFFER, FilesystemBlobStore
from broker.blobs.protocol import BlobError, BlobStoreFull

MiB = 1024 * 1024
#: Three write-back windows and a ragged end: several flushes, and a last buffer shorter than the others.
SIZE = 3 * writeback.WINDOW + 12345
KEY = "20261201/20261201000000000001_ABCDEF.2.ab12"
PIECE = 256 * 1024

Call = tuple[str, int, int, int, bool]


def data_of(size: int) -> bytes:
    block = bytes(range(256)) * (MiB // 256)
    return (block * (size // MiB + 1))[:size]


async def pieces(data: bytes, size: int = PIECE) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[start : start + size]


def kind(fd: int) -> str:
    return "file" if stat.S_ISREG(os.fstat(fd).st_mode) else "folder"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every fsync, fdatasync and sync_file_range the store makes, in order: (name or kind, offset, length, flags,
    whether it ran on the event loop's thread). The real calls still run."""
    recorded: list[Call] = []
    real_fsync, real_fdatasync, real_range = os.fsync, os.fdatasync, writeback.SYNC_FILE_RANGE
    on_loop = threading.main_thread

    def fsync(fd: int) -> None:
        recorded.append((f"fsync {kind(fd)}", 0, 0, 0, threading.current_thread() is on_loop()))
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        recorded.append(("fdatasync", 0, 0, 0, threading.current_thread() is on_loop()))
        real_fdatasync(fd)

    def sync_file_range(fd: int, offset: int, length: int, flags: int) -> int:
        recorded.append(("sync_file_range", offset, length, flags, threading.current_thread() is on_loop()))
        assert real_range is not None
        return real_range(fd, offset, length, flags)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    if real_range is not None:
        monkeypatch.setattr(writeback, "SYNC_FILE_RANGE", sync_file_range)
    return recorded


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FilesystemBlobStore]:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    await blobs.open()
    yield blobs
    await blobs.close()


def blob_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]


def assert_sealed_last(calls: list[Call]) -> None:
    """The file's fsync, then its folder's, come after every write-back call: nothing is left for later."""
    names = [call[0] for call in calls]
    assert names[-2:] == ["fsync file", "fsync folder"], names
    assert not any(on_loop for *_, on_loop in calls), "a disk call ran on the event loop"


@pytest.mark.skipif(writeback.SYNC_FILE_RANGE is None, reason="no sync_file_range on this system")
async def test_ranged_write_back_runs_behind_the_writes_and_fsync_still_seals(
    store: FilesystemBlobStore, calls: list[Call], tmp_path: Path
) -> None:
    data = data_of(SIZE)

    assert await store.put(KEY, pieces(data)) == SIZE

    (path,) = blob_files(tmp_path)
    assert path.read_bytes() == data
    started = [(offset, length) for name, offset, length, flags, _ in calls if flags == writeback.WRITE]
    waited = [(offset, length) for name, offset, length, flags, _ in calls if flags & writeback.WAIT_AFTER]
    # Write-back started window by window from the first byte, each range following the last, none re-sent.
    assert started, calls
    assert started[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(started))
    assert all(n >= writeback.WINDOW for _, n in started)
    # Each range waited for had been started before, so the disk was already on it.
    assert waited and all(any(a <= w < a + n for a, n in started) for w, _ in waited)
    assert_sealed_last(calls)


async def test_without_sync_file_range_fdatasync_runs_while_writing(
    store: FilesystemBlobStore, calls: list[Call], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writeback, "SYNC_FILE_RANGE", None)
    data = data_of(SIZE)

    assert await store.put(KEY, pieces(data)) == SIZE

    (path,) = blob_files(tmp_path)
    assert path.read_bytes() == data
    names = [call[0] for call in calls]
    assert "fdatasync" in names and "sync_file_range" not in names
    assert_sealed_last(calls)


async def test_a_filesystem_refusing_ranged_write_back_falls_back_to_fdatasync(
    store: FilesystemBlobStore, calls: list[Call], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuses(fd: int, offset: int, length: int, flags: int) -> int:
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(writeback, "SYNC_FILE_RANGE", refuses)
    data = data_of(SIZE)

    assert await store.put(KEY, pieces(data)) == SIZE

    assert blob_files(tmp_path)[0].read_bytes() == data
    assert "fdatasync" in [call[0] for call in calls]
    assert_sealed_last(calls)


async def test_an_io_error_in_write_back_fails_the_put_and_leaves_no_file(
    store: FilesystemBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(fd: int, offset: int, length: int, flags: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(writeback, "SYNC_FILE_RANGE", fails)

    with pytest.raises(BlobError, match="sync_file_range") as raised:
        await store.put(KEY, pieces(data_of(SIZE)))

    assert not isinstance(raised.value, BlobStoreFull)
    assert blob_files(tmp_path) == []


async def test_the_next_buffer_fills_while_the_last_one_is_written(
    store: FilesystemBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second buffer's write waits (on its thread) until the body has gone on to the third buffer: that only
    happens if put reads on while a write is in flight. Written one after the other, the wait would time out."""
    gathered = threading.Event()
    overlapped: list[bool] = []
    real_write_all = filesystem._write_all

    def write_all(handle: object, data: bytes) -> None:
        overlapped.append(gathered.wait(5) if len(overlapped) == 1 else True)
        real_write_all(handle, data)  # type: ignore[arg-type]

    async def body(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), PIECE):
            if start >= 2 * WRITE_BUFFER:
                gathered.set()
            await asyncio.sleep(0)
            yield data[start : start + PIECE]

    monkeypatch.setattr(filesystem, "_write_all", write_all)
    data = data_of(4 * WRITE_BUFFER + 1)

    assert await store.put(KEY, body(data)) == len(data)

    assert overlapped[1] is True
    assert blob_files(tmp_path)[0].read_bytes() == data


@pytest.mark.parametrize("cancel", [False, True], ids=["source-fails", "cancelled"])
async def test_a_put_ended_mid_write_back_leaves_no_file(
    store: FilesystemBlobStore, tmp_path: Path, cancel: bool
) -> None:
    """A body that fails (or a put cancelled) with writes and write-back in flight: put waits for its threads to
    let go of the file before removing it, and the caller sees its own exception."""
    reached = asyncio.Event()

    class Gone(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        async for piece in pieces(data_of(2 * writeback.WINDOW + WRITE_BUFFER)):
            yield piece
        reached.set()
        if not cancel:
            raise Gone
        await asyncio.Event().wait()

    task = asyncio.create_task(store.put(KEY, body()))
    await asyncio.wait_for(reached.wait(), 30)
    if cancel:
        task.cancel()
    with pytest.raises(asyncio.CancelledError if cancel else Gone):
        await task
    await asyncio.sleep(0.05)  # the shielded clean-up, should cancellation have left it running
    assert blob_files(tmp_path) == []


def test_write_back_of_nothing_new_does_nothing(tmp_path: Path) -> None:
    calls: list[tuple[int, int, int]] = []

    def record(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append((offset, length, flags))
        return 0

    with open(tmp_path / "f", "wb") as handle:
        flusher = writeback.WriteBack(handle.fileno(), sync_file_range=record)
        flusher.flush(10)
        flusher.flush(10)
        flusher.flush(25)
    assert calls == [
        (0, 10, writeback.WRITE),
        (10, 15, writeback.WRITE),
        (0, 10, writeback.WAIT_BEFORE | writeback.WRITE | writeback.WAIT_AFTER),
    ]


async def test_short_writes_are_written_on_until_every_byte_is_in(
    store: FilesystemBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """writev may take only part of what it is given (a disk nearly full, a file-size limit): the rest follows,
    piece boundaries or not."""
    real_writev = os.writev
    taken: list[int] = []

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        taken.append(real_writev(fd, [buffers[0][:100_003]]))
        return taken[-1]

    monkeypatch.setattr(os, "writev", short_writev)
    data = data_of(3 * WRITE_BUFFER + 77)

    assert await store.put(KEY, pieces(data, 300_001)) == len(data)

    assert blob_files(tmp_path)[0].read_bytes() == data
    assert len(taken) > len(data) // 100_003
