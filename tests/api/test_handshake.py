"""E1 handshake, GET and POST, in both API versions."""

from __future__ import annotations

import pytest

from tests.api.helpers import MB1, body_of
from tests.support import Mesh

CLIENT_HEADERS = {"mex-ClientVersion": "mesh_client==5.0.2", "mex-OSName": "Linux", "mex-OSVersion": "6.1"}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_handshake_v1_names_the_mailbox(mb1_v1: Mesh, method: str) -> None:
    response = await mb1_v1.client.request(method, mb1_v1.base, headers=mb1_v1.headers(CLIENT_HEADERS))
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await body_of(response) == {"mailboxId": MB1}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_handshake_v2_has_empty_body(mb1: Mesh, method: str) -> None:
    response = await mb1.client.request(method, mb1.base, headers=mb1.headers(CLIENT_HEADERS))
    assert response.status == 200
    assert await response.read() == b""
