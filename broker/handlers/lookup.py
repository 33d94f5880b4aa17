"""Directory handlers: endpoint lookup by ODS code and workflow, and workflow search."""

from __future__ import annotations

import secrets

from aiohttp import web

from broker import views
from broker.handlers.common import version
from broker.keys import DIRECTORY


async def endpoint_lookup(request: web.Request) -> web.Response:
    found = await request.app[DIRECTORY].endpoint_lookup(
        request.match_info["ods_code"], request.match_info["workflow_id"]
    )
    return views.endpoint_lookup(found, version(request), query_id=secrets.token_hex(16))


async def workflow_search(request: web.Request) -> web.Response:
    return views.workflow_search(await request.app[DIRECTORY].workflow_search(request.match_info["workflow_id"]))
