"""Inbox handlers: handshake, list, count, HEAD, chunk download (with gzip negotiation) and acknowledge."""

from __future__ import annotations

import base64
import secrets
from urllib.parse import urlencode

from aiohttp import web

from broker import headers, views
from broker.errors import ValidationFailed
from broker.handlers.common import caller, chunk_number, int_query, message_id, version
from broker.keys import DIRECTORY, MESSAGING, SETTINGS, TRANSFER
from broker.services.messaging import INBOX_DEFAULT_PAGE
from broker.transfer import Coding


async def handshake(request: web.Request) -> web.Response:
    mailbox = caller(request)
    for required in headers.HANDSHAKE_REQUIRED:
        if request.headers.get(required) is None:
            raise ValidationFailed.missing("header", required.lower())
    await request.app[DIRECTORY].record_handshake(mailbox, request.headers[headers.CLIENT_VERSION])
    response = views.handshake(mailbox.mailbox_id, version(request))
    response.headers[headers.EXTENSIONS] = headers.EXTENSION_NAMES  # ours, for clients that look (docs/api.md)
    return response


async def count(request: web.Request) -> web.Response:
    mailbox = caller(request)
    number = await request.app[MESSAGING].count(mailbox)
    return views.count(number, version(request), internal_id=f"{mailbox.mailbox_id}_{secrets.token_hex(8)}")


async def list_inbox(request: web.Request) -> web.Response:
    mailbox = caller(request)
    api = version(request)
    max_results = int_query(request, "max_results", INBOX_DEFAULT_PAGE)
    workflow_filter = request.query.get("workflow_filter")
    wait = int_query(request, "wait", 0)  # our long poll (docs/api.md), at most MESH_INBOX_WAIT_MAX_SECONDS
    if wait < 0:
        raise ValidationFailed.invalid("query", "wait", "Input should be 0 or more seconds", "greater_than_equal")
    page = await request.app[MESSAGING].inbox(
        mailbox,
        max_results=max_results,
        continue_from=request.query.get("continue_from"),
        workflow_filter=workflow_filter,
        with_count=api == headers.V2,
        wait=min(wait, request.app[SETTINGS].inbox_wait_max_seconds),
    )
    # v2 links echo only the non-default arguments, as the live service and the sandbox do.
    args: dict[str, str] = {}
    if max_results != INBOX_DEFAULT_PAGE:
        args["max_results"] = str(max_results)
    if workflow_filter:
        args["workflow_filter"] = workflow_filter
    base = f"/messageexchange/{mailbox.mailbox_id}/inbox"
    self_link = f"{base}?{urlencode(args)}" if args else base
    next_link = None
    if page.continue_from is not None:
        next_link = f"{base}?{urlencode({**args, 'continue_from': page.continue_from})}"
    return views.inbox(page.message_ids, api, links=(self_link, next_link), approx_count=page.approx_count)


async def head(request: web.Request) -> web.Response:
    message = await request.app[MESSAGING].head(caller(request), message_id(request))
    content_type = views.download_content_type(message, version(request))
    return web.Response(headers=views.message_headers(message, 1, gzip_response=False, content_type=content_type))


async def download(request: web.Request) -> web.StreamResponse:
    number = chunk_number(request)
    message, chunk = await request.app[MESSAGING].download(caller(request), message_id(request), number)
    api = version(request)
    stored_gzip = message.content_encoding == "gzip"
    coding = _coding(stored_gzip, request, may_gzip=api == headers.V2 and chunk.size > 0)
    response = web.StreamResponse(
        status=206 if number < message.total_chunks else 200,
        headers=views.message_headers(
            message,
            number,
            gzip_response=coding.gzipped(stored_gzip),
            content_type=views.download_content_type(message, api),
        ),
    )
    if coding is Coding.AS_STORED and chunk.sha256:
        # The bytes leave as stored, so their recorded SHA-256 is the body's (RFC 9530): a client can check it.
        response.headers["Content-Digest"] = f"sha-256=:{base64.b64encode(bytes.fromhex(chunk.sha256)).decode()}:"
    return await request.app[TRANSFER].send(request, response, chunk, coding)


async def acknowledge(request: web.Request) -> web.Response:
    target = message_id(request)
    await request.app[MESSAGING].acknowledge(caller(request), target)
    return views.acknowledged(target, version(request))


def _coding(stored_gzip: bool, request: web.Request, *, may_gzip: bool) -> Coding:
    """gzip negotiation: a client that did not ask for gzip gets plain bytes; one that did gets gzip, encoded
    on the fly only where may_gzip (v2, and not empty: the live service never gzips for v1)."""
    client_gzip = headers.accepts_gzip(request.headers.get("Accept-Encoding"))
    if stored_gzip and not client_gzip:
        return Coding.GUNZIP
    if not stored_gzip and client_gzip and may_gzip:
        return Coding.GZIP
    return Coding.AS_STORED
