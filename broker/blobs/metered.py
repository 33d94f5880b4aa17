"""A BlobStore wrapper that times every operation into the metrics registry, whatever the backend."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import BinaryIO

from broker.blobs.protocol import BlobStore, StoredBlob
from broker.metrics import Metrics


class MeteredBlobStore:
    def __init__(self, inner: BlobStore, metrics: Metrics, backend: str):
        self._inner = inner
        self._duration = metrics.blob_operation_duration
        self._backend = backend

    @property
    def transfer_buffer_bytes(self) -> int:
        return self._inner.transfer_buffer_bytes

    async def open(self) -> None:
        await self._inner.open()

    async def close(self) -> None:
        await self._inner.close()

    async def open_file(self, key: str) -> BinaryIO | None:
        # Not timed: it is one open (or nothing, on S3); the zero-copy send that follows is the download's own
        # time, which the transfer measures.
        return await self._inner.open_file(key)

    async def put(self, key: str, data: AsyncIterable[bytes]) -> int:
        started = time.perf_counter()
        try:
            return await self._inner.put(key, data)
        finally:
            self._duration.labels("put", self._backend).observe(time.perf_counter() - started)

    async def get(self, key: str, *, piece_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        try:
            async for piece in self._inner.get(key, piece_size=piece_size):
                yield piece
        finally:
            self._duration.labels("get", self._backend).observe(time.perf_counter() - started)

    async def size(self, key: str) -> int:
        started = time.perf_counter()
        try:
            return await self._inner.size(key)
        finally:
            self._duration.labels("size", self._backend).observe(time.perf_counter() - started)

    async def delete(self, key: str) -> None:
        started = time.perf_counter()
        try:
            await self._inner.delete(key)
        finally:
            self._duration.labels("delete", self._backend).observe(time.perf_counter() - started)

    async def scan(self, *, page_size: int = 1000) -> AsyncIterator[list[StoredBlob]]:
        started = time.perf_counter()
        try:
            async for page in self._inner.scan(page_size=page_size):
                yield page
        finally:
            self._duration.labels("scan", self._backend).observe(time.perf_counter() - started)
