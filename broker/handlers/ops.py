"""Operational handlers: pings, the readiness and liveness probes, metrics, the Java client's update check, and
the API's OpenAPI description."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broker import views
from broker.headers import V1_CONTENT_TYPE
from broker.keys import METRICS, OPENAPI, READINESS, SETTINGS


async def ping(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return views.ping(settings.env_name, settings.build_label)


async def readyz(request: web.Request) -> web.Response:
    return views.readiness(await request.app[READINESS].check())


async def livez(request: web.Request) -> web.Response:
    return views.alive()


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def update(request: web.Request) -> web.Response:
    return views.empty()


async def openapi(request: web.Request) -> web.Response:
    """The API's OpenAPI description (broker/openapi.yaml), as JSON."""
    return web.Response(body=await request.app[OPENAPI].json(), content_type=V1_CONTENT_TYPE)
