"""Background upkeep of a node: delete orphaned blobs and forget expired auth tokens."""

from __future__ import annotations

import asyncio
import logging

from broker.blobs.protocol import BlobError, BlobStore
from broker.clock import SYSTEM_CLOCK, Clock
from broker.metrics import Metrics
from broker.store.protocol import MetadataStore, StoreError

log = logging.getLogger("broker.housekeeping")


class Housekeeping:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self._store = store
        self._blobs = blobs
        self._clock = clock

    async def collect_orphans(self, batch: int = 500) -> int:
        """Delete blobs no row points at any more; returns how many."""
        total = 0
        while keys := await self._store.take_orphan_blobs(batch):
            for key in keys:
                await self._blobs.delete(key)
            total += len(keys)
            if len(keys) < batch:
                break
        return total

    async def run_once(self) -> None:
        await self._store.purge_tokens(self._clock.now())
        await self.collect_orphans()

    async def sample(self, metrics: Metrics) -> None:
        """Refresh the gauges that come from the store: inbox depth and database pool use."""
        metrics.inbox_messages.set(await self._store.count_accepted())
        usage = self._store.pool_usage()
        if usage is not None:
            metrics.db_pool_size.set(usage[0])
            metrics.db_pool_in_use.set(usage[1])

    async def sample_forever(self, metrics: Metrics, interval_seconds: float) -> None:
        while True:
            try:
                await self.sample(metrics)
            except StoreError:
                log.exception("metrics sampling failed", extra={"action": "sample_failed"})
            await asyncio.sleep(interval_seconds)

    async def run_forever(self, interval_seconds: float) -> None:
        while True:
            try:
                await self.run_once()
            except (StoreError, BlobError):
                log.exception("housekeeping pass failed", extra={"action": "housekeeping_failed"})
            await asyncio.sleep(interval_seconds)
