"""What every page handler needs: rendering, the signed-in session, CSRF checks, cookies, the client's address."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from broker.models import Mailbox
from broker.store.protocol import WebSession
from broker.ui.keys import ADDRESS, CONFIG, LOG, SESSION, SESSIONS

SESSION_COOKIE = "mesh_ui_session"
#: The sign-in form's CSRF token before there is a session (double submit: cookie and field must agree).
SIGN_IN_COOKIE = "mesh_ui_csrf"
CSRF_FIELD = "csrf_token"
PREFIX = "/ui"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with what was entered: the field's id (the summary links to it) and what to do about it."""

    field: str
    text: str


class Refused(Exception):
    """A request the page answers with an error page of its own (a status and words for a person)."""

    def __init__(self, status: int, title: str, text: str):
        super().__init__(text)
        self.status = status
        self.title = title
        self.text = text


def render(
    request: web.Request, template: str, context: Mapping[str, Any] | None = None, *, status: int = 200
) -> web.Response:
    """A page, with what the layout needs (the session's mailbox and CSRF token) added to the context."""
    session = request.get(SESSION)
    base: dict[str, Any] = {
        "session": session,
        "csrf_token": session.csrf_token if session is not None else "",
        "oidc_enabled": request.app[CONFIG].oidc_enabled,
        "oidc_label": request.app[CONFIG].oidc_label,
        "errors": [],
    }
    base.update(context or {})
    return aiohttp_jinja2.render_template(template, request, base, status=status)


def log_extra(request: web.Request, **values: Any) -> None:
    """Add to this request's log line."""
    request[LOG].update(values)


async def signed_in(request: web.Request) -> tuple[WebSession, Mailbox]:
    """The live session and the mailbox it acts as; otherwise a redirect to sign in (back here afterwards)."""
    sessions = request.app[SESSIONS]
    session = await sessions.current(request.cookies.get(SESSION_COOKIE))
    mailbox = None if session is None else await sessions.acting_mailbox(session)
    if session is None or mailbox is None:
        back = request.path_qs if request.method == "GET" else f"{PREFIX}/inbox"
        raise web.HTTPSeeOther(f"{PREFIX}/sign-in?next={quote(back, safe='')}")
    request[SESSION] = session
    log_extra(request, mailbox=mailbox.mailbox_id)
    return session, mailbox


def check_csrf(expected: str, given: object) -> None:
    """Refuse a form whose CSRF token is missing or not this session's (403)."""
    if not expected or not isinstance(given, str) or not hmac.compare_digest(expected.encode(), given.encode()):
        raise Refused(
            403,
            "This form has expired",
            "The page you sent this from was out of date or did not come from this service. Nothing was changed. "
            "Go back, reload the page and try again.",
        )


async def session_form(request: web.Request, session: WebSession) -> Mapping[str, Any]:
    """A posted form (url-encoded, small) whose CSRF token has been checked against the session's."""
    form = await request.post()
    check_csrf(session.csrf_token, form.get(CSRF_FIELD))
    return form


def set_cookie(response: web.StreamResponse, name: str, value: str, *, path: str = PREFIX, **extra: Any) -> None:
    """Secure, HttpOnly and SameSite=Strict unless told otherwise (the OpenID Connect round trip needs Lax)."""
    options: dict[str, Any] = {"secure": True, "httponly": True, "samesite": "Strict", "path": path}
    options.update(extra)
    response.set_cookie(name, value, **options)


def clear_cookie(response: web.StreamResponse, name: str, *, path: str = PREFIX) -> None:
    response.del_cookie(name, path=path, secure=True, httponly=True, samesite="Strict")


def new_sign_in_token() -> str:
    return secrets.token_urlsafe(32)


def address(request: web.Request) -> str:
    return request[ADDRESS]


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path of this page, never another site."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/inbox"
