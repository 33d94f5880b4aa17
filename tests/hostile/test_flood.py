"""A flood of connections from one address, and connections that never finish a request head."""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from tests.hostile.conftest import WAIT_SECONDS, Node
from tests.hostile.wire import Answer, Connection, connect, read_answer

PER_ADDRESS = 200  # MESH_MAX_CONNECTIONS_PER_ADDRESS in the hostile tests
FLOOD = 250


async def answer_or_close(connection: Connection) -> Answer | None:
    """The broker's answer, or None if it closed the connection without one."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        return await read_answer(connection)
    return None


async def test_flood_past_the_address_limit_is_refused_503_and_others_are_served(node: Node) -> None:
    refused = await node.value("mesh_connections_refused_total", limit="address")
    flood = [await connect(node.port, "127.0.0.9") for _ in range(FLOOD)]
    await node.wait_for("mesh_connections_refused_total", lambda v: v == refused + FLOOD - PER_ADDRESS, limit="address")
    assert await node.value("mesh_connections_open") >= PER_ADDRESS

    await node.cycle()  # from 127.0.0.1, another address
    assert await node.value("mesh_connections_open") >= PER_ADDRESS, "the flood was closed before the cycle ended"

    # The connections past the limit were answered at once; those let in, which send nothing, are closed by the
    # header timeout without an answer.
    answers = await asyncio.wait_for(asyncio.gather(*(answer_or_close(c) for c in flood)), WAIT_SECONDS)
    turned_away = [answer for answer in answers if answer is not None]
    assert len(turned_away) == FLOOD - PER_ADDRESS
    for answer in turned_away:
        assert answer.status == 503
        assert answer.headers["connection"] == "close"
        assert int(answer.headers["retry-after"]) >= 1
        assert orjson.loads(answer.body)["errorCode"] == "TooManyConnections"
    for connection in flood:
        connection.close()
    await node.wait_for("mesh_connections_open", lambda v: v == 0)
    await node.assert_no_server_errors()
    node.assert_no_errors_logged()


async def test_a_request_head_never_finished_is_closed_by_the_header_timeout(node: Node) -> None:
    connections = []
    for partial in (
        b"",
        b"GET /messageexchange/_ping HTTP/1.1\r\n",
        b"POST /messageexchange/X26ABC1/outbox HTTP/1.1\r\nHo",
    ):
        connection = await connect(node.port, "127.0.0.10")
        connection.writer.write(partial)
        connections.append(connection)
    await node.wait_for("mesh_connections_open", lambda v: v >= len(connections))
    for connection in connections:
        assert await asyncio.wait_for(connection.reader.read(), WAIT_SECONDS) == b""  # closed, unanswered
        connection.close()
    await node.wait_for("mesh_connections_open", lambda v: v == 0)
    node.assert_no_errors_logged()
