"""Rich inbox and outbox handlers (E14, E15): every status, newest first, paged by continue_from."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from broker import views
from broker.handlers.common import caller, int_query
from broker.keys import MESSAGING
from broker.services.messaging import RICH_DEFAULT_PAGE
from broker.store.protocol import Box


async def inbox(request: web.Request) -> web.Response:
    return await _rich(request, Box.INBOX)


async def outbox(request: web.Request) -> web.Response:
    return await _rich(request, Box.OUTBOX)


async def _rich(request: web.Request, box: Box) -> web.Response:
    mailbox = caller(request)
    max_results = int_query(request, "max_results", RICH_DEFAULT_PAGE)
    start_time = request.query.get("start_time")
    page = await request.app[MESSAGING].rich(
        mailbox,
        box,
        start_time=start_time,
        max_results=max_results,
        continue_from=request.query.get("continue_from"),
    )
    # Links echo the caller's own arguments, so following `next` keeps the same window and page size.
    args = {name: request.query[name] for name in ("start_time", "max_results") if name in request.query}
    base = f"/messageexchange/{mailbox.mailbox_id}/{box.value}/rich"
    self_link = f"{base}?{urlencode(args)}" if args else base
    next_link = None
    if page.continue_from is not None:
        next_link = f"{base}?{urlencode({**args, 'continue_from': page.continue_from})}"
    return views.rich(page.messages, outbox=box is Box.OUTBOX, valid_at=page.valid_at, links=(self_link, next_link))
