"""Singletons across nodes: three broker nodes on one PostgreSQL database and one bucket run each kind of
housekeeping at the same moment, and every piece of work is done once. Expiry (undeliverable plus one
non-delivery report), abandoned uploads, the retention purge and the deletion of released blobs are claimed row
by row (FOR UPDATE SKIP LOCKED in broker/store/sql/postgres.sql), so no advisory lock is needed: the counts below
add up across the nodes to exactly the work there was. The leftover-blob sweep, which lists the whole bucket and so
cannot be claimed row by row, runs only on the node holding its lease (tests/api/test_housekeeping_lease.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from broker.app import create_app
from broker.blobs.protocol import BlobStore
from broker.clock import ManualClock
from broker.keys import BLOBS, METRICS, REPORTS, SETTINGS, STORE
from broker.models import Status
from broker.services.housekeeping import Housekeeping
from broker.settings import Settings
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB1, MB2, inbox_ids, start_chunked
from tests.conftest import production_settings
from tests.support import Mesh

NODES = 3
MESSAGES = 30
UPLOADS = 6
#: Small batches, so the nodes' claims interleave over several transactions each.
BATCH = 4


class CountingBlobs:
    """A node's blob store that tallies, in a counter all nodes share, every delete of each key."""

    def __init__(self, inner: BlobStore, deletes: Counter[str]):
        self._inner = inner
        self._deletes = deletes

    async def delete(self, key: str) -> None:
        self._deletes[key] += 1
        await self._inner.delete(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def housekeeping(app: web.Application, clock: ManualClock, deletes: Counter[str]) -> Housekeeping:
    settings = app[SETTINGS]
    return Housekeeping(
        app[STORE],
        CountingBlobs(app[BLOBS], deletes),  # type: ignore[arg-type]
        app[REPORTS],
        metrics=app[METRICS],
        retention=settings.retention,
        upload_timeout=settings.upload_timeout,
        # The blob store dates objects by the wall clock, which the moved clock leaves behind: the leftover sweep
        # is kept out of this test. It is one node's by a lease, not by row claims: tests/api/test_housekeeping_lease.py
        orphan_grace=timedelta(days=365),
        clock=clock,
        batch=BATCH,
    )


def total(apps: list[web.Application], name: str, labels: dict[str, str] | None = None) -> float:
    return sum(app[METRICS].registry.get_sample_value(name, labels or {}) or 0.0 for app in apps)


async def each(nodes: list[Housekeeping], work: str) -> list[int]:
    """The same kind of work on every node at once; how many pieces each node did."""
    return list(await asyncio.gather(*(getattr(node, work)() for node in nodes)))


async def test_three_nodes_do_each_piece_of_housekeeping_once(
    request: pytest.FixtureRequest, settings: Settings, aiohttp_client: AiohttpClient
) -> None:
    # Every original's bytes go to the bucket, so the purge leaves released blobs for the nodes to delete.
    shared = await production_settings(settings.with_(inline_chunk_bytes=0), request)
    clock = ManualClock(datetime.now(UTC))
    apps = [create_app(shared, clock=clock) for _ in range(NODES)]
    clients = [await aiohttp_client(app) for app in apps]
    originals = [
        await Mesh(clients[n % NODES], MB1, clock=clock).send_ok(MB2, b"never read %d" % n) for n in range(MESSAGES)
    ]
    uploads = [
        await start_chunked(Mesh(clients[n % NODES], MB1, clock=clock), MB2, b"first of two", 2) for n in range(UPLOADS)
    ]
    deletes: Counter[str] = Counter()
    nodes = [housekeeping(app, clock, deletes) for app in apps]
    store = apps[0][STORE]

    # Past the inbox expiry and the upload timeout: one report per unread message, one error per upload.
    clock.advance(shared.inbox_expiry + timedelta(seconds=1))
    assert sum(await each(nodes, "expire_messages")) == MESSAGES
    assert sum(await each(nodes, "abandon_uploads")) == UPLOADS
    reports = await inbox_ids(Mesh(clients[0], MB1, clock=clock), "?max_results=5000")
    assert len(reports) == MESSAGES
    linked = Counter()
    for report_id in reports:
        report = await store.get_message(report_id)
        assert report is not None
        linked[report.linked_message_id] += 1
    assert linked == Counter(originals), "one report for each original, none twice"
    for message_id in originals:
        message = await store.get_message(message_id)
        assert message is not None
        assert [event.status for event in message.events].count(Status.UNDELIVERABLE) == 1
    for message_id in uploads:
        message = await store.get_message(message_id)
        assert message is not None and message.status is Status.ERROR
    assert total(apps, "mesh_uploads_abandoned_total") == UPLOADS

    # Past the retention: every message purged once, then every blob it released deleted once.
    blob_keys = {blob.key async for page in apps[0][BLOBS].scan() for blob in page}
    assert len(blob_keys) >= MESSAGES, "the originals' chunks are in the bucket"
    clock.advance(shared.retention + timedelta(seconds=1))
    purged = await each(nodes, "purge_messages")
    assert sum(purged) == MESSAGES * 2 + UPLOADS, f"originals, their reports and the uploads, split {purged}"
    assert total(apps, "mesh_messages_purged_total") == MESSAGES * 2 + UPLOADS
    assert sum(await each(nodes, "collect_orphans")) == len(blob_keys)
    assert set(deletes) == blob_keys
    assert set(deletes.values()) == {1}, "no blob deleted by two nodes"
    assert [blob async for page in apps[0][BLOBS].scan() for blob in page] == []

    # Nothing is left for anyone: a further full pass on every node at once does no work and fails nowhere.
    await asyncio.gather(*(node.run_once() for node in nodes))
    assert total(apps, "mesh_messages_purged_total") == MESSAGES * 2 + UPLOADS
    assert total(apps, "mesh_housekeeping_runs_total", {"outcome": "success"}) == NODES
