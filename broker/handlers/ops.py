"""Operational handlers: liveness pings and the Java client's update check."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broker import views
from broker.keys import METRICS, SETTINGS


async def ping(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return views.ping(settings.env_name, settings.build_label)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def update(request: web.Request) -> web.Response:
    return views.empty()
