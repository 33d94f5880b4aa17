"""broker/services/housekeeping.py: a failing pass is counted and logged, and the loop carries on; a leftover sweep
ends where its lease was lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.blobs.protocol import BlobError, StoredBlob
from broker.clock import ManualClock
from broker.metrics import Metrics
from broker.services.housekeeping import Housekeeping
from broker.services.reports import Reports
from broker.store.protocol import StoreError


class IdleStore:
    """A store with nothing to do, whose first `failures` token purges fail."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.passes = 0

    async def purge_tokens(self, now: datetime) -> int:
        self.passes += 1
        if self.failures:
            self.failures -= 1
            raise StoreError("database went away")
        return 0

    async def undeliverable_candidates(self, now: datetime, limit: int) -> list[Any]:
        return []

    async def abandon_uploads(self, created_before: datetime, event: Any, limit: int) -> list[str]:
        return []

    async def purge_messages(self, created_before: datetime, limit: int) -> list[str]:
        return []

    async def take_orphan_blobs(self, limit: int) -> list[str]:
        return []

    async def known_blob_keys(self, keys: list[str]) -> set[str]:
        return set()

    async def claim_lease(self, name: str, holder: str, until: datetime, now: datetime) -> bool:
        return True  # the only node: it always holds the sweep's lease

    async def release_lease(self, name: str, holder: str) -> bool:
        return True


class FailingScan:
    """A blob store whose listing fails, as an unreachable bucket would."""

    async def scan(self, *, page_size: int = 1000) -> AsyncIterator[list[StoredBlob]]:
        raise BlobError("bucket unreachable")
        yield []

    async def delete(self, key: str) -> None:
        raise AssertionError("nothing should be deleted")


def housekeeping(store: Any, blobs: Any, metrics: Metrics) -> Housekeeping:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    return Housekeeping(
        store,
        blobs,
        Reports(store, inbox_expiry=timedelta(days=5), clock=clock),
        metrics=metrics,
        retention=timedelta(days=30),
        upload_timeout=timedelta(hours=24),
        orphan_grace=timedelta(hours=1),
        clock=clock,
    )


def runs(metrics: Metrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("mesh_housekeeping_runs_total", {"outcome": outcome}) or 0.0


async def test_the_loop_survives_failed_passes_and_counts_them(caplog: pytest.LogCaptureFixture) -> None:
    store, metrics = IdleStore(failures=2), Metrics()

    class NoBlobs:
        async def scan(self, *, page_size: int = 1000) -> AsyncIterator[list[StoredBlob]]:
            for page in ():
                yield page

    loop = asyncio.create_task(housekeeping(store, NoBlobs(), metrics).run_forever(0.001))
    with caplog.at_level(logging.ERROR, logger="broker.housekeeping"):
        for _ in range(2000):
            if runs(metrics, "success") >= 1:
                break
            await asyncio.sleep(0.001)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert runs(metrics, "failure") == 2
    assert runs(metrics, "success") >= 1
    assert [r.action for r in caplog.records] == ["housekeeping_failed", "housekeeping_failed"]  # type: ignore[attr-defined]
    assert metrics.registry.get_sample_value("mesh_housekeeping_last_success_timestamp_seconds") > 0


class FlakySampling(IdleStore):
    """A store whose first storage read fails with a driver's own error (not a StoreError), then answers."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.samples = 0

    async def count_accepted(self) -> int:
        return 3

    async def storage_bytes(self) -> dict[str, int]:
        self.samples += 1
        if self.samples == 1:
            raise RuntimeError("cannot switch to state 12; another operation (2) is in progress")
        return {"database": 4096}

    def directory_listening(self) -> bool | None:
        return None

    def pool_usage(self) -> tuple[int, int] | None:
        return None


async def test_the_metrics_sampler_survives_any_failure(caplog: pytest.LogCaptureFixture) -> None:
    store, metrics = FlakySampling(), Metrics()
    with caplog.at_level(logging.ERROR, logger="broker.housekeeping"):
        loop = asyncio.create_task(housekeeping(store, None, metrics).sample_forever(metrics, 0.001))
        for _ in range(2000):
            if store.samples >= 2:
                break
            await asyncio.sleep(0.001)
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop
    assert store.samples >= 2
    assert metrics.registry.get_sample_value("mesh_store_bytes", {"part": "database"}) == 4096
    assert [r.action for r in caplog.records] == ["sample_failed"]  # type: ignore[attr-defined]


async def test_a_blob_failure_fails_the_pass_not_the_caller_silently() -> None:
    metrics = Metrics()
    with pytest.raises(BlobError):
        await housekeeping(IdleStore(failures=0), FailingScan(), metrics).run_once()
    assert runs(metrics, "failure") == 1
    assert metrics.registry.get_sample_value("mesh_housekeeping_last_success_timestamp_seconds") == 0


class LeaseLostAfter(IdleStore):
    """A store whose sweep lease this node holds for `claims` claims, and then finds taken over by another node."""

    def __init__(self, claims: int) -> None:
        super().__init__(failures=0)
        self.claims = claims

    async def claim_lease(self, name: str, holder: str, until: datetime, now: datetime) -> bool:
        self.claims -= 1
        return self.claims >= 0


class Pages:
    """A blob store of old leftovers listed in pages; records what it is asked to delete."""

    def __init__(self) -> None:
        old = datetime(2025, 1, 1, tzinfo=UTC)
        self.pages = [
            [StoredBlob("a/1", old), StoredBlob("a/2", old)],
            [StoredBlob("b/1", old)],
            [StoredBlob("c/1", old)],
        ]
        self.deleted: list[str] = []

    async def scan(self, *, page_size: int = 1000) -> AsyncIterator[list[StoredBlob]]:
        for page in self.pages:
            yield page

    async def delete(self, key: str) -> None:
        self.deleted.append(key)


async def test_a_sweep_stops_at_the_page_where_its_lease_was_lost_and_is_not_taken_for_done() -> None:
    # The claim before the sweep and the renewal after page one hold; the renewal after page two does not.
    metrics, blobs, store = Metrics(), Pages(), LeaseLostAfter(claims=2)
    node = housekeeping(store, blobs, metrics)
    assert await node.sweep_leftovers() == 3
    assert blobs.deleted == ["a/1", "a/2", "b/1"], "nothing listed after the lease was lost is deleted"
    swept = metrics.registry.get_sample_value("mesh_orphan_blobs_deleted_total", {"reason": "leftover"})
    assert swept == 3
    # Not holding the lease: no sweep at all. Holding it again (the other node let it go): the interrupted sweep
    # is still due, though the grace period has not passed since it started.
    assert await node.sweep_leftovers() == 0
    store.claims = 10
    assert await node.sweep_leftovers() == 4
