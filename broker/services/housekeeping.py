"""Background upkeep of a node: the message lifecycle (expiry with NDRs, abandoned uploads, retention purge),
orphaned and leftover blobs, and expired auth tokens. Safe to run on every node at once (mesh-api.md section 7.5):
each piece of row work is claimed by one node, and the leftover sweep, which lists the whole blob store, runs only on
the node holding its lease (services/leases.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Protocol

from broker.blobs.protocol import BlobStore
from broker.clock import SYSTEM_CLOCK, Clock
from broker.metrics import Metrics
from broker.models import Event, Status
from broker.services.leases import Lease, node_identity
from broker.services.reports import NDR_DEACTIVATED, NDR_EXPIRED, Reports
from broker.store.protocol import (
    DuplicateMessageId,
    LeaseStore,
    LifecycleStore,
    NonDelivery,
    StoreStats,
    TokenStore,
    Undeliverable,
    UndeliverableCandidate,
)

log = logging.getLogger("broker.housekeeping")


class HousekeepingStore(TokenStore, LifecycleStore, LeaseStore, StoreStats, Protocol):
    """What housekeeping changes (tokens, the lifecycle), leases (the leftover sweep) and samples (the figures)."""


#: Rows one store transaction claims: large enough to drain a backlog quickly, small enough to keep
#: transactions (and the row locks other nodes skip) short.
BATCH = 500
#: Batches of one kind per pass, so a pass always ends and the other kinds of work get their turn.
MAX_BATCHES = 20
DESCRIPTIONS = {Undeliverable.EXPIRED: NDR_EXPIRED, Undeliverable.DEACTIVATED: NDR_DEACTIVATED}
#: The error event of an upload whose missing chunks never came (no source documents one; see README).
UPLOAD_ABANDONED = ("SEND", "02", "Upload abandoned: not every chunk arrived before the upload timeout")
#: The lease whose holder sweeps the blob store for leftovers (the housekeeping_leases row's name).
LEFTOVER_SWEEP = "leftover_sweep"
#: How long a claim of the sweep's lease lasts unless renewed: twice the default pass interval, so a holder may
#: miss one pass before another node takes the sweep over (the app passes twice the configured interval).
LEASE = timedelta(minutes=2)


class Housekeeping:
    def __init__(
        self,
        store: HousekeepingStore,
        blobs: BlobStore,
        reports: Reports,
        *,
        metrics: Metrics,
        retention: timedelta,
        upload_timeout: timedelta,
        orphan_grace: timedelta,
        clock: Clock = SYSTEM_CLOCK,
        batch: int = BATCH,
        lease: timedelta = LEASE,
        holder: str | None = None,
    ):
        self._store = store
        self._blobs = blobs
        self._reports = reports
        self._metrics = metrics
        self._retention = retention
        self._upload_timeout = upload_timeout
        self._orphan_grace = orphan_grace
        self._clock = clock
        self._batch = batch
        self._last_sweep: datetime | None = None
        self._sweep_lease = Lease(store, LEFTOVER_SWEEP, holder or node_identity(), lease, clock)
        # The background loop and a caller (tests, an operator) never run two passes of one node at once.
        self._pass = asyncio.Lock()

    async def run_once(self) -> None:
        """One pass over every kind of work; raises the first store or blob failure after counting it."""
        async with self._pass:
            started = time.perf_counter()
            try:
                await self._store.purge_tokens(self._clock.now())
                await self.expire_messages()
                await self.abandon_uploads()
                await self.purge_messages()
                await self.collect_orphans()
                await self.sweep_leftovers()
            except Exception:
                self._metrics.housekeeping_runs.labels("failure").inc()
                raise
            finally:
                self._metrics.housekeeping_duration.observe(time.perf_counter() - started)
            self._metrics.housekeeping_runs.labels("success").inc()
            self._metrics.housekeeping_last_success.set(self._clock.now().timestamp())

    async def expire_messages(self) -> int:
        """Accepted messages past their inbox expiry, or to a deactivated mailbox: undeliverable, each with an
        NDR in its sender's inbox, exactly once however many nodes run this. Returns how many this node did."""
        done = 0
        for _batch in range(MAX_BATCHES):
            candidates = await self._store.undeliverable_candidates(self._clock.now(), self._batch)
            if not candidates:
                break
            taken: set[str] = set()
            claims = [self._reports.prepare_non_delivery(c.message, DESCRIPTIONS[c.reason], taken) for c in candidates]
            try:
                claimed = set(await self._store.mark_undeliverable(claims))
            except DuplicateMessageId:
                # A report ID met one stored by another node in the same microsecond: the whole batch rolled
                # back, so try again with fresh IDs. A report is only rows (its empty body is inline), so a claim
                # that is lost or rolled back leaves nothing to clean up.
                continue
            reasons = {c.message.message_id: c for c in candidates}
            for claim in claims:
                if claim.message_id in claimed:
                    self._count_undeliverable(reasons[claim.message_id], claim)
            done += len(claimed)
            if not claimed or len(candidates) < self._batch:
                break
        return done

    def _count_undeliverable(self, candidate: UndeliverableCandidate, claim: NonDelivery) -> None:
        message = candidate.message
        workflow = self._metrics.workflow(message.workflow_id)
        self._metrics.messages_undeliverable.labels(workflow, candidate.reason.value).inc()
        log.info(
            "message undeliverable",
            extra={
                "action": "message_undeliverable",
                "message_id": message.message_id,
                "report_id": "" if claim.report is None else claim.report.message_id,
                "reason": candidate.reason.value,
                "sender": message.sender.mailbox_id,
                "recipient": message.recipient.mailbox_id,
                "workflow_id": message.workflow_id,
            },
        )

    async def abandon_uploads(self) -> int:
        """Uploads still missing chunks after the upload timeout: status error, chunk rows and bytes deleted."""
        done = 0
        for _batch in range(MAX_BATCHES):
            now = self._clock.now()
            event = Event(Status.ERROR, now, *UPLOAD_ABANDONED)
            ids = await self._store.abandon_uploads(now - self._upload_timeout, event, self._batch)
            for message_id in ids:
                log.info("upload abandoned", extra={"action": "upload_abandoned", "message_id": message_id})
            self._metrics.uploads_abandoned.inc(len(ids))
            done += len(ids)
            if len(ids) < self._batch:
                break
        return done

    async def purge_messages(self) -> int:
        """Messages older than the retention period, in any status: rows deleted, bytes queued for deletion."""
        done = 0
        for _batch in range(MAX_BATCHES):
            ids = await self._store.purge_messages(self._clock.now() - self._retention, self._batch)
            for message_id in ids:
                log.info("message purged", extra={"action": "message_purged", "message_id": message_id})
            self._metrics.messages_purged.inc(len(ids))
            done += len(ids)
            if len(ids) < self._batch:
                break
        return done

    async def collect_orphans(self, batch: int = BATCH) -> int:
        """Delete blobs whose rows were replaced or removed (the store's queue); returns how many."""
        total = 0
        while keys := await self._store.take_orphan_blobs(batch):
            for key in keys:
                await self._blobs.delete(key)
            total += len(keys)
            self._metrics.orphan_blobs_deleted.labels("released").inc(len(keys))
            if len(keys) < batch:
                break
        return total

    async def sweep_leftovers(self) -> int:
        """Delete blobs older than the orphan grace that no chunk row points at: bytes stored before a crash
        kept their row from being written. Listing a bucket is not free, so this runs once per grace period, and
        only on the node holding the sweep's lease: every pass takes or renews it (so the sweep stays with one
        node), and each page renews it again, so a long listing keeps it. A node that loses the lease mid-sweep
        (it let it lapse, and another took it) stops at that page; deleting one leftover twice would be harmless,
        but counting it twice would not."""
        if not await self._sweep_lease.hold():
            return 0
        now = self._clock.now()
        if self._last_sweep is not None and now - self._last_sweep < self._orphan_grace:
            return 0
        cutoff = now - self._orphan_grace
        deleted = 0
        finished = True
        async for page in self._blobs.scan(page_size=self._batch):
            old = [blob.key for blob in page if blob.modified < cutoff]
            known = await self._store.known_blob_keys(old)
            for key in old:
                if key not in known:
                    await self._blobs.delete(key)
                    deleted += 1
                    log.info("leftover blob deleted", extra={"action": "leftover_blob_deleted", "blob_key": key})
            if not await self._sweep_lease.hold():
                finished = False
                break
        self._metrics.orphan_blobs_deleted.labels("leftover").inc(deleted)
        if finished:
            self._last_sweep = now
        return deleted

    async def release(self) -> None:
        """Give up this node's leases (it is stopping), so another node takes the sweep over at its next pass."""
        await self._sweep_lease.release()

    async def sample(self, metrics: Metrics) -> None:
        """Refresh the gauges that come from the store: inbox depth, storage size and database pool use."""
        metrics.inbox_messages.set(await self._store.count_accepted())
        for part, size in (await self._store.storage_bytes()).items():
            metrics.store_bytes.labels(part).set(size)
        listening = self._store.directory_listening()
        if listening is not None:
            metrics.directory_listening.labels("postgresql").set(1 if listening else 0)
        usage = self._store.pool_usage()
        if usage is not None:
            metrics.db_pool_size.set(usage[0])
            metrics.db_pool_in_use.set(usage[1])

    async def sample_forever(self, metrics: Metrics, interval_seconds: float) -> None:
        while True:
            try:
                await self.sample(metrics)
            except Exception:
                # Any failure, not only the store's own: a driver error (asyncpg's InternalClientError on a pooled
                # connection left mid-error, seen as a test's app shut down) would otherwise end the loop, leave the
                # gauges stale, and be raised again when the app stops.
                log.exception("metrics sampling failed", extra={"action": "sample_failed"})
            await asyncio.sleep(interval_seconds)

    async def run_forever(self, interval_seconds: float) -> None:
        """A pass every interval, the first one interval after start: nothing is due in a node's first seconds
        that the other nodes (or the next pass) will not do, and tests drive passes themselves meanwhile."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.run_once()
            except Exception:
                # Any failure, not only store and blob errors: a dead loop would stop expiry on this node silently.
                log.exception("housekeeping pass failed", extra={"action": "housekeeping_failed"})
