"""The per-mailbox rate limit: 429 with Retry-After in the MESH error shape, which the official client waits out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import orjson
import pytest
from mesh_client import MeshClient

from tests.hostile.conftest import MB2, MB3, V2, Node, start_node
from tests.integration.broker_process import SHARED_KEY
from tests.support import Tokens


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """2 requests a second per mailbox, 3 at once after a quiet spell."""
    env = {"MESH_RATE_LIMIT_PER_SECOND": "2", "MESH_RATE_LIMIT_BURST": "3"}
    yield from start_node(tmp_path_factory.mktemp("rate"), **env)


async def test_past_the_burst_a_mailbox_is_answered_429_with_retry_after(limited: Node) -> None:
    tokens = Tokens(MB3)
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(6):
            headers = {"Authorization": tokens(), "Accept": V2}
            async with session.get(f"{limited.base}/{MB3}/count", headers=headers) as response:
                statuses.append(response.status)
                if response.status == 429:
                    refusal = (dict(response.headers), await response.read())
    assert statuses[:3] == [200, 200, 200]
    assert 429 in statuses
    headers, body = refusal
    assert int(headers["Retry-After"]) >= 1
    assert orjson.loads(body)["detail"][0]["code"] == "TooManyRequests"
    assert await limited.value("mesh_rate_limited_total", limit="requests") >= 1
    assert await limited.value("mesh_errors_total", status="429") >= 1
    await limited.assert_no_server_errors()


def test_mesh_client_waits_out_429_and_succeeds(limited: Node) -> None:
    """mesh-client retries 429 (urllib3's Retry honours Retry-After) for every request but a message's first
    POST: ten inbox reads in a row, past the burst, all succeed."""
    before = asyncio.run(limited.value("mesh_rate_limited_total", limit="requests"))
    with MeshClient(limited.process.url, MB2, "password", shared_key=SHARED_KEY.encode(), max_retries=3) as client:
        for _ in range(10):
            assert client.list_messages() == []
    assert asyncio.run(limited.value("mesh_rate_limited_total", limit="requests")) > before
