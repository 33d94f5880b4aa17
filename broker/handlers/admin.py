"""mesh-sandbox admin handlers (reset, report injection, events, details), mounted only when enabled."""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from broker import views
from broker.errors import FieldProblem, ValidationFailed
from broker.keys import SANDBOX_ADMIN
from broker.models import Event, Status
from broker.services.sandbox_admin import ReportRequest


async def reset_all(request: web.Request) -> web.Response:
    await request.app[SANDBOX_ADMIN].reset()
    return views.json({"message": "all mailboxes reset"})


async def reset_mailbox(request: web.Request) -> web.Response:
    mailbox_id = request.match_info["mailbox_id"].upper()
    await request.app[SANDBOX_ADMIN].reset(mailbox_id)
    return views.json({"message": f"mailbox {mailbox_id} reset"})


async def mailbox_details(request: web.Request) -> web.Response:
    mailbox = await request.app[SANDBOX_ADMIN].mailbox(request.match_info["mailbox_id"])
    return views.json(views.mailbox_details(mailbox))


async def message_details(request: web.Request) -> web.Response:
    message = await request.app[SANDBOX_ADMIN].message(request.match_info["message_id"])
    return views.json(views.message_details(message))


async def inject_report(request: web.Request) -> web.Response:
    body = await _json_body(request)
    required = ("mailbox_id", "code", "description", "workflow_id")
    missing = [FieldProblem("missing", ("body", name), "Field required") for name in required if name not in body]
    if missing:
        raise ValidationFailed(missing)
    report = ReportRequest(
        mailbox_id=_text(body, "mailbox_id"),
        code=_text(body, "code"),
        description=_text(body, "description"),
        workflow_id=_text(body, "workflow_id"),
        subject=_text(body, "subject"),
        local_id=_text(body, "local_id"),
        status=_text(body, "status") or "undeliverable",
        file_name=_text(body, "file_name"),
        linked_message_id=_text(body, "linked_message_id").upper(),
    )
    message_id = await request.app[SANDBOX_ADMIN].inject_report(report)
    return views.json({"message_id": message_id})


async def append_event(request: web.Request) -> web.Response:
    body = await _json_body(request)
    try:
        status = Status(_text(body, "status").lower())
    except ValueError:
        raise ValidationFailed.invalid("body", "status", "Input should be a message status", "enum") from None
    event = Event(
        status=status,
        timestamp=request.app[SANDBOX_ADMIN].now(),
        event=_text(body, "event"),
        code=_text(body, "code"),
        description=_text(body, "description"),
        linked_message_id=_text(body, "linked_message_id"),
    )
    await request.app[SANDBOX_ADMIN].append_event(request.match_info["message_id"], event)
    return views.empty()


#: What a send refuses in a mex-* header (headers.py); these fields become a REPORT's mex-* headers on download,
#: where aiohttp refuses to write them (a 500 on every download of that report).
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _text(body: dict[str, Any], name: str) -> str:
    """A field as text ("" when absent or null), refused with a 400 when it holds a control character."""
    value = body.get(name)
    text = "" if value is None else str(value)
    if _CONTROL_CHARS.search(text):
        raise ValidationFailed.invalid(
            "body", name, "String should not contain control characters", "string_pattern_mismatch"
        )
    return text


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ValidationFailed.invalid("body", "body", "JSON decode error", "json_invalid") from None
    if not isinstance(body, dict):
        raise ValidationFailed.invalid("body", "body", "Input should be a valid dictionary", "dict_type")
    return body
