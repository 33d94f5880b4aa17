"""Clients that vanish mid-transfer: logged once at INFO as client_closed, counted in their own status class, never
a 5xx or a stack trace, and nothing they held or half-sent is kept."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.hostile.conftest import MB1, MB2, WAIT_SECONDS, Node
from tests.hostile.wire import connect, head, send_head
from tests.support import Tokens

OUTBOX = "/messageexchange/{mailbox_id}/outbox"
DOWNLOAD = "/messageexchange/{mailbox_id}/inbox/{message_id}"


def blob_files(node: Node) -> set[Path]:
    return {path for path in (node.process.data_dir / "blobs").rglob("*") if path.is_file()}


def client_closed_entries(node: Node, route: str) -> list[dict[str, object]]:
    return [entry for entry in node.log() if entry.get("action") == "client_closed" and entry.get("route") == route]


async def test_client_vanishing_mid_upload(node: Node) -> None:
    closed = await node.value("mesh_http_request_duration_seconds_count", route=OUTBOX, status_class="client_closed")
    logged = len(client_closed_entries(node, OUTBOX))
    blobs = blob_files(node)
    connection = await connect(node.port, "127.0.0.7")
    # Past the inline limit and the file store's first write: a blob file exists when the client goes.
    connection.writer.write(send_head(Tokens(MB1), MB2, 4_000_000) + b"u" * 2_000_000)
    await connection.writer.drain()
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while blob_files(node) == blobs:
        assert asyncio.get_running_loop().time() < deadline, "no blob file was started"
        await asyncio.sleep(0.02)
    connection.abort()

    await node.wait_for(
        "mesh_http_request_duration_seconds_count",
        lambda v: v == closed + 1,
        route=OUTBOX,
        status_class="client_closed",
    )
    entries = client_closed_entries(node, OUTBOX)
    assert len(entries) == logged + 1
    entry = entries[-1]
    assert entry["level"] == "info"
    assert entry["method"] == "POST"
    assert isinstance(entry["bytes_received"], int) and entry["bytes_received"] > 0
    await node.assert_all_let_go()
    assert blob_files(node) == blobs  # the half-written blob is gone
    await node.assert_no_server_errors()
    node.assert_no_errors_logged()


async def test_client_vanishing_mid_download(node: Node) -> None:
    message_id = await node.send(MB1, MB2, b"m" * 5_000_000)
    closed = await node.value("mesh_http_request_duration_seconds_count", route=DOWNLOAD, status_class="client_closed")
    logged = len(client_closed_entries(node, DOWNLOAD))
    connection = await connect(node.port, "127.0.0.7")
    path = f"/messageexchange/{MB2}/inbox/{message_id}"
    connection.writer.write(head("GET", path, Tokens(MB2), {"Accept-Encoding": "identity"}))
    assert await asyncio.wait_for(connection.reader.readexactly(100_000), WAIT_SECONDS)
    connection.abort()

    await node.wait_for(
        "mesh_http_request_duration_seconds_count",
        lambda v: v == closed + 1,
        route=DOWNLOAD,
        status_class="client_closed",
    )
    entries = client_closed_entries(node, DOWNLOAD)
    assert len(entries) == logged + 1
    assert entries[-1]["method"] == "GET"
    bytes_sent = entries[-1]["bytes_sent"]
    assert isinstance(bytes_sent, int) and bytes_sent > 100_000
    await node.assert_all_let_go()
    await node.cycle(recipient=MB2)
    await node.assert_no_server_errors()
    node.assert_no_errors_logged()


async def test_downloads_whose_clients_vanish_close_their_files_at_once(node: Node) -> None:
    """Downloads held a while (long enough for their objects to be old, as a garbage collection sees them), then
    abandoned by their clients: the blob files they were reading are closed straight away, not left open until a
    full garbage collection happens to run."""
    message_id = await node.send(MB1, MB2, b"m" * 5_000_000)
    files = node.open_files()
    before = await node.value("mesh_http_requests_in_flight")
    tokens = Tokens(MB2)
    held = []
    for _ in range(20):
        connection = await connect(node.port, "127.0.0.8", receive_buffer=4096)
        connection.writer.write(head("GET", f"/messageexchange/{MB2}/inbox/{message_id}", tokens))
        held.append(connection)
    await node.wait_for("mesh_http_requests_in_flight", lambda v: v >= before + 20)
    for _ in range(3):
        await node.cycle(recipient=MB2)  # other work meanwhile
    for connection in held:
        connection.abort()
    await node.assert_all_let_go()
    await node.wait_files_at_most(files + 2)
    await node.assert_no_server_errors()
    node.assert_no_errors_logged()
