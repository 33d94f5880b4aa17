"""/metrics: Prometheus text, no MESH auth, latency by route template, message and error counters; on the metrics port,
and on the MESH port only when asked for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from broker.app import create_app
from broker.keys import HOUSEKEEPING, METRICS, SETTINGS
from broker.settings import Settings
from tests.api.helpers import MB1, MB2, send_chunk, start_chunked
from tests.integration.broker_process import free_port
from tests.support import Mesh


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The tier's settings with /metrics on the MESH port too (MESH_METRICS_ON_MESH_PORT), so the test client
    scrapes it."""
    return settings.with_(metrics_on_mesh_port=True)


async def samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    return parse(await response.text())


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_a_message_cycle_is_counted(client: TestClient, mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"counted")
    download = await client.get(f"{mb2.base}/inbox/{message_id}", headers=mb2.headers({"Accept-Encoding": "identity"}))
    assert await download.read() == b"counted"
    ack = await client.put(f"{mb2.base}/inbox/{message_id}/status/acknowledged", headers=mb2.headers())
    assert ack.status == 200

    found = await samples(client)
    assert value(found, "mesh_messages_sent_total", workflow="TEST_WORKFLOW") == 1
    assert value(found, "mesh_messages_delivered_total", workflow="TEST_WORKFLOW") == 1
    assert value(found, "mesh_messages_acknowledged_total", workflow="TEST_WORKFLOW") == 1
    assert value(found, "mesh_bytes_received_total") == len(b"counted")
    assert value(found, "mesh_bytes_sent_total") == len(b"counted")
    send_route = {"route": "/messageexchange/{mailbox_id}/outbox", "method": "POST", "status_class": "2xx"}
    assert value(found, "mesh_http_request_duration_seconds_count", **send_route) == 1
    assert value(found, "mesh_chunk_upload_duration_seconds_count") == 1
    assert value(found, "mesh_chunk_download_duration_seconds_count") == 1
    assert [v for (name, _labels), v in found.items() if name == "mesh_build_info"] == [1.0]


async def test_only_chunks_whose_rows_are_stored_are_counted(client: TestClient, mb1: Mesh, mb3: Mesh) -> None:
    """A small chunk is stored before add_chunk decides; one it refuses (a stranger's, one after the last) is not
    a chunk accepted."""
    message_id = await start_chunked(mb1, MB2, b"first", 2)
    assert (await send_chunk(mb3, message_id, 2, 2, b"stranger's")).status == 403
    assert (await send_chunk(mb1, message_id, 2, 2, b"second")).status == 202
    assert (await send_chunk(mb1, message_id, 2, 2, b"too late")).status == 423

    found = await samples(client)
    assert value(found, "mesh_chunks_stored_total", store="inline") == 2
    assert value(found, "mesh_bytes_received_total") == len(b"first") + len(b"second")


async def test_errors_and_auth_failures_are_counted_by_code(client: TestClient, mb1: Mesh) -> None:
    assert (await mb1.send("NOBODY", b"x")).status == 417
    response = await client.get(f"/messageexchange/{MB1}/inbox", headers={"Authorization": f"NHSMESH {MB1}:x"})
    assert response.status == 403

    found = await samples(client)
    assert value(found, "mesh_errors_total", status="417", code="12") == 1
    assert value(found, "mesh_auth_failures_total", reason="header_unreadable") == 1


async def test_rejected_sends_are_counted_by_workflow_and_code(client: TestClient, mb1: Mesh) -> None:
    await mb1.send_ok(MB2, b"accepted first, so TEST_WORKFLOW is a known label")
    assert (await mb1.send("NOBODY", b"x")).status == 417
    assert (await mb1.send("NOBODY", b"x", workflow_id="NEVER_ACCEPTED_1")).status == 417
    assert (await mb1.send("NOBODY", b"x", workflow_id="NEVER_ACCEPTED_2")).status == 417
    missing_recipient = await client.post(
        f"{mb1.base}/outbox", data=b"x", headers=mb1.headers({"mex-WorkflowID": "TEST_WORKFLOW"})
    )
    assert missing_recipient.status == 400

    found = await samples(client)
    rejected = {
        tuple(sorted(dict(labels).items())): v
        for (name, labels), v in found.items()
        if name == "mesh_messages_rejected_total"
    }
    # Workflows never seen on an accepted message fold into "other", so refused junk takes no label places.
    assert rejected == {
        (("code", "12"), ("workflow", "TEST_WORKFLOW")): 1,
        (("code", "validation"), ("workflow", "TEST_WORKFLOW")): 1,
        (("code", "12"), ("workflow", "other")): 2,
    }
    assert value(found, "mesh_messages_sent_total", workflow="TEST_WORKFLOW") == 1


async def test_raw_paths_never_become_labels(client: TestClient, mb2: Mesh) -> None:
    for unknown in ("20260101000000000000_AAAAAA", "20260101000000000000_BBBBBB"):
        await client.get(f"{mb2.base}/inbox/{unknown}", headers=mb2.headers())
    routes = {dict(labels).get("route") for (name, labels) in await samples(client) if name.startswith("mesh_http")}
    assert "/messageexchange/{mailbox_id}/inbox/{message_id}" in routes
    assert not any(route and "AAAAAA" in route for route in routes)


async def test_blob_operations_inbox_depth_are_exported(client: TestClient, mb1: Mesh) -> None:
    await mb1.send_ok(MB2, b"small, kept inline")
    await mb1.send_ok(MB2, b"x" * (Settings().inline_chunk_bytes + 1))
    app = client.app
    assert app is not None
    await app[HOUSEKEEPING].sample(app[METRICS])

    found = await samples(client)
    assert value(found, "mesh_inbox_messages") == 2
    puts = [v for (name, labels), v in found.items() if name == "mesh_blob_operation_duration_seconds_count"]
    assert sum(puts) == 1  # only the large one went to the blob store
    assert value(found, "mesh_chunks_stored_total", store="inline") == 1
    assert value(found, "mesh_chunks_stored_total", store="blob") == 1
    assert value(found, "mesh_store_bytes", part="database") > 0
    # A PostgreSQL node says whether it hears directory changes; the embedded store has nothing to hear.
    listening = [v for (name, labels), v in found.items() if name == "mesh_directory_cache_listening"]
    assert listening == ([1.0] if app[SETTINGS].database_url.startswith("postgres") else [])


async def test_workflow_labels_beyond_the_configured_number_fold_into_other(
    aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings.with_(metrics_workflow_labels=2)))
    sender = Mesh(client, MB1)
    for workflow in ("WF_A", "WF_B", "WF_C", "WF_D", "WF_A"):
        await sender.send_ok(MB2, b"x", workflow_id=workflow)
    found = await samples(client)
    sent = {dict(labels)["workflow"]: v for (name, labels), v in found.items() if name == "mesh_messages_sent_total"}
    assert sent == {"WF_A": 2, "WF_B": 1, "other": 2}


async def test_metrics_on_their_own_port(
    aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings
) -> None:
    """With MESH_METRICS_PORT, Prometheus scrapes plain HTTP there (a node whose MESH port wants a mailbox's client
    certificate stays scrapable), and the MESH port no longer answers /metrics."""
    port = free_port()
    client = await aiohttp_client(create_app(settings.with_(metrics_port=port, metrics_on_mesh_port=False)))
    await Mesh(client, MB1).send_ok(MB2, b"counted on the other port")
    assert (await client.get("/metrics")).status == 404
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            found = parse(await response.text())
        assert value(found, "mesh_messages_sent_total", workflow="TEST_WORKFLOW") == 1
        # The probes are there too, for a kubelet that cannot present a mailbox's client certificate.
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert (response.status, (await response.json())["status"]) == (200, "ready")
        async with session.get(f"http://127.0.0.1:{port}/livez") as response:
            assert response.status == 200
        async with session.get(f"http://127.0.0.1:{port}/messageexchange/_ping") as response:
            assert response.status == 404  # the metrics port serves nothing else


async def test_not_on_the_mesh_port_unless_asked_for(
    aiohttp_client: Callable[..., Awaitable[TestClient]], tmp_path: Path
) -> None:
    """Unauthenticated, it would tell anyone who asks which workflows flow and how much: off by default."""
    client = await aiohttp_client(create_app(Settings(data_dir=tmp_path / "data", shared_key="TestKey", demo=True)))
    assert (await client.get("/metrics")).status == 404
    assert (await client.get("/messageexchange/_ping")).status == 200
