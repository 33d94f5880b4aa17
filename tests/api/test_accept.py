"""Content negotiation (mesh-api.md section 1.2): the Accept header picks v1 or v2."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from tests.api.helpers import MB1, body_of, v1_error
from tests.support import CLIENT_HEADERS, Tokens


async def handshake(client: TestClient, accept: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": Tokens(MB1)(), **CLIENT_HEADERS}
    if accept is not None:
        headers["Accept"] = accept
    response = await client.get(f"/messageexchange/{MB1}", headers=headers)
    return response.status, await response.read()


V1_BODY = b'{"mailboxId":"X26ABC1"}'


@pytest.mark.parametrize(
    "accept",
    [None, "", "application/json", "*/*", "application/vnd.mesh.v1+json", "application/json, */*;q=0.8"],
)
async def test_v1_accept_values(client: TestClient, accept: str | None) -> None:
    assert await handshake(client, accept) == (200, V1_BODY)


@pytest.mark.parametrize(
    "accept",
    [
        "application/vnd.mesh.v2+json",
        "application/vnd.mesh.v2+json, */*",
        "application/json, application/vnd.mesh.v2+json;q=0.9",
        "APPLICATION/VND.MESH.V2+JSON",
        "application/vnd.mesh.v3+json",
        "application/vnd.mesh.v10+json",
    ],
)
async def test_v2_accept_values(client: TestClient, accept: str) -> None:
    assert await handshake(client, accept) == (200, b"")


@pytest.mark.parametrize(
    "accept", ["application/vnd.mesh.bogus", "application/vnd.mesh.v2+xml", "application/vnd.mesh.vx+json"]
)
async def test_bad_mesh_accept_is_400(client: TestClient, accept: str) -> None:
    response = await client.get(f"/messageexchange/{MB1}", headers={"Authorization": Tokens(MB1)(), "Accept": accept})
    assert response.status == 400
    assert v1_error(await body_of(response)) == ("", "", "Accept header api format incorrect")


async def test_bad_accept_wins_over_missing_auth(client: TestClient) -> None:
    response = await client.get(f"/messageexchange/{MB1}", headers={"Accept": "application/vnd.mesh.bogus"})
    assert response.status == 400


async def test_v3_error_is_v2_shape(client: TestClient) -> None:
    response = await client.get(f"/messageexchange/{MB1}", headers={"Accept": "application/vnd.mesh.v3+json"})
    assert response.status == 403
    assert response.content_type == "application/vnd.mesh.v2+json"
    assert "detail" in await body_of(response)
