"""A small OpenID Connect provider on 127.0.0.1 for tests of the web page's sign-in (never for real use).

It publishes a discovery document and its signing key (JWKS), and runs the authorisation code flow with PKCE for
one user it signs in without asking (the `subject` it was started with): /authorize sends the browser straight
back with a code, /token exchanges the code, checked against the client, redirect URI and verifier, for an ID
token signed RS256 with a key made when it starts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

HOST = "127.0.0.1"
KEY_ID = "devsupport-1"


@dataclass
class Provider:
    """What the provider was started with, and the codes it has handed out."""

    subject: str
    client_id: str
    client_secret: str
    issuer: str = ""
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    codes: dict[str, dict[str, str]] = field(default_factory=dict)

    def id_token(self, nonce: str, *, audience: str | None = None, issued: float | None = None) -> str:
        now = time.time() if issued is None else issued
        claims = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": audience or self.client_id,
            "iat": int(now),
            "exp": int(now) + 300,
            "nonce": nonce,
            "name": "Test User",
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KEY_ID})


PROVIDER = web.AppKey("provider", Provider)


async def _discovery(request: web.Request) -> web.Response:
    issuer = request.app[PROVIDER].issuer
    return web.json_response(
        {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        }
    )


async def _jwks(request: web.Request) -> web.Response:
    public = jwt.algorithms.RSAAlgorithm.to_jwk(request.app[PROVIDER].key.public_key(), as_dict=True)
    return web.json_response({"keys": [{**public, "kid": KEY_ID, "use": "sig", "alg": "RS256"}]})


async def _authorize(request: web.Request) -> web.StreamResponse:
    provider = request.app[PROVIDER]
    query = request.query
    if query.get("client_id") != provider.client_id or query.get("response_type") != "code":
        raise web.HTTPBadRequest(text="unknown client or response type")
    if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
        raise web.HTTPBadRequest(text="PKCE (S256) is required")
    code = secrets.token_urlsafe(24)
    provider.codes[code] = {
        "redirect_uri": query.get("redirect_uri", ""),
        "challenge": query["code_challenge"],
        "nonce": query.get("nonce", ""),
    }
    back = urlencode({"code": code, "state": query.get("state", "")})
    raise web.HTTPFound(f"{query.get('redirect_uri', '')}?{back}")


async def _token(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    form = await request.post()
    granted = provider.codes.pop(str(form.get("code", "")), None)
    if (
        granted is None
        or form.get("client_id") != provider.client_id
        or form.get("client_secret") != provider.client_secret
        or form.get("redirect_uri") != granted["redirect_uri"]
    ):
        return web.json_response({"error": "invalid_grant"}, status=400)
    verifier = str(form.get("code_verifier", ""))
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    if challenge != granted["challenge"]:
        return web.json_response({"error": "invalid_grant", "error_description": "PKCE verifier"}, status=400)
    return web.json_response(
        {
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "id_token": provider.id_token(granted["nonce"]),
        }
    )


def app(provider: Provider) -> web.Application:
    application = web.Application()
    application[PROVIDER] = provider
    application.router.add_get("/.well-known/openid-configuration", _discovery)
    application.router.add_get("/jwks", _jwks)
    application.router.add_get("/authorize", _authorize)
    application.router.add_post("/token", _token)
    return application


@asynccontextmanager
async def running(subject: str, client_id: str = "mesh-ui", client_secret: str = "secret") -> AsyncIterator[Provider]:
    """The provider serving on 127.0.0.1 (a free port) for as long as the block runs; its issuer is its URL."""
    provider = Provider(subject, client_id, client_secret)
    runner = web.AppRunner(app(provider), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, 0).start()
    port = runner.addresses[0][1]
    provider.issuer = f"http://{HOST}:{port}"
    try:
        yield provider
    finally:
        await runner.cleanup()


@contextmanager
def in_thread(subject: str, client_id: str = "mesh-ui", client_secret: str = "secret") -> Iterator[Provider]:
    """running(), on an event loop of its own in a thread: for tests that drive a browser synchronously."""
    started: queue.Queue[tuple[Provider, asyncio.AbstractEventLoop, asyncio.Event] | BaseException] = queue.Queue()

    async def serve() -> None:
        try:
            async with running(subject, client_id, client_secret) as provider:
                stop = asyncio.Event()
                started.put((provider, asyncio.get_running_loop(), stop))
                await stop.wait()
        except BaseException as exc:  # handed to the caller, which raises it
            started.put(exc)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="oidc-provider", daemon=True)
    thread.start()
    first = started.get(timeout=30)
    if isinstance(first, BaseException):
        raise first
    provider, loop, stop = first
    try:
        yield provider
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
