"""Typed keys for what hangs off the web page's sub-application and each of its requests."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from broker.clock import Clock
from broker.services.directory import Directory
from broker.services.messaging import Messaging
from broker.store.protocol import WebSession
from broker.transfer import Transfer
from broker.ui.config import UiConfig
from broker.ui.metrics import UiMetrics
from broker.ui.oidc import OidcClient
from broker.ui.sessions import WebSessions

CONFIG = web.AppKey("ui_config", UiConfig)
SESSIONS = web.AppKey("ui_sessions", WebSessions)
UI_METRICS = web.AppKey("ui_metrics", UiMetrics)
OIDC = web.AppKey("ui_oidc", OidcClient)
OIDC_USERS = web.AppKey("ui_oidc_users", dict[str, tuple[str, ...]])
#: The broker's own services, handed over by the app factory (the page adds no rules of its own).
MESSAGING = web.AppKey("ui_messaging", Messaging)
DIRECTORY = web.AppKey("ui_directory", Directory)
TRANSFER = web.AppKey("ui_transfer", Transfer)
CLOCK = web.AppKey("ui_clock", Clock)
#: The route's action name for the request log (broker/ui/routes.py).
ACTIONS = web.AppKey("ui_actions", dict[web.AbstractRoute, str])

SESSION = web.RequestKey("ui_session", WebSession)
ADDRESS = web.RequestKey("ui_address", str)
#: What a handler adds to its request's log line (a message ID, an outcome); never file contents or names.
LOG = web.RequestKey("ui_log", dict[str, Any])
#: Close the connection after this answer: the rest of the request was too much to read.
CLOSE = web.RequestKey("ui_close", bool)
