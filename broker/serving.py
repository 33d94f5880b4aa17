"""Run one node until SIGTERM or SIGINT, then shut it down gracefully.

The sequence: readiness fails at once (/readyz 503 "draining"); the listening socket closes, so new connections
are refused; requests in flight finish, each answer closing its connection, for up to MESH_SHUTDOWN_GRACE_SECONDS
(a second signal cuts the wait short); aiohttp then closes the connections, cancelling any handler still running;
last, the app's cleanup stops the background tasks and closes the stores, the embedded SQLite store committing
every write already queued. aiohttp's own run_app would close idle keep-alive connections and stop answering at
the first signal, so it is not used.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from broker.gate import GatedSite
from broker.keys import DRAIN, GATE, METRICS
from broker.server_log import ServerLog
from broker.settings import Settings

log = logging.getLogger("broker")

#: The most of the grace kept back for aiohttp to finish writing answers whose handlers have returned, and then
#: to cancel any handler still running (it waits up to this long for each step).
FINAL_WRITES_SECONDS = 1.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def serve(
    app: web.Application,
    settings: Settings,
    ssl_context: ssl.SSLContext | None,
    *,
    tls_beside_plain: ssl.SSLContext | None = None,
) -> None:
    """Serve app on MESH_HOST:MESH_PORT until a signal, then drain and close; returns when the node is down.
    ssl_context: TLS only; tls_beside_plain: TLS or plain HTTP, as each connection begins (demo mode)."""
    grace = settings.shutdown_grace_seconds
    final = min(FINAL_WRITES_SECONDS, grace / 4)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    runner = make_runner(app, shutdown_timeout=final)
    try:
        await runner.setup()  # opens the stores (the app's cleanup_ctx)
        try:
            # Connections pass the node's limits first (broker/gate.py: MESH_MAX_CONNECTIONS and per address).
            site = GatedSite(
                runner,
                app[GATE],
                settings.host,
                settings.port,
                ssl_context=ssl_context,
                tls_beside_plain=tls_beside_plain,
                silence_seconds=settings.header_timeout_seconds,
            )
            if not stop.is_set():  # a signal during start-up: close again without listening
                await site.start()
                await stop.wait()
                stop.clear()
                await drain(app, site, grace - 2 * final, interrupt=stop)
        finally:
            await runner.cleanup()
    finally:
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)
    log.info("broker stopped", extra={"action": "shutdown_complete"})


def make_runner(app: web.Application, *, shutdown_timeout: float) -> web.AppRunner:
    """The node's runner: no access log (the broker logs its own events), aiohttp's server log through ServerLog
    (a request that is not HTTP is one INFO line, not a stack trace), no signal handling of its own."""
    return web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        logger=ServerLog(app[METRICS]),
    )


async def drain(app: web.Application, site: web.BaseSite, budget: float, *, interrupt: asyncio.Event) -> None:
    """Fail readiness, stop listening, and wait up to budget seconds (or until interrupt) for requests in flight."""
    requests = app[DRAIN]
    requests.begin()
    # No await between begin() and here: readiness says "draining" before the socket closes, never after.
    await site.stop()
    log.info(
        "draining",
        extra={"action": "shutdown_started", "in_flight": requests.in_flight, "grace_seconds": budget},
    )
    idle = asyncio.ensure_future(requests.wait_idle())
    interrupted = asyncio.ensure_future(interrupt.wait())
    await asyncio.wait((idle, interrupted), timeout=budget, return_when=asyncio.FIRST_COMPLETED)
    for waiter in (idle, interrupted):
        waiter.cancel()
    if requests.in_flight:
        log.warning(
            "requests cut short",
            extra={
                "action": "shutdown_deadline",
                "in_flight": requests.in_flight,
                "reason": "second signal" if interrupt.is_set() else "grace over",
            },
        )
    else:
        log.info("requests finished", extra={"action": "shutdown_drained"})
