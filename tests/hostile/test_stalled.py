"""Clients that stall: uploads that send a byte and stop, downloads that read nothing, bodies sent a drip at a time.

Each holds nothing of the node's memory budget while it waits, does not slow a well-behaved client down, and is
ended after the idle timeout (or its time allowance) with everything it held let go; none of it is a server error.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from tests.hostile.conftest import IDLE_SECONDS, MB1, MB2, WAIT_SECONDS, Node
from tests.hostile.wire import Connection, connect, head, read_answer, send_head
from tests.support import Tokens

STALLED = 150
#: Stalled downloads: each holds none of the budget while it waits for its client (one piece, 256 KiB, each did
#: before broker/transfer.py let go of it during the wait: fewer than the 16 MiB budget's worth, so that the test
#: shows the budget itself rather than a well-behaved download starved).
STALLED_DOWNLOADS = 40
BIG = 5 * 1000 * 1000


def error_code(body: bytes) -> str:
    detail = orjson.loads(body)["detail"]
    return str(detail[0]["code"])


async def stall_uploads(node: Node, count: int, mailbox: str, source: str) -> list[Connection]:
    """count sends from mailbox that declare 10 MB and send one byte, all in flight when this returns."""
    tokens = Tokens(mailbox)
    before = await node.value("mesh_http_requests_in_flight")
    stalled = []
    for _ in range(count):
        connection = await connect(node.port, source)
        connection.writer.write(send_head(tokens, MB2, 10 * 1000 * 1000) + b"x")
        stalled.append(connection)
    await node.wait_for("mesh_http_requests_in_flight", lambda v: v >= before + count)
    return stalled


async def test_stalled_uploads_hold_no_budget_and_are_answered_408(node: Node) -> None:
    timed_out = await node.value("mesh_transfers_timed_out_total", direction="upload", reason="idle")
    stalled = await stall_uploads(node, STALLED, MB1, "127.0.0.2")

    # Uploads waiting on their clients hold none of the budget (16 MiB here: 150 x 1 MiB reserved ahead, as
    # before, would exhaust it), so another mailbox's messages go through while they wait.
    assert await node.value("mesh_transfer_memory_in_use_bytes") == 0
    await node.cycle()
    assert await node.value("mesh_http_requests_in_flight") >= STALLED, "the cycle waited for the stalled uploads"

    answers = await asyncio.wait_for(asyncio.gather(*(read_answer(c) for c in stalled)), WAIT_SECONDS)
    assert {answer.status for answer in answers} == {408}
    assert {error_code(answer.body) for answer in answers} == {"RequestTimeout"}
    for connection in stalled:
        connection.close()
    await node.assert_all_let_go()
    now = await node.value("mesh_transfers_timed_out_total", direction="upload", reason="idle")
    assert now == timed_out + STALLED
    await node.assert_no_server_errors()
    node.assert_no_errors_logged()


async def test_transfers_past_the_mailbox_limit_are_refused_429(node: Node) -> None:
    refused = await node.value("mesh_rate_limited_total", limit="transfers")
    stalled = await stall_uploads(node, 160, MB1, "127.0.0.3")  # MESH_MAX_TRANSFERS_PER_MAILBOX

    one_more = await connect(node.port, "127.0.0.4")
    one_more.writer.write(send_head(Tokens(MB1), MB2, 5) + b"hello")
    answer = await read_answer(one_more)
    assert answer.status == 429
    assert error_code(answer.body) == "TooManyTransfers"
    assert int(answer.headers["retry-after"]) >= 1
    await node.cycle(recipient=MB2)  # other mailboxes are not held back by MB1's limit
    assert await node.value("mesh_rate_limited_total", limit="transfers") == refused + 1

    for connection in [*stalled, one_more]:
        connection.abort()
    await node.assert_all_let_go()
    await node.cycle(sender=MB1, recipient=MB2)  # MB1's places are back once its transfers have ended
    await node.assert_no_server_errors()
    node.assert_no_errors_logged()


async def drain_until_closed(connection: Connection) -> int:
    """Read what is left until the broker closes the connection (a reset counts); the bytes read."""
    seen = 0
    with contextlib.suppress(ConnectionError):
        while piece := await connection.reader.read(65536):
            seen += len(piece)
    return seen


async def test_stalled_downloads_are_cut_after_the_idle_timeout(node: Node) -> None:
    message_id = await node.send(MB1, MB2, b"m" * BIG)
    route = "/messageexchange/{mailbox_id}/inbox/{message_id}"
    cut = await node.value("mesh_transfers_timed_out_total", direction="download")
    closed = await node.value("mesh_http_request_duration_seconds_count", route=route, status_class="client_closed")
    before = await node.value("mesh_http_requests_in_flight")
    files = node.open_files()
    tokens = Tokens(MB2)
    stalled = []
    for _ in range(STALLED_DOWNLOADS):
        connection = await connect(node.port, "127.0.0.5", receive_buffer=4096)
        path = f"/messageexchange/{MB2}/inbox/{message_id}"
        connection.writer.write(head("GET", path, tokens, {"Accept-Encoding": "identity"}))
        stalled.append(connection)  # and never read from
    await node.wait_for("mesh_http_requests_in_flight", lambda v: v >= before + STALLED_DOWNLOADS)

    await node.cycle()
    assert await node.value("mesh_http_requests_in_flight") >= before + STALLED_DOWNLOADS, (
        "the cycle waited for the downloads"
    )
    # Each has handed its connection a piece the client does not take, and waits holding none of the budget.
    assert await node.value("mesh_transfer_memory_in_use_bytes") == 0

    # Cut within the idle timeout and a quarter of it more (the watch's period).
    await asyncio.sleep(IDLE_SECONDS)
    await node.wait_for("mesh_transfers_timed_out_total", lambda v: v == cut + STALLED_DOWNLOADS, direction="download")
    for connection in stalled:
        assert await asyncio.wait_for(drain_until_closed(connection), WAIT_SECONDS) < BIG
    await node.assert_all_let_go()
    await node.wait_files_at_most(files + 2)  # the 40 blob files the downloads read are closed too
    now = await node.value("mesh_http_request_duration_seconds_count", route=route, status_class="client_closed")
    assert now == closed + STALLED_DOWNLOADS
    await node.assert_no_server_errors()
    node.assert_no_errors_logged()


async def test_slow_drip_upload_is_answered_408_after_its_allowance(node: Node) -> None:
    """A byte every half second never trips the idle timeout, but the body has only the floor (3 s) plus 20 s a MB
    to arrive in: 3.2 s for 10 kB."""
    timed_out = await node.value("mesh_transfers_timed_out_total", direction="upload", reason="total")
    connection = await connect(node.port, "127.0.0.6")
    connection.writer.write(send_head(Tokens(MB1), MB2, 10_000))
    answer = asyncio.ensure_future(read_answer(connection))
    for _ in range(int(WAIT_SECONDS / 0.5)):
        if answer.done():
            break
        connection.writer.write(b"d")
        await asyncio.wait([answer], timeout=0.5)
    got = await answer
    assert got.status == 408
    assert "took longer than the 3.2 seconds allowed" in orjson.loads(got.body)["detail"][0]["msg"]
    connection.close()
    assert await node.value("mesh_transfers_timed_out_total", direction="upload", reason="total") == timed_out + 1
    await node.assert_all_let_go()
    await node.assert_no_server_errors()
    node.assert_no_errors_logged()
