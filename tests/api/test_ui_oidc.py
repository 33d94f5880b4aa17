"""OpenID Connect sign-in to the web page against the suite's own provider (broker/devsupport/oidc_provider.py):
the code flow with PKCE, mailboxes from MESH_UI_OIDC_USERS, and every ID token the broker must not trust."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa

from broker.app import create_app
from broker.devsupport import oidc_provider
from broker.keys import METRICS
from broker.settings import Settings
from tests.api.ui_helpers import WebUser

AiohttpClient = Callable[..., Awaitable[TestClient]]
SUBJECT = "user-7d3f"


@pytest.fixture
async def provider() -> AsyncIterator[oidc_provider.Provider]:
    async with oidc_provider.running(SUBJECT) as running:
        yield running


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, settings: Settings, provider: oidc_provider.Provider, tmp_path: Path
) -> TestClient:
    users = tmp_path / "users.json"
    users.write_text(json.dumps({SUBJECT: ["x26abc1", "X26ABC3"], "someone-else": ["X26ABC2"]}))
    server = await aiohttp_client(
        create_app(
            settings.with_(
                ui_oidc_issuer=provider.issuer,
                ui_oidc_client_id=provider.client_id,
                ui_oidc_client_secret=provider.client_secret,
                # The provider sends the browser here; round_trip() takes the query to the test server itself.
                ui_oidc_redirect_url="http://127.0.0.1/ui/oidc/callback",
                ui_oidc_users=users,
            )
        )
    )
    return server


async def round_trip(user: WebUser) -> tuple[int, str]:
    """Leave for the provider and come back as a browser would: the callback's status and page."""
    start = await user.get("/ui/oidc/start")
    assert start.status == 303
    authorize = start.headers["Location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["scope"] == ["openid"] and query["nonce"]
    back = await user.client.session.get(authorize, allow_redirects=False)
    callback = urlsplit(back.headers["Location"])
    return await user.page(f"/ui/oidc/callback?{callback.query}")


async def test_a_user_signs_in_at_the_provider_and_chooses_among_their_mailboxes(client: TestClient) -> None:
    user = WebUser(client)
    status, page = await round_trip(user)
    assert status == 200 and '<meta http-equiv="refresh" content="0; url=/ui/mailbox">' in page
    assert "mesh_ui_session" in user.cookies and "mesh_ui_oidc" not in user.cookies
    status, page = await user.page("/ui/mailbox")
    assert status == 200 and 'value="X26ABC1" checked' in page and 'value="X26ABC3"' in page
    token = await user.csrf("/ui/mailbox")
    refused = await user.post("/ui/mailbox", {"csrf_token": token, "mailbox_id": "X26ABC2"})  # not theirs
    assert refused.status == 400
    chosen = await user.post("/ui/mailbox", {"csrf_token": token, "mailbox_id": "X26ABC3"})
    assert chosen.headers["Location"] == "/ui/inbox"
    assert "Mailbox <strong>X26ABC3</strong>" in (await user.page("/ui/inbox"))[1]
    value = client.app[METRICS].registry.get_sample_value
    assert value("mesh_ui_sign_ins_total", {"method": "oidc", "outcome": "success"}) == 1


async def test_a_callback_that_does_not_match_a_sign_in_started_here_is_refused(client: TestClient) -> None:
    stranger = WebUser(client)
    status, page = await stranger.page("/ui/oidc/callback?code=abc&state=xyz")  # no sign-in started
    assert status == 400 and "Sign-in did not finish" in page
    user = WebUser(client)
    await user.get("/ui/oidc/start")
    status, page = await user.page("/ui/oidc/callback?code=abc&state=not-the-state")
    assert status == 400 and "mesh_ui_session" not in user.cookies


async def test_someone_with_no_mailbox_here_is_told_so(client: TestClient, provider: oidc_provider.Provider) -> None:
    provider.subject = "a-stranger"
    user = WebUser(client)
    status, page = await round_trip(user)
    assert status == 403 and "You have no MESH mailbox" in page and "mesh_ui_session" not in user.cookies


def _forged(provider: oidc_provider.Provider, kind: str) -> Callable[[str], str]:
    real = oidc_provider.Provider.id_token

    def forge(nonce: str) -> str:
        if kind == "nonce":
            return real(provider, "another-sign-in")
        if kind == "audience":
            return real(provider, nonce, audience="another-client")
        if kind == "expired":
            return real(provider, nonce, issued=time.time() - 3600)
        claims = {"iss": provider.issuer, "sub": SUBJECT, "aud": provider.client_id, "nonce": nonce}
        claims.update({"iat": int(time.time()), "exp": int(time.time()) + 300})
        other = rsa.generate_private_key(65537, 2048)  # kind == "key": signed by a key the provider never published
        return jwt.encode(claims, other, algorithm="RS256", headers={"kid": oidc_provider.KEY_ID})

    return forge


@pytest.mark.parametrize("kind", ["nonce", "audience", "expired", "key"])
async def test_an_id_token_that_cannot_be_trusted_signs_nobody_in(
    client: TestClient, provider: oidc_provider.Provider, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provider, "id_token", _forged(provider, kind))
    user = WebUser(client)
    status, page = await round_trip(user)
    assert status == 502 and "Sign-in is not working" in page and "mesh_ui_session" not in user.cookies
    value = client.app[METRICS].registry.get_sample_value
    assert value("mesh_ui_sign_ins_total", {"method": "oidc", "outcome": "failure"}) == 1
