"""The web page's URL table (under /ui), each route with the action name its requests are logged under."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from broker.ui.handlers import auth, inbox, send, sent

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    action: str


ROUTES = (
    Route("GET", "", auth.home, "ui_home"),
    Route("GET", "/", auth.home, "ui_home"),
    Route("GET", "/sign-in", auth.sign_in_page, "ui_sign_in_page"),
    Route("POST", "/sign-in", auth.sign_in, "ui_sign_in"),
    Route("POST", "/sign-out", auth.sign_out, "ui_sign_out"),
    Route("GET", "/oidc/start", auth.oidc_start, "ui_oidc_start"),
    Route("GET", "/oidc/callback", auth.oidc_callback, "ui_oidc_callback"),
    Route("GET", "/mailbox", auth.choose_mailbox_page, "ui_mailbox_page"),
    Route("POST", "/mailbox", auth.choose_mailbox, "ui_choose_mailbox"),
    Route("GET", "/inbox", inbox.page, "ui_inbox"),
    Route("GET", "/inbox/{message_id}/download", inbox.download, "ui_download"),
    Route("POST", "/inbox/{message_id}/acknowledge", inbox.acknowledge, "ui_acknowledge"),
    Route("GET", "/send", send.page, "ui_send_page"),
    Route("POST", "/send", send.send, "ui_send"),
    Route("GET", "/sent", sent.page, "ui_sent"),
    Route("GET", "/lookup", sent.lookup, "ui_lookup"),
)
#: Anything else under /ui: a page that says so, not the API's JSON 404 (static files are matched before it).
NOT_FOUND = Route("*", "/{tail:.*}", auth.not_found, "ui_not_found")


def register(app: web.Application, static_folder: str) -> dict[web.AbstractRoute, str]:
    """Add the routes and the static files (versioned URLs, so browsers may keep them); the action of each route."""
    actions: dict[web.AbstractRoute, str] = {}
    for route in ROUTES:
        actions[app.router.add_route(route.method, route.path, route.handler)] = route.action
    app.router.add_static("/static", static_folder, name="static", append_version=True)
    actions[app.router.add_route(NOT_FOUND.method, NOT_FOUND.path, NOT_FOUND.handler)] = NOT_FOUND.action
    return actions
