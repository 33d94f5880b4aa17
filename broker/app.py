"""The app factory: builds one broker node's Application from Settings, opening and closing its resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from broker import backends, middlewares, routes
from broker.auth import Authenticator
from broker.blobs.metered import MeteredBlobStore
from broker.blobs.protocol import BlobStore
from broker.budget import MemoryBudget
from broker.clock import SYSTEM_CLOCK, Clock
from broker.ids import RequestIds
from broker.keys import (
    AUTHENTICATOR,
    BLOBS,
    BUDGET,
    CLOCK,
    DEMOGRAPHICS,
    DIRECTORY,
    HOUSEKEEPING,
    MESSAGING,
    METRICS,
    REPORTS,
    REQUEST_IDS,
    SANDBOX_ADMIN,
    SETTINGS,
    STORE,
    TRANSFER,
)
from broker.metrics import Metrics
from broker.services.directory import Directory
from broker.services.housekeeping import Housekeeping
from broker.services.messaging import Messaging
from broker.services.reports import Reports
from broker.services.routing import GpRouting
from broker.services.sandbox_admin import SandboxAdmin
from broker.settings import Settings
from broker.store.protocol import MetadataStore
from broker.transfer import Transfer

log = logging.getLogger("broker.app")

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
    app = web.Application(
        middlewares=[middlewares.observe, middlewares.render_errors, middlewares.authenticate],
        client_max_size=1024 * 1024,
        # Chunks are stored exactly as sent: a gzip chunk stays gzip, to be served as-is or decoded on download.
        handler_args={"auto_decompress": False},
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock = clock if clock is not None else SYSTEM_CLOCK
    app[REQUEST_IDS] = RequestIds()
    app[STORE] = store if store is not None else backends.metadata_store(settings)
    app[METRICS] = Metrics(workflow_label_limit=settings.metrics_workflow_labels)
    inner_blobs = blobs if blobs is not None else backends.blob_store(settings)
    app[BLOBS] = MeteredBlobStore(inner_blobs, app[METRICS], backend=type(inner_blobs).__name__)
    expiry = settings.inbox_expiry
    app[BUDGET] = MemoryBudget(settings.transfer_memory_bytes)
    app[TRANSFER] = Transfer(app[BLOBS], app[BUDGET], app[METRICS])
    app[AUTHENTICATOR] = Authenticator(
        app[STORE],
        shared_key,
        clock_skew=timedelta(seconds=settings.auth_clock_skew_seconds),
        client_cert_mode=settings.tls_client_cert,
        clock=clock,
    )
    app[DIRECTORY] = Directory(app[STORE], clock=clock)
    app[DEMOGRAPHICS] = backends.demographics(settings, app[STORE], clock)
    app[REPORTS] = Reports(app[STORE], inbox_expiry=expiry, clock=clock)
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
    )
    routes.register(app, sandbox_admin=settings.sandbox_admin, metrics=not settings.metrics_port)
    app.cleanup_ctx.append(_storage)
    app.cleanup_ctx.append(_demographics)
    app.cleanup_ctx.append(_background)
    if settings.metrics_port:
        app.cleanup_ctx.append(_metrics_port)
    return app


async def _metrics_port(app: web.Application) -> AsyncIterator[None]:
    """/metrics on a plain-HTTP port of its own: Prometheus can scrape a node whose MESH port demands a mailbox's
    client certificate, and the MESH port stops telling anyone who asks about workflows and volumes."""
    settings = app[SETTINGS]
    side = web.Application()
    side[METRICS] = app[METRICS]
    routes.register_metrics_only(side)
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
