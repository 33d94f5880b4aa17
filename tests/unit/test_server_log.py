"""Bytes that are not HTTP, sent to the node's port: one INFO line (action bad_http_request, the peer, the parser's
reason) and a count, not aiohttp's ERROR with a stack trace; aiohttp's other reports still reach its own log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from broker.app import create_app
from broker.keys import METRICS
from broker.metrics import Metrics
from broker.server_log import ServerLog
from broker.serving import make_runner
from broker.settings import Settings

GARBAGE = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS spoken to a plain-HTTP port\r\n\r\n",
    b"GET /messageexchange/_ping HTTP/1.1\r\nHost: x\r\nno colon in this header\r\n\r\n",
    b"\x00\x01\x02\x03 random bytes \xff\xfe\r\n\r\n",
]


@pytest.fixture
async def node(settings: Settings) -> AsyncIterator[tuple[web.Application, int]]:
    """The node's app behind the runner serve() uses, on a port of 127.0.0.1."""
    app = create_app(settings)
    runner = make_runner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    try:
        yield app, server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()


async def send_raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def counted(metrics: Metrics) -> float:
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == "mesh_bad_http_requests_total"
    )


async def test_bytes_that_are_not_http_are_one_info_line_each_and_counted(
    node: tuple[web.Application, int], caplog: pytest.LogCaptureFixture
) -> None:
    app, port = node
    caplog.set_level(logging.DEBUG)
    for data in GARBAGE:
        assert (await send_raw(port, data)).split(b" ", 2)[1] == b"400"

    lines = [r for r in caplog.records if getattr(r, "action", None) == "bad_http_request"]
    assert len(lines) == len(GARBAGE)
    for line in lines:
        assert (line.levelno, line.exc_info, line.name) == (logging.INFO, None, "broker.http")
        assert line.peer == "127.0.0.1"  # type: ignore[attr-defined]
        assert "\n" not in line.reason  # type: ignore[attr-defined]
    kinds = [line.reason.split(":")[0] for line in lines]  # type: ignore[attr-defined]
    assert kinds == ["BadHttpMethod", "BadHttpMessage", "BadHttpMethod"]
    assert not [r for r in caplog.records if r.name == "aiohttp.server"]
    assert counted(app[METRICS]) == len(GARBAGE)

    # The node still answers HTTP.
    assert (await send_raw(port, b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).startswith(
        b"HTTP/1.1 200 "
    )


def test_other_reports_go_on_to_aiohttps_log_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    server_log = ServerLog(metrics)
    failure = RuntimeError("a bug in a handler")
    with caplog.at_level(logging.ERROR, logger="aiohttp.server"):
        server_log.exception("Unhandled exception", exc_info=failure)
    [record] = caplog.records
    assert (record.name, record.levelno, record.getMessage()) == (
        "aiohttp.server",
        logging.ERROR,
        "Unhandled exception",
    )
    assert record.exc_info is not None and record.exc_info[1] is failure
    assert counted(metrics) == 0
