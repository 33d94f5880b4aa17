"""What every handler needs from a request: the caller, the API version, path values and the body stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from broker.errors import BrokerError, ErrorCode, ValidationFailed
from broker.keys import API_VERSION, MAILBOX
from broker.models import Mailbox

#: Request body pieces handed to the blob store; aiohttp's own buffer bounds what is held in memory.
BODY_PIECE = 256 * 1024


def caller(request: web.Request) -> Mailbox:
    return request[MAILBOX]


def version(request: web.Request) -> int:
    return request[API_VERSION]


def message_id(request: web.Request) -> str:
    return request.match_info["message_id"].strip().upper()


def chunk_number(request: web.Request) -> int:
    raw = request.match_info.get("chunk_number")
    number = 1 if raw is None else int(raw)
    if number < 1:
        raise ValidationFailed.invalid(
            "path", "chunk_number", "Input should be greater than or equal to 1", "greater_than_equal"
        )
    return number


def body(request: web.Request, limit: int, message_id: str | None = None) -> AsyncIterator[bytes]:
    """The request body as a stream; a declared Content-Length over the limit fails before reading."""
    if request.content_length is not None and request.content_length > limit:
        raise BrokerError(ErrorCode.MESSAGE_TOO_LARGE, message_id=message_id)
    return request.content.iter_chunked(BODY_PIECE).__aiter__()


def int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValidationFailed.invalid("query", name, "Input should be a valid integer", "int_parsing") from None
