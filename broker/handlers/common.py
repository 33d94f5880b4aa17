"""What every handler needs from a request: the caller, the API version, path values and the body stream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from broker import headers
from broker.errors import BrokerError, ErrorCode, ValidationFailed
from broker.keys import API_VERSION, MAILBOX, PACER
from broker.models import Mailbox


def check_url_text(request: web.Request) -> None:
    """400 for a path or query value holding NUL: PostgreSQL's text cannot hold it, so no ID, filter or cursor
    with one can match anything, and the store would refuse the look-up outright instead of finding nothing.
    A decoded value holds NUL only where the raw target holds it or `%00`: almost every request stops there."""
    raw = request.raw_path
    if "%00" not in raw and "\x00" not in raw:
        return
    for where, values in (("path", request.match_info.items()), ("query", request.query.items())):
        for name, value in values:
            if "\x00" in value:
                raise ValidationFailed.invalid(where, name, "String should not contain NUL characters", "string_nul")


def caller(request: web.Request) -> Mailbox:
    return request[MAILBOX]


def version(request: web.Request) -> int:
    return request[API_VERSION]


def message_id(request: web.Request) -> str:
    return request.match_info["message_id"].strip().upper()


def chunk_number(request: web.Request) -> int:
    raw = request.match_info.get("chunk_number")
    if raw is None:
        return 1
    number = headers.chunk_number(raw)
    if number is None and not raw.isascii():  # the route's \d also matches other scripts' digits
        raise ValidationFailed.invalid("path", "chunk_number", "Input should be a valid integer", "int_parsing")
    if number is None:
        raise ValidationFailed.invalid(
            "path",
            "chunk_number",
            f"Input should be less than or equal to {headers.MAX_CHUNK_NUMBER}",
            "less_than_equal",
        )
    if number < 1:
        raise ValidationFailed.invalid(
            "path", "chunk_number", "Input should be greater than or equal to 1", "greater_than_equal"
        )
    return number


def body(request: web.Request, limit: int, message_id: str | None = None) -> AsyncIterator[bytes]:
    """The request body as a stream, each read timed (broker/pacing.py: 408 when it stalls or drags); a declared
    Content-Length over the limit fails before reading."""
    if request.content_length is not None and request.content_length > limit:
        raise BrokerError(ErrorCode.MESSAGE_TOO_LARGE, message_id=message_id)
    return request.app[PACER].body(request, message_id)


#: Longer query integers are refused before int() sees them: every bound checked later is far smaller.
_INT_QUERY_LENGTH = 20


def int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if len(raw) <= _INT_QUERY_LENGTH:
        with contextlib.suppress(ValueError):
            return int(raw)
    raise ValidationFailed.invalid("query", name, "Input should be a valid integer", "int_parsing")
