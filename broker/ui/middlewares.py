"""The web page's one middleware: security headers, errors as pages a person can read, and a log line per request.

It runs inside the broker's own middlewares (metrics, request ID), which see the page's routes by template like
any other. Errors raised by the services (BrokerError, ValidationFailed) are caught here, so they leave as HTML
rather than the API's JSON; anything unexpected is logged with the request ID and shown as a plain apology.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from broker.errors import BrokerError, ValidationFailed
from broker.keys import REQUEST_ID
from broker.ui import pages
from broker.ui.keys import ACTIONS, ADDRESS, CLOSE, CONFIG, LOG

log = logging.getLogger("broker.ui")

#: No inline script or style anywhere: scripts and styles come from the broker's own static files.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
#: Pages hold patient data (names in subjects, file names): never kept by a browser or a proxy.
NO_STORE = "no-store"
#: Static files are served with a version in their URL, so a copy may be kept until the next release.
STATIC_CACHE = "public, max-age=31536000, immutable"


@web.middleware
async def page(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    request[ADDRESS] = client_address(request)
    request[LOG] = {}
    static = request.path.startswith(f"{pages.PREFIX}/static/")
    try:
        response = await _answer(request, handler)
    except web.HTTPException as exc:
        # Redirects (and the statuses _answer lets through) leave as raised, cookies and all, with our headers.
        _finish(request, exc, static, started)
        raise
    _finish(request, response, static, started)
    return response


def _finish(request: web.Request, response: web.StreamResponse, static: bool, started: float) -> None:
    if request.get(CLOSE):
        response.force_close()
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = STATIC_CACHE if static and response.status == 200 else NO_STORE
        if request.secure and request.app[CONFIG].strict_transport:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    _log(request, response.status, started)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except pages.Refused as exc:
        return _error_page(request, exc.status, exc.title, exc.text)
    except BrokerError as exc:
        spec = exc.code.spec
        return _error_page(request, spec.status, "Something was refused", exc.description)
    except ValidationFailed as exc:
        return _error_page(request, 400, "Something was not right", str(exc))
    except web.HTTPException as exc:
        if exc.status == 404:
            return _error_page(request, 404, "Page not found", "If you typed the web address, check it is correct.")
        if exc.status == 405:
            return _error_page(request, 405, "Page not found", "This page cannot be used that way.")
        if exc.status == 413:
            return _error_page(request, 413, "Too much was sent", "The form sent more than this page accepts.")
        raise
    except Exception:
        log.exception(
            "unhandled error",
            extra={"action": "ui_request_failed", "request_id": request.get(REQUEST_ID, ""), "path": request.path},
        )
        return _error_page(
            request,
            500,
            "Sorry, there is a problem with the service",
            f"Try again later. If it goes on, contact support and quote reference {request.get(REQUEST_ID, '')}.",
        )


def _error_page(request: web.Request, status: int, title: str, text: str) -> web.Response:
    return pages.render(request, "error.html", {"title": title, "text": text}, status=status)


def client_address(request: web.Request) -> str:
    """The client's IP address: the connection's peer, or (behind a proxy that sets it, when configured) the
    last X-Forwarded-For entry, the one the nearest proxy added and the client could not forge."""
    if request.app[CONFIG].forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.remote or ""


def _log(request: web.Request, status: int, started: float) -> None:
    """One line per request: the action (the route's name), the mailbox, the outcome; never a file or its name."""
    route = request.match_info.route
    action = request.app[ACTIONS].get(route, "ui_static" if request.path.startswith("/ui/static/") else "ui_unknown")
    extra: dict[str, Any] = {
        "action": action,
        "method": request.method,
        "status": status,
        "address": request[ADDRESS],
        "request_id": request.get(REQUEST_ID, ""),
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    noted: dict[str, Any] = request[LOG]
    extra.update(noted)
    log.info("ui request", extra=extra)
