"""NHSMESH authentication (mesh-api.md section 2 and the Decisions table): every failure is a 403."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.keys import DIRECTORY
from tests.api.helpers import MB1, MB2, body_of, v1_error, v2_error
from tests.support import CLIENT_HEADERS, V1, V2, Mesh, Tokens

HANDSHAKE = f"/messageexchange/{MB1}"


async def handshake(client: TestClient, authorization: str | None, accept: str = V1) -> tuple[int, object]:
    headers = {"Accept": accept, **CLIENT_HEADERS}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = await client.get(HANDSHAKE, headers=headers)
    return response.status, await body_of(response) if response.status != 200 or accept == V1 else None


async def test_valid_token_is_accepted(client: TestClient) -> None:
    status, body = await handshake(client, Tokens(MB1)())
    assert (status, body) == (200, {"mailboxId": MB1})


async def test_missing_header_is_403(client: TestClient) -> None:
    status, body = await handshake(client, None)
    assert status == 403
    assert v1_error(body) == ("", "", "Error reading from Authorization header")


async def test_blank_header_is_403(client: TestClient) -> None:
    status, _ = await handshake(client, "   ")
    assert status == 403


async def test_auth_error_in_v2_shape(client: TestClient) -> None:
    status, body = await handshake(client, None, accept=V2)
    assert status == 403
    assert v2_error(body) == ("", "", "Error reading from Authorization header")


async def test_wrong_shared_key_is_403(client: TestClient) -> None:
    status, body = await handshake(client, Tokens(MB1, shared_key=b"NotTheKey")())
    assert status == 403
    assert v1_error(body)[2] == "Invalid Authentication Token"


async def test_wrong_password_is_403(client: TestClient) -> None:
    status, body = await handshake(client, Tokens(MB1)(password="wrong"))
    assert status == 403
    assert v1_error(body)[2] == "Invalid Authentication Token"


async def test_upper_case_hmac_is_accepted(client: TestClient) -> None:
    token = Tokens(MB1)()
    prefix, digest = token.rsplit(":", 1)
    status, _ = await handshake(client, f"{prefix}:{digest.upper()}")
    assert status == 200


async def test_three_hour_old_token_is_403(client: TestClient) -> None:
    status, body = await handshake(client, Tokens(MB1)(at=datetime.now(UTC) - timedelta(hours=3)))
    assert status == 403
    assert "window" in v1_error(body)[2]


async def test_three_hours_in_the_future_is_403(client: TestClient) -> None:
    status, _ = await handshake(client, Tokens(MB1)(at=datetime.now(UTC) + timedelta(hours=3)))
    assert status == 403


async def test_one_hour_old_token_is_accepted(client: TestClient) -> None:
    status, _ = await handshake(client, Tokens(MB1)(at=datetime.now(UTC) - timedelta(hours=1)))
    assert status == 200


async def test_replayed_token_is_403(client: TestClient) -> None:
    token = Tokens(MB1)()
    assert (await handshake(client, token))[0] == 200
    status, body = await handshake(client, token)
    assert status == 403
    assert v1_error(body)[2] == "Error Duplicated Authentication Token"


async def test_same_nonce_with_next_count_is_accepted(client: TestClient) -> None:
    tokens = Tokens(MB1)
    for _ in range(3):
        assert (await handshake(client, tokens()))[0] == 200


async def test_token_for_another_mailbox_is_403(client: TestClient) -> None:
    status, body = await handshake(client, Tokens(MB2)())
    assert status == 403
    assert v1_error(body)[2] == "Mailbox id does not match token"


async def test_lower_case_path_mailbox_matches_upper_case_token(client: TestClient) -> None:
    headers = {"Authorization": Tokens(MB1)(), **CLIENT_HEADERS}
    response = await client.get(f"/messageexchange/{MB1.lower()}", headers=headers)
    assert response.status == 200


async def test_unknown_mailbox_is_403(client: TestClient) -> None:
    response = await client.get("/messageexchange/NOSUCHMB", headers={"Authorization": Tokens("NOSUCHMB")()})
    assert response.status == 403
    assert v1_error(await body_of(response)) == ("SEND", "EPL-151", "No mailbox matched")


async def test_deactivated_mailbox_is_403(client: TestClient, app: web.Application) -> None:
    await app[DIRECTORY].set_active(MB1, False)
    status, body = await handshake(client, Tokens(MB1)())
    assert status == 403
    assert v1_error(body)[2] == "Request Received from Inactive Mailbox"


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        f"NHSMESH {MB1}",
        f"NHSMESH {MB1}:nonce:1:202401010000",
        f"NHSMESH {MB1}:nonce:x1:202401010000:abc",
        f"NHSMESH {MB1}:nonce:1:2024010100:abc",
        f"NHSMESH {MB1}:nonce:1:202401010000:abc:extra",
        f"BASIC {MB1}:nonce:1:202401010000:abc",
        f"NHSMESH {MB1}::1:202401010000:abc",
    ],
)
async def test_malformed_token_is_403(client: TestClient, token: str) -> None:
    status, _ = await handshake(client, token)
    assert status == 403


async def test_every_mailbox_route_needs_auth(client: TestClient, mb1: Mesh) -> None:
    message_id = "20240101000000000000_ABCDEF"
    calls = [
        ("GET", f"/messageexchange/{MB1}"),
        ("POST", f"/messageexchange/{MB1}"),
        ("POST", f"/messageexchange/{MB1}/update"),
        ("GET", f"/messageexchange/{MB1}/count"),
        ("GET", f"/messageexchange/{MB1}/inbox"),
        ("HEAD", f"/messageexchange/{MB1}/inbox/{message_id}"),
        ("GET", f"/messageexchange/{MB1}/inbox/{message_id}"),
        ("GET", f"/messageexchange/{MB1}/inbox/{message_id}/2"),
        ("PUT", f"/messageexchange/{MB1}/inbox/{message_id}/status/acknowledged"),
        ("POST", f"/messageexchange/{MB1}/outbox"),
        ("GET", f"/messageexchange/{MB1}/outbox/tracking?messageID={message_id}"),
        ("GET", f"/messageexchange/{MB1}/outbox/tracking/local"),
        ("POST", f"/messageexchange/{MB1}/outbox/{message_id}/2"),
    ]
    for method, path in calls:
        response = await client.request(method, path, headers={"Accept": V2})
        assert response.status == 403, (method, path)
