"""A node's limits through the API: the per-mailbox rate limit and transfer limit (429, the token left unspent),
the body idle timeout (408), and an upload waiting on its client holding none of the memory budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.admission import Admission
from broker.app import create_app
from broker.keys import ADMISSION, BUDGET, METRICS
from broker.settings import Settings
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB1, MB2, MB3
from tests.support import V1, V2, Mesh

SEND_HEADERS = {"mex-To": MB2, "mex-WorkflowID": "TEST_WORKFLOW", "Content-Type": "application/octet-stream"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_(body_idle_timeout_seconds=0.5, max_transfers_per_mailbox=1)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_past_its_burst_a_mailbox_is_429_and_the_refused_token_stays_unspent(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    app = create_app(settings)
    time = FakeTime()
    app[ADMISSION] = Admission(app[METRICS], rate_per_second=1, burst=2, max_transfers=0, clock=time)
    client = await aiohttp_client(app)
    mb1, mb1_v1 = Mesh(client, MB1, accept=V2), Mesh(client, MB1, accept=V1)
    for _ in range(2):
        assert (await client.get(f"{mb1.base}/count", headers=mb1.headers())).status == 200

    refused_headers = mb1.headers()
    refused = await client.get(f"{mb1.base}/count", headers=refused_headers)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    assert (await refused.json())["detail"][0]["code"] == "TooManyRequests"
    v1 = await client.get(f"{mb1_v1.base}/count", headers=mb1_v1.headers())
    assert v1.status == 429
    assert (await v1.json())["errorCode"] == "TooManyRequests"
    other = Mesh(client, MB3, accept=V2)  # every mailbox has a bucket of its own
    assert (await client.get(f"{other.base}/count", headers=other.headers())).status == 200

    time.now += 1.0
    # The same request again, token and all, as mesh-client's retry sends it: not a replay, since it was refused
    # before the token was spent.
    again = await client.get(f"{mb1.base}/count", headers=refused_headers)
    assert again.status == 200
    time.now += 1.0
    replayed = await client.get(f"{mb1.base}/count", headers=refused_headers)
    assert replayed.status == 403  # now it is spent
    assert app[METRICS].rate_limited.labels("requests")._value.get() == 2


async def waiting_body(first: bytes, release: asyncio.Event, rest: bytes = b"") -> AsyncIterator[bytes]:
    yield first
    await release.wait()
    if rest:
        yield rest


async def wait_in_flight(app: web.Application, count: int) -> None:
    for _ in range(500):
        if app[METRICS].requests_in_flight._value.get() >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the request never arrived")


async def test_an_upload_waiting_on_its_client_holds_no_budget(client: TestClient, app: web.Application) -> None:
    mb1 = Mesh(client, MB1)
    release = asyncio.Event()
    body = waiting_body(b"a" * 300_000, release, b"b" * 300_000)  # past the inline limit: into the blob store
    budget = app[BUDGET]
    reserved: list[int] = []
    reserve = budget.reserve

    def spy(nbytes: int) -> AbstractAsyncContextManager[None]:
        reserved.append(nbytes)
        return reserve(nbytes)

    budget.reserve = spy  # type: ignore[method-assign]
    sending = asyncio.ensure_future(client.post(f"{mb1.base}/outbox", data=body, headers=mb1.headers(SEND_HEADERS)))
    for _ in range(200):  # until the broker has had the first piece
        if reserved:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)  # it waits for the next (the idle timeout is 0.5 s)
    assert reserved
    assert budget.available == budget.total

    release.set()
    response = await sending
    assert response.status == 202
    assert budget.available == budget.total


async def test_an_upload_that_stops_sending_is_408_and_lets_go(client: TestClient, app: web.Application) -> None:
    mb1 = Mesh(client, MB1)
    release = asyncio.Event()
    body = waiting_body(b"a" * 100_000, release)
    try:
        # Ended by the idle timeout (0.5 s), long before the floor of the time allowance (60 s).
        posting = client.post(f"{mb1.base}/outbox", data=body, headers=mb1.headers(SEND_HEADERS))
        response = await asyncio.wait_for(posting, 20)
    finally:
        release.set()
    assert response.status == 408
    detail = (await response.json())["detail"][0]
    assert detail["code"] == "RequestTimeout"
    assert "0.5 seconds" in detail["msg"]
    assert app[BUDGET].available == app[BUDGET].total
    assert app[METRICS].transfers_cut.labels("upload", "idle")._value.get() == 1
    # Counted with the clients that went away, out of the latency KPIs (grafana/): the wait was the client's.
    counted = {
        sample.labels["status_class"]: sample.value
        for metric in app[METRICS].request_duration.collect()
        for sample in metric.samples
        if sample.name.endswith("_count") and sample.labels["route"].endswith("/outbox")
    }
    assert counted == {"client_closed": 1.0}


async def test_a_second_transfer_of_a_mailbox_past_its_limit_is_429(client: TestClient, app: web.Application) -> None:
    mb1, mb3 = Mesh(client, MB1), Mesh(client, MB3)
    release = asyncio.Event()
    first = asyncio.ensure_future(
        client.post(f"{mb1.base}/outbox", data=waiting_body(b"a", release, b"b"), headers=mb1.headers(SEND_HEADERS))
    )
    await wait_in_flight(app, 1)

    refused_headers = mb1.headers(SEND_HEADERS)
    refused = await client.post(f"{mb1.base}/outbox", data=b"second", headers=refused_headers)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    assert (await refused.json())["detail"][0]["code"] == "TooManyTransfers"
    assert (await mb3.send(MB2, b"another mailbox")).status == 202
    assert (await client.get(f"{mb1.base}/count", headers=mb1.headers())).status == 200  # not a transfer

    release.set()
    assert (await first).status == 202
    again = await client.post(f"{mb1.base}/outbox", data=b"second", headers=refused_headers)  # same token
    assert again.status == 202
    assert app[METRICS].rate_limited.labels("transfers")._value.get() == 1
