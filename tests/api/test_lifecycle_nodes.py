"""Two broker nodes on one PostgreSQL database and one bucket run housekeeping at the same moment: every
expired message gets exactly one non-delivery report, and the losing node leaves no report bytes behind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from broker.app import create_app
from broker.clock import ManualClock
from broker.keys import BLOBS, METRICS, REPORTS, SETTINGS, STORE
from broker.services.housekeeping import Housekeeping
from broker.settings import Settings
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB1, MB2, inbox_ids
from tests.conftest import production_settings
from tests.support import Mesh

MESSAGES = 40
#: Small batches, so the nodes' claims interleave over several transactions each.
BATCH = 7


def node_housekeeping(app: web.Application, clock: ManualClock) -> Housekeeping:
    settings = app[SETTINGS]
    return Housekeeping(
        app[STORE],
        app[BLOBS],
        app[REPORTS],
        metrics=app[METRICS],
        retention=settings.retention,
        upload_timeout=settings.upload_timeout,
        # Blob stores date objects by the wall clock, which this test leaves 5 days behind the moved clock: with
        # the default grace a node's leftover sweep would take any blob stored but not yet committed for a crash
        # leftover. In production both clocks agree and the grace covers in-flight work.
        orphan_grace=timedelta(days=10),
        clock=clock,
        batch=BATCH,
    )


async def all_blob_keys(app: web.Application) -> set[str]:
    return {blob.key async for page in app[BLOBS].scan() for blob in page}


@pytest.mark.parametrize("rounds", [1, 2])
async def test_two_nodes_send_exactly_one_report_per_expired_message(
    request: pytest.FixtureRequest, settings: Settings, aiohttp_client: AiohttpClient, rounds: int
) -> None:
    # The originals go to the blob store, so the check below can tell their blobs from anything else.
    shared = await production_settings(settings.with_(inline_chunk_bytes=0), request)
    clock = ManualClock(datetime.now(UTC))
    apps = [create_app(shared, clock=clock) for _ in range(2)]
    clients = [await aiohttp_client(app) for app in apps]
    sender = Mesh(clients[0], MB1, clock=clock)
    originals = set()
    for n in range(MESSAGES):
        # Alternate nodes, as a load balancer would.
        originals.add(await Mesh(clients[n % 2], MB1, clock=clock).send_ok(MB2, b"unread"))

    clock.advance(timedelta(days=5, seconds=1))
    nodes = [node_housekeeping(app, clock) for app in apps]
    for _ in range(rounds):
        await asyncio.gather(*(node.run_once() for node in nodes))

    reports = await inbox_ids(sender, "?max_results=5000")
    assert len(reports) == MESSAGES
    linked = []
    for report_id in reports:
        report = await apps[0][STORE].get_message(report_id)
        assert report is not None
        linked.append(report.linked_message_id)
    assert sorted(linked) == sorted(originals)
    for original in originals:
        message = await apps[1][STORE].get_message(original)
        assert message is not None
        assert [e.status.value for e in message.events] == ["accepted", "undeliverable"]

    expired = [
        app[METRICS].registry.get_sample_value(
            "mesh_messages_expired_total", {"workflow": "TEST_WORKFLOW", "reason": "expired"}
        )
        or 0.0
        for app in apps
    ]
    assert sum(expired) == MESSAGES

    # The stored blobs are exactly the originals' chunks: a report is only rows (its empty body inline in its
    # chunk row), so the claims a node lost left nothing behind in the blob store.
    chunk_keys = set()
    for message_id in originals:
        _, chunk = await apps[0][STORE].get_message_and_chunk(message_id, 1)
        assert chunk is not None and chunk.blob_key
        chunk_keys.add(chunk.blob_key)
    for message_id in reports:
        _, chunk = await apps[0][STORE].get_message_and_chunk(message_id, 1)
        assert chunk is not None and (chunk.blob_key, chunk.data) == ("", b"")
    assert await all_blob_keys(apps[0]) == chunk_keys
