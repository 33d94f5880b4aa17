"""Operational handlers: liveness pings and the Java client's update check."""

from __future__ import annotations

from aiohttp import web

from broker import views
from broker.keys import SETTINGS


async def ping(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return views.ping(settings.env_name, settings.build_label)


async def update(request: web.Request) -> web.Response:
    return views.empty()
