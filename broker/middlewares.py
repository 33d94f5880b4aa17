"""Request middlewares, outermost first: metrics, then request id + error rendering, then authentication.

Errors are rendered outermost so that auth failures, validation failures and handler errors all leave in
the MESH v1 or v2 error shape the caller's Accept header asks for.
"""

from __future__ import annotations

import logging
import ssl
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from broker import headers, views
from broker.errors import BrokerError, ValidationFailed
from broker.keys import API_VERSION, AUTHENTICATOR, MAILBOX, METRICS, REQUEST_ID, REQUEST_IDS, ROUTE_AUTH, Auth
from broker.metrics import error_code_label

log = logging.getLogger("broker.http")


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Latency by route template (never the raw path, whose IDs would explode the label set)."""
    metrics = request.app[METRICS]
    metrics.requests_in_flight.inc()
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        metrics.requests_in_flight.dec()
        route = request.match_info.route.resource
        template = route.canonical if route is not None else "unmatched"
        metrics.request_duration.labels(template, request.method, f"{status // 100}xx").observe(
            time.perf_counter() - started
        )


@web.middleware
async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-ID") or request.app[REQUEST_IDS].next()
    request[REQUEST_ID] = request_id
    try:
        try:
            request[API_VERSION] = headers.api_version(request.headers.get("Accept"))
        except BrokerError as exc:
            return views.error(exc, headers.V1)
        return await handler(request)
    except BrokerError as exc:
        _count(request, exc)
        return views.error(exc, request[API_VERSION])
    except ValidationFailed as exc:
        return views.validation_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Unknown routes and methods answer in the sandbox's JSON shape, not aiohttp's text.
        response = views.json({"detail": exc.reason}, status=exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception(
            "unhandled error",
            extra={"action": "request_failed", "request_id": request_id, "path": request.path},
        )
        return views.internal_error(request_id)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    policy = request.app[ROUTE_AUTH].get(request.match_info.route, Auth.NONE)
    if policy is Auth.NONE:
        return await handler(request)
    authorization = request.headers.get("Authorization")
    if policy is Auth.OPTIONAL and not authorization:
        return await handler(request)
    path_mailbox = request.match_info.get("mailbox_id")
    request[MAILBOX] = await request.app[AUTHENTICATOR].authenticate(
        authorization,
        None if path_mailbox is None else path_mailbox.strip().upper(),
        _peer_certificate(request),
    )
    return await handler(request)


def _count(request: web.Request, exc: BrokerError) -> None:
    metrics = request.app[METRICS]
    spec = exc.code.spec
    metrics.errors.labels(str(spec.status), error_code_label(exc)).inc()
    if exc.code.name.startswith("AUTH_"):
        metrics.auth_failures.labels(exc.code.name.removeprefix("AUTH_").lower()).inc()


def _peer_certificate(request: web.Request) -> dict[str, object] | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    return ssl_object.getpeercert()  # type: ignore[return-value]
