"""mesh-sandbox admin handlers (reset, report injection, events, details), mounted only when enabled."""

from __future__ import annotations

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
        mailbox_id=str(body["mailbox_id"]),
        code=str(body["code"]),
        description=str(body["description"]),
        workflow_id=str(body["workflow_id"]),
        subject=str(body.get("subject") or ""),
        local_id=str(body.get("local_id") or ""),
        status=str(body.get("status") or "undeliverable"),
        file_name=str(body.get("file_name") or ""),
        linked_message_id=str(body.get("linked_message_id") or "").upper(),
    )
    message_id = await request.app[SANDBOX_ADMIN].inject_report(report)
    return views.json({"message_id": message_id})


async def append_event(request: web.Request) -> web.Response:
    body = await _json_body(request)
    try:
        status = Status(str(body.get("status", "")).lower())
    except ValueError:
        raise ValidationFailed.invalid("body", "status", "Input should be a message status", "enum") from None
    event = Event(
        status=status,
        timestamp=request.app[SANDBOX_ADMIN].now(),
        event=str(body.get("event") or ""),
        code=str(body.get("code") or ""),
        description=str(body.get("description") or ""),
        linked_message_id=str(body.get("linked_message_id") or ""),
    )
    await request.app[SANDBOX_ADMIN].append_event(request.match_info["message_id"], event)
    return views.empty()


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ValidationFailed.invalid("body", "body", "JSON decode error", "json_invalid") from None
    if not isinstance(body, dict):
        raise ValidationFailed.invalid("body", "body", "Input should be a valid dictionary", "dict_type")
    return body
