"""Outbox handlers: send a message (chunk 1) and upload chunks 2..n."""

from __future__ import annotations

from aiohttp import web

from broker import headers, views
from broker.errors import BrokerError, ErrorCode, ValidationFailed
from broker.handlers.common import body, caller, chunk_number, message_id, version
from broker.keys import MESSAGING, METRICS, SETTINGS


async def send(request: web.Request) -> web.Response:
    try:
        send_request = headers.parse_send(request.headers)
        limit = request.app[SETTINGS].max_request_bytes
        new_id = await request.app[MESSAGING].send(caller(request), send_request, body(request, limit))
    except (BrokerError, ValidationFailed) as error:
        request.app[METRICS].count_rejected_send(request.headers.get(headers.WORKFLOW_ID, ""), error)
        raise
    return views.send_accepted(new_id, version(request))


async def upload_chunk(request: web.Request) -> web.Response:
    target = message_id(request)
    number = chunk_number(request)
    declared, total = headers.parse_chunk_range(request.headers.get(headers.CHUNK_RANGE), message_id=target)
    if declared != number:
        raise BrokerError(ErrorCode.INVALID_CHUNKS, message_id=target)
    encoding = headers.content_encoding_of(request.headers)
    limit = request.app[SETTINGS].max_request_bytes
    await request.app[MESSAGING].upload_chunk(
        caller(request),
        target,
        number,
        encoding,
        body(request, limit, target),
        total=total,
        length=request.content_length,
    )
    return views.chunk_accepted(target, number, version(request))
