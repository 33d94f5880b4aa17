"""Signing in and out: mailbox ID and password, OpenID Connect, choosing among several mailboxes."""

from __future__ import annotations

import math
from datetime import datetime

from aiohttp import web

from broker.ui import pages
from broker.ui.keys import CLOCK, OIDC, OIDC_USERS, SESSIONS, UI_METRICS
from broker.ui.oidc import OidcClient, OidcError, Pending
from broker.ui.pages import FieldError
from broker.ui.sessions import MailboxInactive, SignedIn, SignInLocked, SignInRefused

OIDC_COOKIE = "mesh_ui_oidc"
OIDC_PATH = f"{pages.PREFIX}/oidc"
#: How long someone may spend at the identity provider before the round trip must start again.
OIDC_COOKIE_SECONDS = 600


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(f"{pages.PREFIX}/inbox")


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    return _sign_in_form(request, notice=_notice(request.query.get("done")))


async def sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    pages.check_csrf(request.cookies.get(pages.SIGN_IN_COOKIE, ""), form.get(pages.CSRF_FIELD))
    mailbox_id = str(form.get("mailbox_id", "")).strip().upper()
    password = str(form.get("password", ""))
    errors = []
    if not mailbox_id:
        errors.append(FieldError("mailbox_id", "Enter your mailbox ID"))
    if not password:
        errors.append(FieldError("password", "Enter your password"))
    if errors:
        return _sign_in_form(request, errors=errors, mailbox_id=mailbox_id, status=400)
    pages.log_extra(request, mailbox=mailbox_id)
    metrics = request.app[UI_METRICS].sign_ins
    try:
        signed = await request.app[SESSIONS].sign_in(mailbox_id, password, pages.address(request))
    except SignInLocked as exc:
        metrics.labels("password", "locked").inc()
        pages.log_extra(request, outcome="locked")
        return _locked(request, mailbox_id, exc.until)
    except SignInRefused as exc:
        metrics.labels("password", "failure").inc()
        pages.log_extra(request, outcome="failure")
        if exc.locked_until is not None:
            return _locked(request, mailbox_id, exc.locked_until)
        wrong = FieldError("mailbox_id", "The mailbox ID or password is not right")
        return _sign_in_form(request, errors=[wrong], mailbox_id=mailbox_id, status=400)
    except MailboxInactive:
        metrics.labels("password", "inactive").inc()
        pages.log_extra(request, outcome="inactive")
        closed = FieldError("mailbox_id", "This mailbox is not active. Contact your MESH administrator")
        return _sign_in_form(request, errors=[closed], mailbox_id=mailbox_id, status=403)
    metrics.labels("password", "success").inc()
    pages.log_extra(request, outcome="success")
    return _start_session(signed, pages.safe_next(request.query.get("next")))


async def sign_out(request: web.Request) -> web.StreamResponse:
    session, _mailbox = await pages.signed_in(request)
    await pages.session_form(request, session)
    await request.app[SESSIONS].sign_out(session)
    response = web.HTTPSeeOther(f"{pages.PREFIX}/sign-in?done=signed-out")
    pages.clear_cookie(response, pages.SESSION_COOKIE)
    raise response


async def choose_mailbox_page(request: web.Request) -> web.StreamResponse:
    _session, mailbox = await pages.signed_in(request)
    return pages.render(request, "mailbox.html", {"title": "Choose a mailbox", "current": mailbox.mailbox_id})


async def choose_mailbox(request: web.Request) -> web.StreamResponse:
    session, _mailbox = await pages.signed_in(request)
    form = await pages.session_form(request, session)
    chosen = str(form.get("mailbox_id", ""))
    if not await request.app[SESSIONS].switch_mailbox(session, chosen):
        error = FieldError(f"mailbox-{session.mailboxes[0]}", "Choose one of your mailboxes")
        context = {"title": "Choose a mailbox", "current": session.mailbox_id, "errors": [error]}
        return pages.render(request, "mailbox.html", context, status=400)
    pages.log_extra(request, switched_to=chosen)
    raise web.HTTPSeeOther(f"{pages.PREFIX}/inbox")


async def oidc_start(request: web.Request) -> web.StreamResponse:
    oidc = _oidc(request)
    try:
        url, pending = await oidc.authorization_url()
    except OidcError as exc:
        return _oidc_failed(request, exc)
    response = web.HTTPSeeOther(url)
    # Lax, not Strict: the browser comes back from the identity provider's site, and must bring this along.
    pages.set_cookie(
        response, OIDC_COOKIE, pending.cookie(), path=OIDC_PATH, samesite="Lax", max_age=OIDC_COOKIE_SECONDS
    )
    raise response


async def oidc_callback(request: web.Request) -> web.StreamResponse:
    oidc = _oidc(request)
    metrics = request.app[UI_METRICS].sign_ins
    pending = Pending.from_cookie(request.cookies.get(OIDC_COOKIE))
    code, state = request.query.get("code"), request.query.get("state")
    if pending is None or not code or state != pending.state:
        metrics.labels("oidc", "failure").inc()
        raise pages.Refused(
            400,
            "Sign-in did not finish",
            "The answer from the identity service did not match a sign-in started here, or took too long. "
            "Start again from the sign-in page.",
        )
    try:
        subject = await oidc.subject(code, pending)
    except OidcError as exc:
        metrics.labels("oidc", "failure").inc()
        return _oidc_failed(request, exc)
    pages.log_extra(request, user=subject)
    mailboxes = request.app[OIDC_USERS].get(subject, ())
    if not mailboxes:
        metrics.labels("oidc", "no_mailboxes").inc()
        raise pages.Refused(
            403,
            "You have no MESH mailbox",
            "You signed in, but your account is not set up to use any mailbox here. Ask your MESH administrator "
            "to add you.",
        )
    signed = await request.app[SESSIONS].sign_in_user(subject, mailboxes)
    metrics.labels("oidc", "success").inc()
    target = f"{pages.PREFIX}/mailbox" if len(mailboxes) > 1 else f"{pages.PREFIX}/inbox"
    # A page of our own moves the browser on: a redirect would keep the trip cross-site (it began at the identity
    # provider), and the browser would then hold back the new SameSite=Strict session cookie.
    response = pages.render(request, "continue.html", {"title": "Signed in", "target": target})
    pages.set_cookie(response, pages.SESSION_COOKIE, signed.token)
    response.del_cookie(OIDC_COOKIE, path=OIDC_PATH)
    return response


def _oidc(request: web.Request) -> OidcClient:
    oidc = request.app.get(OIDC)
    if oidc is None:
        raise web.HTTPNotFound()
    return oidc


def _oidc_failed(request: web.Request, exc: OidcError) -> web.Response:
    pages.log_extra(request, outcome="oidc_failed", reason=str(exc))
    return pages.render(
        request,
        "error.html",
        {
            "title": "Sign-in is not working",
            "text": "The identity service could not sign you in. Try again later, or sign in with your mailbox ID "
            "and password.",
        },
        status=502,
    )


def _start_session(signed: SignedIn, target: str) -> web.StreamResponse:
    response = web.HTTPSeeOther(target)
    pages.set_cookie(response, pages.SESSION_COOKIE, signed.token)
    pages.clear_cookie(response, pages.SIGN_IN_COOKIE)
    raise response


def _locked(request: web.Request, mailbox_id: str, until: datetime) -> web.Response:
    minutes = max(1, math.ceil((until - request.app[CLOCK].now()).total_seconds() / 60))
    text = f"Too many failed sign-ins. Wait {minutes} minute{'s' if minutes != 1 else ''}, then try again"
    return _sign_in_form(request, errors=[FieldError("mailbox_id", text)], mailbox_id=mailbox_id, status=429)


def _sign_in_form(
    request: web.Request,
    *,
    errors: list[FieldError] | None = None,
    mailbox_id: str = "",
    notice: str = "",
    status: int = 200,
) -> web.Response:
    """The sign-in page, with a fresh CSRF token in both the form and its cookie."""
    token = pages.new_sign_in_token()
    context = {
        "title": "Sign in to MESH",
        "errors": errors or [],
        "mailbox_id": mailbox_id,
        "sign_in_token": token,
        "notice": notice,
        "next": pages.safe_next(request.query.get("next")),
    }
    response = pages.render(request, "sign_in.html", context, status=status)
    pages.set_cookie(response, pages.SIGN_IN_COOKIE, token)
    return response


def _notice(done: str | None) -> str:
    return {"signed-out": "You have signed out.", "expired": "You were signed out after a time without use."}.get(
        done or "", ""
    )


async def not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()
