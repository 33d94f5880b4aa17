"""The whole URL table: the MESH API on one screen, with how each route authenticates."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from broker.handlers import admin, inbox, lookup, ops, outbox, rich, tracking
from broker.keys import ROUTE_AUTH, TRANSFER_ROUTES, Auth

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    auth: Auth = Auth.MAILBOX
    #: Moves message bytes: counts against the mailbox's MESH_MAX_TRANSFERS_PER_MAILBOX, its body paced.
    transfer: bool = False


MX = "/messageexchange"
MB = MX + "/{mailbox_id}"
#: The web page for people: a sub-application with its own table (broker/ui/routes.py), mounted by the app factory.
UI = "/ui"
#: Prometheus text: on the metrics port (MESH_METRICS_PORT), and on the MESH port only with MESH_METRICS_ON_MESH_PORT.
METRICS = Route("GET", "/metrics", ops.metrics, Auth.NONE)
#: The orchestrator's probes: ready for traffic (database and blob store answering, not draining), and alive.
READYZ = Route("GET", "/readyz", ops.readyz, Auth.NONE)
LIVEZ = Route("GET", "/livez", ops.livez, Auth.NONE)
#: The metrics port: for Prometheus and probes (plain HTTP, so a kubelet needs no mailbox's client certificate).
OPS_PORT = (METRICS, READYZ, LIVEZ)
# Literal segments ("rich", "tracking", "status") are declared before the {message_id} routes they shadow.
API = (
    Route("GET", MX + "/_ping", ops.ping, Auth.NONE),
    Route("GET", MX + "/deepping", ops.ping, Auth.NONE),
    Route("GET", "/_ping", ops.ping, Auth.NONE),
    Route("GET", "/_status", ops.ping, Auth.NONE),
    Route("GET", "/health", ops.ping, Auth.NONE),
    Route("GET", "/healthcheck", ops.ping, Auth.NONE),
    READYZ,
    LIVEZ,
    METRICS,
    # This table as OpenAPI 3.1 (broker/openapi.yaml; tests/openapi keeps the two in step).
    Route("GET", "/openapi.json", ops.openapi, Auth.NONE),
    Route("GET", MX + "/endpointlookup/{ods_code}/{workflow_id}", lookup.endpoint_lookup, Auth.OPTIONAL),
    Route("GET", MX + "/workflowsearch/{workflow_id}", lookup.workflow_search, Auth.OPTIONAL),
    Route("GET", MB, inbox.handshake),
    Route("POST", MB, inbox.handshake),
    Route("POST", MB + "/update", ops.update),
    Route("GET", MB + "/count", inbox.count),
    Route("GET", MB + "/inbox", inbox.list_inbox),
    Route("GET", MB + "/inbox/rich", rich.inbox),
    Route("HEAD", MB + "/inbox/{message_id}", inbox.head),
    Route("GET", MB + "/inbox/{message_id}", inbox.download, transfer=True),
    Route("GET", MB + "/inbox/{message_id}/{chunk_number:\\d+}", inbox.download, transfer=True),
    Route("PUT", MB + "/inbox/{message_id}/status/acknowledged", inbox.acknowledge),
    Route("POST", MB + "/outbox", outbox.send, transfer=True),
    Route("GET", MB + "/outbox/tracking", tracking.by_message_id),
    Route("GET", MB + "/outbox/tracking/{local_id}", tracking.by_local_id),
    Route("GET", MB + "/outbox/rich", rich.outbox),
    Route("POST", MB + "/outbox/{message_id}/{chunk_number:\\d+}", outbox.upload_chunk, transfer=True),
)

# mesh-sandbox's admin and test endpoints (mesh-api.md section 9.4), only with MESH_SANDBOX_ADMIN=on.
_ADMIN_PATHS = (
    ("DELETE", "/admin/reset", admin.reset_all),
    ("DELETE", "/admin/reset/{mailbox_id}", admin.reset_mailbox),
    ("POST", "/admin/message/{message_id}/event", admin.append_event),
    ("GET", "/admin/mailbox/{mailbox_id}", admin.mailbox_details),
    ("GET", "/admin/message/{message_id}", admin.message_details),
)
SANDBOX_ADMIN = (
    *(
        Route(method, prefix + path, handler, Auth.NONE)
        for prefix in ("", MX)
        for method, path, handler in _ADMIN_PATHS
    ),
    Route("POST", MX + "/admin/report", admin.inject_report, Auth.NONE),
    Route("GET", MX + "/mailbox/{mailbox_id}", admin.mailbox_details, Auth.NONE),
)


def register(app: web.Application, *, sandbox_admin: bool, metrics: bool) -> None:
    """Add the routes and record each one's auth policy for the auth middleware; /metrics only when asked for
    (it is unauthenticated; register_ops_port serves it on a port of its own)."""
    policies: dict[web.AbstractRoute, Auth] = {}
    transfers: set[web.AbstractRoute] = set()
    routes = API + SANDBOX_ADMIN if sandbox_admin else API
    if not metrics:
        routes = tuple(route for route in routes if route is not METRICS)
    # Admin routes go first so /messageexchange/admin/... and /messageexchange/mailbox/... are not taken
    # for a mailbox handshake.
    ordered = sorted(routes, key=lambda r: 0 if r in SANDBOX_ADMIN else 1)
    for route in ordered:
        registered = app.router.add_route(route.method, route.path, route.handler)
        policies[registered] = route.auth
        if route.transfer:
            transfers.add(registered)
    app[ROUTE_AUTH] = policies
    app[TRANSFER_ROUTES] = frozenset(transfers)


def register_ops_port(app: web.Application) -> None:
    """The metrics port's app: /metrics and the probes, nothing else, no MESH auth (for Prometheus and the
    orchestrator, not mailboxes)."""
    for route in OPS_PORT:
        app.router.add_route(route.method, route.path, route.handler)
