"""The inbox: what waits for the mailbox, page by page; download a file; acknowledge it."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from broker.errors import BrokerError, ErrorCode, ValidationFailed
from broker.models import Chunk, Message
from broker.transfer import Coding
from broker.ui import pages, wording
from broker.ui.keys import MESSAGING, TRANSFER, UI_METRICS
from broker.ui.middlewares import NO_STORE, SECURITY_HEADERS

#: Messages a page lists (the API's inbox takes 10 to 5,000).
PAGE_SIZE = 20
NOTICES = {"acknowledged": "The message was acknowledged. Its sender can see that you have it."}


async def page(request: web.Request) -> web.StreamResponse:
    _session, mailbox = await pages.signed_in(request)
    messaging = request.app[MESSAGING]
    continue_from = request.query.get("from")
    try:
        listed = await messaging.inbox(
            mailbox, max_results=PAGE_SIZE, continue_from=continue_from, workflow_filter=None, with_count=True
        )
    except ValidationFailed:
        raise web.HTTPSeeOther(f"{pages.PREFIX}/inbox") from None  # a paging link from an older page
    messages: list[Message] = []
    for message_id in listed.message_ids:
        try:
            messages.append(await messaging.head(mailbox, message_id))
        except BrokerError:
            continue  # acknowledged or expired since the list was read
    context = {
        "title": "Inbox",
        "nav": "inbox",
        "messages": messages,
        "count": listed.approx_count,
        "first_page": continue_from is not None,
        "next": None if listed.continue_from is None else f"{pages.PREFIX}/inbox?from={quote(listed.continue_from)}",
        "notice": NOTICES.get(request.query.get("done", ""), ""),
        "wording": wording,
    }
    return pages.render(request, "inbox.html", context)


async def download(request: web.Request) -> web.StreamResponse:
    """The whole file under its own name, gzip undone when it was sent compressed for the transfer."""
    _session, mailbox = await pages.signed_in(request)
    messaging = request.app[MESSAGING]
    message_id = request.match_info["message_id"].strip().upper()
    pages.log_extra(request, message_id=message_id)
    message, first = await messaging.download(mailbox, message_id, 1)
    chunks: list[Chunk] = [first]
    for number in range(2, message.total_chunks + 1):
        chunks.append((await messaging.download(mailbox, message_id, number))[1])
    response = web.StreamResponse(
        headers={
            **SECURITY_HEADERS,
            "Cache-Control": NO_STORE,
            "Content-Type": "application/octet-stream",
            "Content-Disposition": content_disposition(message.meta.file_name or f"{message_id}.dat"),
        }
    )
    coding = Coding.GUNZIP if message.content_encoding == "gzip" else Coding.AS_STORED
    request.app[UI_METRICS].downloads.inc()
    return await request.app[TRANSFER].send_chunks(request, response, chunks, coding)


async def acknowledge(request: web.Request) -> web.StreamResponse:
    session, mailbox = await pages.signed_in(request)
    await pages.session_form(request, session)
    message_id = request.match_info["message_id"].strip().upper()
    pages.log_extra(request, message_id=message_id)
    try:
        await request.app[MESSAGING].acknowledge(mailbox, message_id)
    except BrokerError as exc:
        if exc.code is not ErrorCode.MESSAGE_NOT_FOUND:
            raise
        raise pages.Refused(404, "Message not found", "It may have been removed after its retention period.") from None
    raise web.HTTPSeeOther(f"{pages.PREFIX}/inbox?done=acknowledged")


def content_disposition(file_name: str) -> str:
    """attachment, with the file's own name: an ASCII stand-in for old browsers and the exact name (RFC 6266)."""
    plain = file_name.replace("\\", "/").rsplit("/", 1)[-1] or "message.dat"
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"%;' else "_" for c in plain)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(plain, safe='')}"
