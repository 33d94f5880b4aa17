"""The leftover-blob sweep is a singleton across nodes: three broker nodes on one store and one blob store run it at
the same moment, and only the holder of the sweep's lease (housekeeping_leases) lists the blobs and deletes the
leftovers, so each is deleted and counted once. The holder keeps the sweep while it renews the lease, gives it up
when it shuts down (another node takes it at its next pass), and a holder that stops without a word keeps it only
until the lease lapses. On both backends: SQLite and a folder shared by the nodes; PostgreSQL and a bucket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from broker.app import create_app
from broker.clock import ManualClock
from broker.keys import BLOBS, HOUSEKEEPING, METRICS
from broker.settings import Settings
from tests.api.conftest import AiohttpClient
from tests.conftest import BACKENDS, production_settings

NODES = 3
LEFTOVERS = 4
#: Old enough to be taken for a crash leftover: a few seconds here, so the moved clock stays well inside a lease.
GRACE = timedelta(seconds=2)
#: No background pass during the test (the nodes' passes are driven below), and a lease of two intervals.
INTERVAL = timedelta(hours=1)
LEASE = 2 * INTERVAL


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def swept(app: web.Application) -> float:
    value = app[METRICS].registry.get_sample_value("mesh_orphan_blobs_deleted_total", {"reason": "leftover"})
    return value or 0.0


async def leave_leftovers(app: web.Application, clock: ManualClock, round_: int) -> set[str]:
    """Blobs no row points at (a crash between storing bytes and their row), then the clock moved past the grace."""
    keys = {f"20250101/20250101000000000000_LEASE{round_}/{n}.dead" for n in range(LEFTOVERS)}
    for key in keys:
        await app[BLOBS].put(key, _one(b"bytes whose row never came"))
    # The blob store dates blobs by the wall clock: catch the node's clock up with it, then pass the grace.
    clock.set(max(clock.now(), datetime.now(UTC)) + GRACE + timedelta(seconds=1))
    return keys


async def stored(app: web.Application) -> set[str]:
    return {blob.key async for page in app[BLOBS].scan() for blob in page}


async def sweep(apps: list[web.Application]) -> list[int]:
    """Every node's leftover sweep at the same moment; how many blobs each deleted."""
    return list(await asyncio.gather(*(app[HOUSEKEEPING].sweep_leftovers() for app in apps)))


def holder(apps: list[web.Application], done: list[int]) -> web.Application:
    (only,) = [app for app, n in zip(apps, done, strict=True) if n]
    return only


@pytest.fixture(params=BACKENDS)
async def shared(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    shared = settings.with_(orphan_grace=GRACE, housekeeping_interval=INTERVAL, inline_chunk_bytes=0)
    if request.param == "postgres+s3":
        shared = await production_settings(shared, request)
    return shared


async def test_only_the_lease_holder_sweeps_and_the_lease_moves_on_release_or_lapse(
    shared: Settings, aiohttp_client: AiohttpClient
) -> None:
    clock = ManualClock(datetime.now(UTC))
    apps = [create_app(shared, clock=clock) for _ in range(NODES)]
    clients = [await aiohttp_client(app) for app in apps]

    # All at once: one node sweeps every leftover, the others list nothing and delete nothing.
    keys = await leave_leftovers(apps[0], clock, 1)
    done = await sweep(apps)
    assert sorted(done) == [0] * (NODES - 1) + [LEFTOVERS], done
    first = holder(apps, done)
    assert sorted(swept(app) for app in apps) == [0] * (NODES - 1) + [LEFTOVERS], "each leftover counted once"
    assert not keys & await stored(apps[0])

    # A grace period later the holder, which renewed the lease on every pass, sweeps again; the others still skip.
    keys = await leave_leftovers(apps[0], clock, 2)
    done = await sweep(apps)
    assert holder(apps, done) is first and sum(done) == LEFTOVERS, done
    assert not keys & await stored(apps[0])

    # The holder shuts down and gives the lease up: another node takes the sweep at its next pass, long before the
    # lease would have lapsed.
    await clients[apps.index(first)].close()
    rest = [app for app in apps if app is not first]
    keys = await leave_leftovers(rest[0], clock, 3)
    done = await sweep(rest)
    assert sorted(done) == [0, LEFTOVERS], done
    second = holder(rest, done)
    assert not keys & await stored(rest[0])

    # The new holder stops without a word (it is not asked again): the last node is refused the sweep while the
    # lease runs, and takes it over once it has lapsed.
    (last,) = [app for app in rest if app is not second]
    keys = await leave_leftovers(last, clock, 4)
    assert await last[HOUSEKEEPING].sweep_leftovers() == 0
    assert keys <= await stored(last)
    clock.advance(LEASE)
    assert await last[HOUSEKEEPING].sweep_leftovers() == LEFTOVERS
    assert not keys & await stored(last)
    assert sum(swept(app) for app in apps) == 4 * LEFTOVERS, "every leftover counted once across the nodes"
