"""The BlobStore Protocol: message bytes stored and streamed by key, never held whole in memory."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol


class BlobError(Exception):
    """A backend failure, translated at the blob-store boundary."""


class BlobNotFound(BlobError):
    """No blob is stored under the key."""


class BlobStoreFull(BlobError):
    """The store has no room for the bytes (a full disk or quota, a file-size limit); nothing was left behind."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    #: When the blob was last written, timezone-aware UTC, as the store records it.
    modified: datetime


class BlobStore(Protocol):
    """Bytes by key. put is durable when it returns; until then nothing may read the key (a row points at a
    blob only after its put returned), so a store may write in place."""

    @property
    def transfer_buffer_bytes(self) -> int:
        """The most memory one put or get holds at a time (what a transfer reserves from the budget)."""

    async def open(self) -> None:
        """Prepare the store (create folders, open client pools)."""

    async def close(self) -> None:
        """Release resources."""

    async def open_file(self, key: str) -> BinaryIO | None:
        """The blob as an open, read-only, unbuffered local file for the kernel to send zero-copy (the caller
        closes it); None where the store keeps no local files (S3), and the caller streams get() instead.
        Raises BlobNotFound, like get: no operating-system error leaves the store raw."""

    async def put(self, key: str, data: AsyncIterable[bytes]) -> int:
        """Stream data under key and return its size. Durable when it returns. If data raises, nothing is
        left under key and the exception propagates unchanged. Replaces an existing blob."""

    def get(self, key: str, *, piece_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        """Stream the blob in pieces of at most piece_size. Raises BlobNotFound on first iteration."""

    async def size(self, key: str) -> int:
        """The stored size in bytes. Raises BlobNotFound."""

    async def delete(self, key: str) -> None:
        """Remove the blob; a missing key is not an error."""

    def scan(self, *, page_size: int = 1000) -> AsyncIterator[list[StoredBlob]]:
        """Every stored key with its last-modified time, in pages of at most page_size, in no set order (what
        housekeeping compares with the chunk rows to find crash leftovers). Blobs put or deleted while a scan
        runs may or may not appear, and so may the partial bytes of a put that was interrupted (a crash)."""
