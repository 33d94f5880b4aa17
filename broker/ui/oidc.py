"""OpenID Connect sign-in for the web page (a CIS2-style identity provider): the authorisation code flow with PKCE.

The provider says who someone is; which mailboxes they may use is the broker's own list (MESH_UI_OIDC_USERS, a
JSON object mapping each user's subject to mailbox IDs), read once when the broker starts. The provider's
discovery document and signing keys are fetched on first use and the keys again when a token names one not yet
seen (the provider rotated them).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import orjson

from broker.settings import Settings

#: How long the provider may take to answer one request; past it, sign-in fails with a clear page.
TIMEOUT = aiohttp.ClientTimeout(total=10)
#: The signature algorithms accepted on ID tokens (CIS2 signs with RS256).
ALGORITHMS = ["RS256", "RS512", "ES256"]


class OidcError(Exception):
    """The provider could not be reached, or what it sent cannot be trusted; the message says which."""


@dataclass(frozen=True, slots=True)
class Pending:
    """What the browser carries between leaving for the provider and coming back (a cookie of its own)."""

    state: str
    nonce: str
    verifier: str

    def cookie(self) -> str:
        return base64.urlsafe_b64encode(orjson.dumps([self.state, self.nonce, self.verifier])).decode()

    @classmethod
    def from_cookie(cls, value: str | None) -> Pending | None:
        if not value:
            return None
        try:
            state, nonce, verifier = orjson.loads(base64.urlsafe_b64decode(value.encode()))
        except (ValueError, TypeError, orjson.JSONDecodeError):
            return None
        if not all(isinstance(part, str) and part for part in (state, nonce, verifier)):
            return None
        return cls(state, nonce, verifier)


def load_users(path: Path) -> dict[str, tuple[str, ...]]:
    """MESH_UI_OIDC_USERS: {"<subject>": ["MAILBOX", ...], ...}; raises ValueError naming what is wrong."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"MESH_UI_OIDC_USERS {path}: {exc}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(mailboxes, list) and all(isinstance(m, str) for m in mailboxes) for mailboxes in raw.values()
    ):
        raise ValueError(f'MESH_UI_OIDC_USERS {path}: expected {{"<subject>": ["MAILBOX", ...]}}')
    return {str(who): tuple(m.strip().upper() for m in mailboxes if m.strip()) for who, mailboxes in raw.items()}


class OidcClient:
    """The relying party. One per app; its HTTP session opens and closes with the app (open, close)."""

    def __init__(self, settings: Settings):
        self._issuer = settings.ui_oidc_issuer.rstrip("/")
        self._client_id = settings.ui_oidc_client_id
        self._client_secret = settings.ui_oidc_client_secret
        self._redirect_url = settings.ui_oidc_redirect_url
        self._session: aiohttp.ClientSession | None = None
        self._discovery: dict[str, Any] | None = None
        self._keys: dict[str, Any] = {}

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=TIMEOUT)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def authorization_url(self) -> tuple[str, Pending]:
        """Where to send the browser, and what it must bring back."""
        discovery = await self._discover()
        pending = Pending(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(pending.verifier.encode()).digest()).decode().rstrip("=")
        query = {
            "response_type": "code",
            "client_id": self._client_id,
            "redirect_uri": self._redirect_url,
            "scope": "openid",
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return f"{discovery['authorization_endpoint']}?{urlencode(query)}", pending

    async def subject(self, code: str, pending: Pending) -> str:
        """Exchange the code for an ID token, check it (signature, issuer, audience, expiry, nonce) and return the
        user's subject; OidcError when any of it fails."""
        discovery = await self._discover()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._redirect_url,
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "code_verifier": pending.verifier,
        }
        answer = await self._fetch("POST", discovery["token_endpoint"], data=form)
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("the identity provider's token answer holds no ID token")
        claims = await self._verify(id_token)
        if claims.get("nonce") != pending.nonce:
            raise OidcError("the ID token was not issued for this sign-in (nonce)")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise OidcError("the ID token names no subject")
        return subject

    async def _verify(self, id_token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise OidcError(f"the ID token cannot be read: {exc}") from None
        key = await self._key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key=key,
                algorithms=ALGORITHMS,
                audience=self._client_id,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                leeway=30,
            )
        except jwt.PyJWTError as exc:
            raise OidcError(f"the ID token is not valid: {exc}") from None
        return claims

    async def _key(self, kid: str) -> Any:
        if kid not in self._keys:
            discovery = await self._discover()
            jwks = await self._fetch("GET", discovery["jwks_uri"])
            try:
                keys = jwt.PyJWKSet.from_dict(jwks).keys
            except jwt.PyJWTError as exc:
                raise OidcError(f"the identity provider's keys cannot be read: {exc}") from None
            self._keys = {str(k.key_id or ""): k.key for k in keys}
        if kid not in self._keys:
            raise OidcError("the ID token is signed with a key the identity provider does not publish")
        return self._keys[kid]

    async def _discover(self) -> dict[str, Any]:
        if self._discovery is None:
            found = await self._fetch("GET", f"{self._issuer}/.well-known/openid-configuration")
            needed = ("authorization_endpoint", "token_endpoint", "jwks_uri")
            if any(not isinstance(found.get(name), str) for name in needed):
                raise OidcError("the identity provider's discovery document lacks an endpoint")
            if str(found.get("issuer", "")).rstrip("/") != self._issuer:
                raise OidcError("the identity provider's discovery document names another issuer")
            self._discovery = found
        return self._discovery

    async def _fetch(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        if self._session is None:
            raise OidcError("the OpenID Connect client is not open")
        try:
            async with self._session.request(method, url, **kwargs) as response:
                body = await response.read()
                if response.status != 200:
                    raise OidcError(f"the identity provider answered {response.status} to {method} {url}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OidcError(f"the identity provider cannot be reached: {exc}") from None
        try:
            found = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise OidcError(f"the identity provider's answer to {method} {url} is not JSON") from None
        if not isinstance(found, dict):
            raise OidcError(f"the identity provider's answer to {method} {url} is not a JSON object")
        return found
