"""Tracking handlers: by message ID, and the deprecated lookup by local ID (always the v1 body)."""

from __future__ import annotations

from aiohttp import web

from broker import views
from broker.errors import ValidationFailed
from broker.handlers.common import caller, version
from broker.headers import V1
from broker.keys import MESSAGING


async def by_message_id(request: web.Request) -> web.Response:
    wanted = request.query.get("messageID")
    if wanted is None:
        raise ValidationFailed.missing("query", "messageID")
    message = await request.app[MESSAGING].track(caller(request), wanted.strip().upper())
    return views.tracking(message, version(request))


async def by_local_id(request: web.Request) -> web.Response:
    message = await request.app[MESSAGING].track_local_id(caller(request), request.match_info["local_id"])
    return views.tracking(message, V1)
