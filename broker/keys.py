"""Typed keys for what hangs off the Application and each Request (no global state)."""

from __future__ import annotations

import enum

from aiohttp import web

from broker.admission import Admission
from broker.arrivals import Arrivals
from broker.auth import Authenticator
from broker.blobs.protocol import BlobStore
from broker.budget import MemoryBudget
from broker.clock import Clock
from broker.demographics.protocol import Demographics
from broker.drain import Drain
from broker.gate import ConnectionGate
from broker.ids import RequestIds
from broker.metrics import Metrics
from broker.models import Mailbox
from broker.openapi import Description
from broker.pacing import Pacer
from broker.services.directory import Directory
from broker.services.housekeeping import Housekeeping
from broker.services.messaging import Messaging
from broker.services.readiness import Readiness
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
ARRIVALS = web.AppKey("arrivals", Arrivals)
DRAIN = web.AppKey("drain", Drain)
READINESS = web.AppKey("readiness", Readiness)
OPENAPI = web.AppKey("openapi", Description)
ADMISSION = web.AppKey("admission", Admission)
PACER = web.AppKey("pacer", Pacer)
GATE = web.AppKey("gate", ConnectionGate)


class Auth(enum.Enum):
    """How the auth middleware treats a route."""

    MAILBOX = "mailbox"  # an NHSMESH token for the {mailbox_id} in the path
    OPTIONAL = "optional"  # no token needed; one that is sent must be valid
    NONE = "none"


ROUTE_AUTH = web.AppKey("route_auth", dict[web.AbstractRoute, Auth])
#: Routes that move message bytes (send, chunk upload, download): per-mailbox transfer limits and pacing apply.
TRANSFER_ROUTES = web.AppKey("transfer_routes", frozenset[web.AbstractRoute])

MAILBOX = web.RequestKey("mailbox", Mailbox)
API_VERSION = web.RequestKey("api_version", int)
REQUEST_ID = web.RequestKey("request_id", str)
#: Why the broker cut a stalled transfer's connection ("idle" or "total"), if it did.
CUT_OFF = web.RequestKey("cut_off", str)
#: Set when the client went away before its answer was complete (counted as status class client_closed).
CLIENT_CLOSED = web.RequestKey("client_closed", bool)
REQUEST_IDS = web.AppKey("request_ids", RequestIds)
