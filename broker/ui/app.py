"""The web page's sub-application: built from the broker's own services and mounted at /ui by the app factory."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from broker import keys as broker
from broker.ui import keys, middlewares, routes, wording
from broker.ui.config import UiConfig
from broker.ui.metrics import UiMetrics
from broker.ui.oidc import OidcClient, load_users
from broker.ui.sessions import WebSessions

PREFIX = "/ui"


def create_ui_app(parent: web.Application) -> web.Application:
    """The page over the parent app's store, services and metrics registry (which must already be set)."""
    settings = parent[broker.SETTINGS]
    config = UiConfig.from_settings(settings)
    app = web.Application(middlewares=[middlewares.page])
    app[keys.CONFIG] = config
    app[keys.CLOCK] = parent[broker.CLOCK]
    app[keys.MESSAGING] = parent[broker.MESSAGING]
    app[keys.DIRECTORY] = parent[broker.DIRECTORY]
    app[keys.TRANSFER] = parent[broker.TRANSFER]
    app[keys.UI_METRICS] = UiMetrics(parent[broker.METRICS].registry)
    app[keys.SESSIONS] = WebSessions(
        parent[broker.STORE], parent[broker.AUTHENTICATOR], config, clock=parent[broker.CLOCK]
    )
    if settings.ui_oidc_issuer and settings.ui_oidc_users is not None:
        app[keys.OIDC] = OidcClient(settings)
        app[keys.OIDC_USERS] = load_users(settings.ui_oidc_users)  # fail at start, not at the first sign-in
        app.cleanup_ctx.append(_oidc)
    static = resources.files("broker.ui").joinpath("static")
    app[keys.ACTIONS] = routes.register(app, str(static))
    environment = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("broker.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        default_helpers=False,
    )
    environment.globals["static"] = _static_url(app)
    environment.filters["size"] = wording.size_text
    environment.filters["when"] = wording.when_text
    return app


def _static_url(app: web.Application) -> Any:
    """static('ui.css'): the file's URL with its content's hash, worked out once (the files never change while the
    broker runs), so browsers may keep them for long and still see a new release's."""
    resource = app.router["static"]

    @functools.cache
    def url(filename: str) -> str:
        return str(resource.url_for(filename=filename))

    return url


async def _oidc(app: web.Application) -> AsyncIterator[None]:
    await app[keys.OIDC].open()
    try:
        yield
    finally:
        await app[keys.OIDC].close()
