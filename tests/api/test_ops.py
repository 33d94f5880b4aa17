"""E16 update, E17 pings and health routes, unknown routes."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from tests.api.helpers import body_of
from tests.support import Mesh

PING = {"env": "local", "build_label": "latest", "status": "running", "outcome": "Yes"}


@pytest.mark.parametrize(
    "path", ["/messageexchange/_ping", "/messageexchange/deepping", "/_ping", "/_status", "/health", "/healthcheck"]
)
async def test_ping_routes_need_no_auth(client: TestClient, path: str) -> None:
    response = await client.get(path)
    assert response.status == 200
    assert await body_of(response) == PING


async def test_update_is_empty_200(mb1: Mesh) -> None:
    response = await mb1.client.post(f"{mb1.base}/update", headers=mb1.headers())
    assert response.status == 200
    assert await response.read() == b""


@pytest.mark.parametrize("path", ["/nothing", "/messageexchange/X26ABC1/nothing", "/messageexchange/message/ABC"])
async def test_unknown_route_is_json_404(client: TestClient, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert response.content_type == "application/json"
    assert await body_of(response) == {"detail": "Not Found"}


async def test_wrong_method_is_json_405(client: TestClient) -> None:
    response = await client.delete("/messageexchange/_ping")
    assert response.status == 405
    assert await body_of(response) == {"detail": "Method Not Allowed"}
    assert "GET" in response.headers["Allow"]
