"""The app factory: builds one broker node's Application from Settings, opening and closing its resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from broker import backends, middlewares, openapi, routes
from broker.admission import Admission
from broker.arrivals import Arrivals
from broker.auth import Authenticator
from broker.blobs.metered import MeteredBlobStore
from broker.blobs.protocol import BlobStore
from broker.budget import MemoryBudget
from broker.clock import SYSTEM_CLOCK, Clock
from broker.drain import Drain
from broker.gate import ConnectionGate
from broker.ids import RequestIds
from broker.keys import (
    ADMISSION,
    ARRIVALS,
    AUTHENTICATOR,
    BLOBS,
    BUDGET,
    CLOCK,
    DEMOGRAPHICS,
    DIRECTORY,
    DRAIN,
    GATE,
    HOUSEKEEPING,
    MESSAGING,
    METRICS,
    OPENAPI,
    PACER,
    READINESS,
    REPORTS,
    REQUEST_IDS,
    SANDBOX_ADMIN,
    SETTINGS,
    STORE,
    TRANSFER,
)
from broker.metrics import Metrics
from broker.mtls import CertificateBinding
from broker.pacing import Pace, Pacer
from broker.services.directory import Directory
from broker.services.housekeeping import Housekeeping
from broker.services.messaging import Messaging
from broker.services.readiness import Readiness
from broker.services.reports import Reports
from broker.services.routing import GpRouting
from broker.services.sandbox_admin import SandboxAdmin
from broker.settings import Settings
from broker.store.protocol import MetadataStore
from broker.transfer import Transfer
from broker.ui.app import create_ui_app

log = logging.getLogger("broker.app")

#: aiohttp's lingering time: how long the unread rest of a body is read and dropped after an early answer.
LINGER_SECONDS = 10.0
#: How often the inbox depth and pool gauges are refreshed from the store.
METRICS_SAMPLE_SECONDS = 15.0


def create_app(
    settings: Settings,
    *,
    store: MetadataStore | None = None,
    blobs: BlobStore | None = None,
    clock: Clock | None = None,
) -> web.Application:
    """A broker node. Stores passed in are opened and closed by the app all the same; a clock passed in
    (tests pass a ManualClock) is the only source of time for every service."""
    shared_key = settings.effective_shared_key  # fail now, not on the first request
    drain = Drain()
    app = web.Application(
        # drain.track first: a request counts as in flight for the whole of its handling.
        middlewares=[
            drain.track,
            middlewares.observe,
            middlewares.authenticate,
        ],
        client_max_size=1024 * 1024,
        handler_args={
            # Chunks are stored exactly as sent: a gzip chunk stays gzip, to be served as-is or decoded on download.
            "auto_decompress": False,
            # aiohttp closes a connection that has no whole request head this long after it opened or its last
            # answer: the header timeout and the keep-alive timeout in one.
            "keepalive_timeout": settings.header_timeout_seconds,
            # After an answer sent before its body was read (an error), the rest is read and dropped this long so
            # the client sees the answer rather than a reset; a stalled body gets no longer than the idle timeout.
            "lingering_time": min(LINGER_SECONDS, settings.body_idle_timeout_seconds),
        },
    )
    app[SETTINGS] = settings
    app[DRAIN] = drain
    app.on_response_prepare.append(drain.close_connections)
    app[CLOCK] = clock = clock if clock is not None else SYSTEM_CLOCK
    app[REQUEST_IDS] = RequestIds()
    app[STORE] = store if store is not None else backends.metadata_store(settings)
    app[METRICS] = Metrics(workflow_label_limit=settings.metrics_workflow_labels)
    inner_blobs = blobs if blobs is not None else backends.blob_store(settings)
    app[BLOBS] = MeteredBlobStore(inner_blobs, app[METRICS], backend=type(inner_blobs).__name__)
    expiry = settings.inbox_expiry
    app[BUDGET] = MemoryBudget(settings.transfer_memory_bytes)
    app[TRANSFER] = Transfer(app[BLOBS], app[BUDGET], app[METRICS])
    _limits(app, settings)
    app[OPENAPI] = openapi.Description()
    app[AUTHENTICATOR] = Authenticator(
        app[STORE],
        shared_key,
        clock_skew=timedelta(seconds=settings.auth_clock_skew_seconds),
        certificates=CertificateBinding.from_settings(settings),
        clock=clock,
    )
    app[DIRECTORY] = Directory(app[STORE], clock=clock)
    app[DEMOGRAPHICS] = backends.demographics(settings, app[STORE], clock)
    app[REPORTS] = Reports(app[STORE], inbox_expiry=expiry, clock=clock)
    # Long polls end within a second of a drain beginning (or at once on shutdown), never holding it up.
    app[ARRIVALS] = Arrivals(poll_seconds=settings.inbox_wait_poll_seconds, stopping=lambda: drain.draining)
    app[MESSAGING] = Messaging(
        app[STORE],
        app[BLOBS],
        app[DIRECTORY],
        max_request_bytes=settings.max_request_bytes,
        max_message_bytes=settings.max_message_bytes,
        max_chunks=settings.max_chunks,
        inline_chunk_bytes=settings.inline_chunk_bytes,
        budget=app[BUDGET],
        metrics=app[METRICS],
        inbox_expiry=expiry,
        rich_window=settings.retention,
        clock=clock,
        routing=GpRouting(app[STORE], app[DEMOGRAPHICS]),
        reports=app[REPORTS],
        arrivals=app[ARRIVALS],
    )
    app[SANDBOX_ADMIN] = SandboxAdmin(app[STORE], app[REPORTS], clock=clock)
    app[HOUSEKEEPING] = Housekeeping(
        app[STORE],
        app[BLOBS],
        app[REPORTS],
        metrics=app[METRICS],
        retention=settings.retention,
        upload_timeout=settings.upload_timeout,
        orphan_grace=settings.orphan_grace,
        clock=clock,
        # The leftover sweep's lease outlives one missed pass, then another node takes the sweep over.
        lease=2 * settings.housekeeping_interval,
    )
    # The probes look at the store behind the metering: a probe every few seconds is not blob-store traffic.
    app[READINESS] = Readiness(app[STORE], inner_blobs, drain, timeout=settings.readiness_timeout_seconds)
    routes.register(app, sandbox_admin=settings.sandbox_admin, metrics=settings.metrics_on_mesh_port)
    if settings.ui:
        app.add_subapp(routes.UI, create_ui_app(app))
    app.cleanup_ctx.append(_storage)
    app.cleanup_ctx.append(_demographics)
    app.cleanup_ctx.append(_background)
    app.cleanup_ctx.append(_arrivals)
    app.on_shutdown.append(_stop_waiting)
    if settings.metrics_port:
        app.cleanup_ctx.append(_metrics_port)
    return app


def _limits(app: web.Application, settings: Settings) -> None:
    """The node's limits (docs/production.md, "Timeouts and limits"): per-mailbox admission, the pace of transfers'
    bytes, the connection gate `serve` listens through, and the memory budget's gauges."""
    metrics = app[METRICS]
    app[ADMISSION] = Admission(
        metrics,
        rate_per_second=settings.rate_limit_per_second,
        burst=settings.rate_limit_burst,
        max_transfers=settings.max_transfers_per_mailbox,
    )
    pace = Pace(
        idle=settings.body_idle_timeout_seconds,
        floor=settings.request_time_floor_seconds,
        per_mb=settings.request_seconds_per_mb,
    )
    app[PACER] = Pacer(pace, metrics, largest_body=settings.max_request_bytes)
    app[GATE] = ConnectionGate(
        metrics, max_connections=settings.max_connections, max_per_address=settings.max_connections_per_address
    )
    budget = app[BUDGET]
    metrics.transfer_memory_budget.set(budget.total)
    metrics.transfer_memory_in_use.set_function(lambda: budget.total - budget.available)


async def _metrics_port(app: web.Application) -> AsyncIterator[None]:
    """/metrics, /readyz and /livez on a plain-HTTP port of their own: Prometheus and a kubelet can reach a node
    whose MESH port demands a mailbox's client certificate, and the MESH port tells nobody about workflows and
    volumes. It listens until the drain is over (its cleanup runs first), so a draining node is seen draining here."""
    settings = app[SETTINGS]
    side = web.Application()
    side[METRICS] = app[METRICS]
    side[READINESS] = app[READINESS]
    routes.register_ops_port(side)
    runner = web.AppRunner(side, access_log=None)
    await runner.setup()
    try:
        host = settings.metrics_host or settings.host
        await web.TCPSite(runner, host, settings.metrics_port).start()
        log.info(
            "metrics listening",
            extra={"action": "metrics_started", "url": f"http://{host}:{settings.metrics_port}/metrics"},
        )
        yield
    finally:
        await runner.cleanup()


async def _storage(app: web.Application) -> AsyncIterator[None]:
    await app[STORE].open()
    try:
        await app[BLOBS].open()
        try:
            if app[SETTINGS].demo:
                await app[DIRECTORY].seed_demo()
            yield
        finally:
            await app[BLOBS].close()
    finally:
        await app[STORE].close()


async def _demographics(app: web.Application) -> AsyncIterator[None]:
    await app[DEMOGRAPHICS].open()
    try:
        yield
    finally:
        await app[DEMOGRAPHICS].close()


async def _arrivals(app: web.Application) -> AsyncIterator[None]:
    """On PostgreSQL, hear of every node's arrivals (LISTEN mesh_inbox) to wake this node's long polls."""
    listener = backends.arrivals_listener(app[SETTINGS], app[ARRIVALS].notify)
    if listener is not None:
        await listener.start()
        app[ARRIVALS].hear_from(lambda: listener.listening)
    try:
        yield
    finally:
        app[ARRIVALS].close()
        if listener is not None:
            await listener.stop()


async def _stop_waiting(app: web.Application) -> None:
    app[ARRIVALS].close()


async def _background(app: web.Application) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(app[HOUSEKEEPING].run_forever(app[SETTINGS].housekeeping_interval.total_seconds())),
        asyncio.create_task(app[HOUSEKEEPING].sample_forever(app[METRICS], METRICS_SAMPLE_SECONDS)),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await app[HOUSEKEEPING].release()  # the store is still open: _storage's cleanup runs after this one
