"""Typed keys for what hangs off the Application and each Request (no global state)."""

from __future__ import annotations

import enum

from aiohttp import web

from broker.auth import Authenticator
from broker.blobs.protocol import BlobStore
from broker.budget import MemoryBudget
from broker.clock import Clock
from broker.demographics.protocol import Demographics
from broker.ids import RequestIds
from broker.metrics import Metrics
from broker.models import Mailbox
from broker.services.directory import Directory
from broker.services.housekeeping import Housekeeping
from broker.services.messaging import Messaging
from broker.services.reports import Reports
from broker.services.sandbox_admin import SandboxAdmin
from broker.settings import Settings
from broker.store.protocol import MetadataStore
from broker.transfer import Transfer

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
STORE = web.AppKey("store", MetadataStore)
BLOBS = web.AppKey("blobs", BlobStore)
BUDGET = web.AppKey("budget", MemoryBudget)
METRICS = web.AppKey("metrics", Metrics)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
DIRECTORY = web.AppKey("directory", Directory)
MESSAGING = web.AppKey("messaging", Messaging)
REPORTS = web.AppKey("reports", Reports)
SANDBOX_ADMIN = web.AppKey("sandbox_admin", SandboxAdmin)
HOUSEKEEPING = web.AppKey("housekeeping", Housekeeping)
DEMOGRAPHICS = web.AppKey("demographics", Demographics)
TRANSFER = web.AppKey("transfer", Transfer)


class Auth(enum.Enum):
    """How the auth middleware treats a route."""

    MAILBOX = "mailbox"  # an NHSMESH token for the {mailbox_id} in the path
    OPTIONAL = "optional"  # no token needed; one that is sent must be valid
    NONE = "none"


ROUTE_AUTH = web.AppKey("route_auth", dict[web.AbstractRoute, Auth])

MAILBOX = web.RequestKey("mailbox", Mailbox)
API_VERSION = web.RequestKey("api_version", int)
REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_IDS = web.AppKey("request_ids", RequestIds)
