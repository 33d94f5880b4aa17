"""Write-back while a blob is still arriving: the disk starts on the bytes already written, so the fsync that makes
the blob durable finds little left to do, and receiving and writing to disk overlap instead of taking turns."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable

MiB = 1024 * 1024
#: Bytes written before write-back of them is started: long sequential writes for the disk, and little for the
#: final fsync to wait on (the last window or two).
WINDOW = 8 * MiB

# sync_file_range(2) flags, from <linux/fs.h>.
WAIT_BEFORE = 1
WRITE = 2
WAIT_AFTER = 4

#: Errors that say "this file or kernel cannot do ranged write-back", not "the disk failed": fall back to fdatasync.
UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP})

SyncFileRange = Callable[[int, int, int, int], int]


def _load_sync_file_range() -> SyncFileRange | None:
    """glibc's (or musl's) sync_file_range, which Python's os module does not offer; None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


#: Loaded once: a constant of the running system, like os.sep, not state.
SYNC_FILE_RANGE = _load_sync_file_range()


class WriteBack:
    """Flushes one file that is still being written, called (never on the event loop) with how far the writes
    have got; one flush at a time per file.

    With sync_file_range (Linux) a flush starts the disk on the newest bytes without waiting for it, then waits for
    the range started by the flush before (long under way, so the wait is short unless the disk is the bottleneck,
    when waiting is right) and drops those now clean pages from the page cache: a blob being received holds about
    two windows of dirty pages, and a large message does not push the database's pages out of the cache. Elsewhere,
    or where the filesystem refuses ranged write-back, a flush is fdatasync of everything so far: coarser, but it
    still runs while the next bytes arrive. Neither replaces the final fsync: this only leaves it less to do.
    """

    def __init__(self, fd: int, *, sync_file_range: SyncFileRange | None = SYNC_FILE_RANGE):
        self._fd = fd
        self._sync_file_range = sync_file_range
        #: Write-back was started for [0, _started); [_waited, _started) may still be on its way to the disk.
        self._started = 0
        self._waited = 0

    @property
    def ranged(self) -> bool:
        """Whether flushes use sync_file_range (else fdatasync)."""
        return self._sync_file_range is not None

    def flush(self, end: int) -> None:
        """Write back the file's bytes before end (all its writes so far have finished)."""
        if end <= self._started:
            return
        if self._sync_file_range is None:
            os.fdatasync(self._fd)
            self._started = self._waited = end
            return
        previous = self._started
        if not self._ranged(previous, end - previous, WRITE):
            self.flush(end)  # the fallback, now that _sync_file_range is None
            return
        self._started = end
        if previous > self._waited:
            if self._ranged(self._waited, previous - self._waited, WAIT_BEFORE | WRITE | WAIT_AFTER):
                os.posix_fadvise(self._fd, self._waited, previous - self._waited, os.POSIX_FADV_DONTNEED)
            self._waited = previous

    def _ranged(self, offset: int, length: int, flags: int) -> bool:
        """One sync_file_range call: True if done, False (and fdatasync from now on) if the file cannot; an I/O
        error raises OSError as any write would."""
        assert self._sync_file_range is not None
        if self._sync_file_range(self._fd, offset, length, flags) == 0:
            return True
        code = ctypes.get_errno()
        if code in UNSUPPORTED:
            self._sync_file_range = None
            return False
        raise OSError(code, f"sync_file_range: {os.strerror(code)}")
