"""E1 handshake, GET and POST, in both API versions."""

from __future__ import annotations

import pytest

from tests.api.helpers import MB1, body_of
from tests.support import CLIENT_HEADERS, Mesh


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


@pytest.mark.parametrize("missing", ["mex-ClientVersion", "mex-OSName", "mex-OSVersion"])
async def test_handshake_without_a_required_client_header_is_a_validation_error(mb1: Mesh, missing: str) -> None:
    headers = {k: v for k, v in CLIENT_HEADERS.items() if k != missing}
    response = await mb1.client.post(mb1.base, headers=mb1.headers(headers))
    assert response.status == 400
    assert await response.json() == {
        "detail": [{"type": "missing", "loc": ["header", missing.lower()], "msg": "Field required"}]
    }
