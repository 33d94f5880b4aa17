"""A client gone mid-request is not a server error: counted as status class client_closed and logged once at INFO,
while the same exception with the client still there stays a 500."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from broker import middlewares
from broker.ids import RequestIds
from broker.keys import METRICS, REQUEST_IDS
from broker.metrics import Metrics


def request(*, client_there: bool) -> web.Request:
    app = web.Application()
    app[METRICS] = Metrics()
    app[REQUEST_IDS] = RequestIds()
    req = make_mocked_request("POST", "/messageexchange/X26ABC1/outbox", app=app)
    if client_there:
        req.protocol.transport.is_closing.return_value = False
    else:
        req.protocol.transport = None
    return req


def classes(req: web.Request) -> dict[str, float]:
    return {
        sample.labels["status_class"]: sample.value
        for family in req.app[METRICS].registry.collect()
        for sample in family.samples
        if sample.name == "mesh_http_request_duration_seconds_count"
    }


async def through_both(req: web.Request, exc: BaseException) -> web.StreamResponse:
    """Through observe, which counts the request and renders its errors."""

    async def handler(_request: web.Request) -> web.StreamResponse:
        raise exc

    return await middlewares.observe(req, handler)


@pytest.mark.parametrize("gone", [ConnectionResetError("Connection lost"), ConnectionError("Connection lost")])
async def test_a_client_gone_mid_request_is_client_closed_and_logged_once(
    gone: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    req = request(client_there=False)
    with caplog.at_level(logging.INFO, logger="broker.http"):
        await through_both(req, gone)
    assert classes(req) == {"client_closed": 1.0}
    [entry] = [r for r in caplog.records if getattr(r, "action", None) == "client_closed"]
    assert entry.levelno == logging.INFO
    assert entry.exc_info is None  # no stack trace
    assert entry.route and entry.method == "POST"  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_same_error_with_the_client_there_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    req = request(client_there=True)
    response = await through_both(req, ConnectionResetError("the database went away"))
    assert response.status == 500
    assert classes(req) == {"5xx": 1.0}
    assert [r for r in caplog.records if getattr(r, "action", None) == "request_failed"]


async def test_a_handler_cancelled_because_its_client_left_is_client_closed() -> None:
    req = request(client_there=False)
    with pytest.raises(asyncio.CancelledError):
        await through_both(req, asyncio.CancelledError())
    assert classes(req) == {"client_closed": 1.0}


async def test_a_handler_cancelled_with_its_client_there_stays_5xx() -> None:
    req = request(client_there=True)  # cancelled by the broker itself (the end of a shutdown's grace)
    with pytest.raises(asyncio.CancelledError):
        await through_both(req, asyncio.CancelledError())
    assert classes(req) == {"5xx": 1.0}
