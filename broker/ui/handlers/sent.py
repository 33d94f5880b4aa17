"""What the mailbox sent, with each message's tracking status; and finding a mailbox by ODS code and workflow."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from broker.errors import BrokerError, ValidationFailed
from broker.store.protocol import Box
from broker.ui import pages, wording
from broker.ui.keys import DIRECTORY, MESSAGING
from broker.ui.pages import FieldError

#: Messages a page lists (the API's rich outbox serves at most 100).
PAGE_SIZE = 20


async def page(request: web.Request) -> web.StreamResponse:
    _session, mailbox = await pages.signed_in(request)
    continue_from = request.query.get("from")
    try:
        listed = await request.app[MESSAGING].rich(
            mailbox, Box.OUTBOX, start_time=None, max_results=PAGE_SIZE, continue_from=continue_from
        )
    except ValidationFailed:
        raise web.HTTPSeeOther(f"{pages.PREFIX}/sent") from None  # a paging link from an older page
    sent = request.query.get("sent", "")
    context = {
        "title": "Sent",
        "nav": "sent",
        "messages": listed.messages,
        "first_page": continue_from is not None,
        "next": None if listed.continue_from is None else f"{pages.PREFIX}/sent?from={quote(listed.continue_from)}",
        "sent": sent if sent.replace("_", "").isalnum() else "",
        "wording": wording,
    }
    return pages.render(request, "sent.html", context)


async def lookup(request: web.Request) -> web.StreamResponse:
    """Endpoint lookup: the mailboxes of an organisation (ODS code) that receive a workflow. A GET form: it
    changes nothing, and its answer can be bookmarked."""
    await pages.signed_in(request)
    ods_code = request.query.get("ods_code", "").strip().upper()
    workflow_id = request.query.get("workflow_id", "").strip()
    asked = "ods_code" in request.query or "workflow_id" in request.query
    errors = []
    if asked and not ods_code:
        errors.append(FieldError("ods_code", "Enter an ODS code"))
    if asked and not workflow_id:
        errors.append(FieldError("workflow_id", "Enter a workflow ID"))
    found = None
    if asked and not errors:
        try:
            found = await request.app[DIRECTORY].endpoint_lookup(ods_code, workflow_id)
        except BrokerError as exc:
            errors.append(FieldError("ods_code", exc.description))
    context = {
        "title": "Find a mailbox",
        "nav": "lookup",
        "ods_code": ods_code,
        "workflow_id": workflow_id,
        "found": found,
        "errors": errors,
    }
    return pages.render(request, "lookup.html", context, status=400 if errors else 200)
