"""LeaseStore, housekeeping's named leases, on every metadata store: a claim holds until its time, is renewed by its
holder, refused to others while it holds, taken over once it has lapsed, and given up by release; of claimers
racing for a free or lapsed lease exactly one wins (on PostgreSQL, over separate pooled connections)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from broker.store.protocol import MetadataStore

T0 = datetime(2026, 12, 1, 3, 0, 0, 123456, tzinfo=UTC)
LEASE = timedelta(minutes=2)
SWEEP = "leftover_sweep"


async def test_a_held_lease_is_refused_to_others_and_renewed_by_its_holder(store: MetadataStore) -> None:
    assert await store.claim_lease(SWEEP, "node-a", T0 + LEASE, T0) is True
    assert (
        await store.claim_lease(SWEEP, "node-b", T0 + LEASE + timedelta(seconds=1), T0 + timedelta(seconds=1)) is False
    )
    # The holder renews before it lapses, and keeps it past the first claim's time.
    assert await store.claim_lease(SWEEP, "node-a", T0 + 2 * LEASE, T0 + timedelta(minutes=1)) is True
    later = T0 + LEASE + timedelta(seconds=1)
    assert await store.claim_lease(SWEEP, "node-b", later + LEASE, later) is False
    # Other names are other leases.
    assert await store.claim_lease("another", "node-b", T0 + LEASE, T0) is True


async def test_a_lapsed_lease_is_taken_over_and_its_old_holder_cannot_renew_it(store: MetadataStore) -> None:
    assert await store.claim_lease(SWEEP, "node-a", T0 + LEASE, T0) is True
    # At exactly the lease's time it has lapsed.
    assert await store.claim_lease(SWEEP, "node-b", T0 + 2 * LEASE, T0 + LEASE) is True
    late = T0 + LEASE + timedelta(seconds=5)
    assert await store.claim_lease(SWEEP, "node-a", late + LEASE, late) is False
    assert await store.release_lease(SWEEP, "node-a") is False, "a lapsed holder cannot give up another's lease"
    assert await store.claim_lease(SWEEP, "node-c", late + LEASE, late) is False, "still node-b's"


async def test_a_released_lease_is_free_at_once(store: MetadataStore) -> None:
    assert await store.release_lease(SWEEP, "node-a") is False, "nothing held, nothing released"
    assert await store.claim_lease(SWEEP, "node-a", T0 + LEASE, T0) is True
    assert await store.release_lease(SWEEP, "node-b") is False
    assert await store.claim_lease(SWEEP, "node-b", T0 + LEASE, T0) is False
    assert await store.release_lease(SWEEP, "node-a") is True
    assert await store.claim_lease(SWEEP, "node-b", T0 + LEASE, T0) is True
    assert await store.release_lease(SWEEP, "node-a") is False


async def test_of_racing_claimers_exactly_one_wins(store: MetadataStore) -> None:
    claimers = [f"node-{n}" for n in range(8)]

    async def race(now: datetime) -> list[str]:
        won = await asyncio.gather(*(store.claim_lease(SWEEP, name, now + LEASE, now) for name in claimers))
        return [name for name, ok in zip(claimers, won, strict=True) if ok]

    # A lease never held (the row's insert races), then the same lease lapsed (the row's update races).
    first = await race(T0)
    assert len(first) == 1, first
    second = await race(T0 + LEASE)
    assert len(second) == 1, second
