"""Request middlewares, outermost first: `observe` (metrics, request id and error rendering), then `authenticate`
(the NHSMESH token, with the node's per-mailbox limits: request rate and transfers in progress, and for a transfer the
watch on its pace).

Errors are rendered outermost so that auth failures, validation failures and handler errors all leave in
the MESH v1 or v2 error shape the caller's Accept header asks for. Each middleware is one more coroutine and call
per request, so what used to be five layers is two (with the drain's count, broker/drain.py, three): folded, the
stack's own cost per request fell by about a quarter (medians 22-25 against 18 microseconds on the loaded machine;
benchmarks/README.md, 2026-12-01 session 2).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import traceback
from collections.abc import Callable

from aiohttp import web
from aiohttp.streams import EofStream
from aiohttp.typedefs import Handler

from broker import headers, views
from broker.blobs.protocol import BlobError, BlobNotFound, BlobStoreFull
from broker.errors import BrokerError, ErrorCode, ValidationFailed
from broker.handlers.common import check_url_text
from broker.keys import (
    ADMISSION,
    API_VERSION,
    AUTHENTICATOR,
    CLIENT_CLOSED,
    CUT_OFF,
    MAILBOX,
    METRICS,
    PACER,
    REQUEST_ID,
    REQUEST_IDS,
    ROUTE_AUTH,
    TRANSFER_ROUTES,
    Auth,
)
from broker.metrics import error_code_label
from broker.models import Mailbox
from broker.store.protocol import StoreError, StoreUnavailable
from broker.transfer import DOWNLOAD_ABORTED

log = logging.getLogger("broker.http")


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Latency by route template (never the raw path, whose IDs would explode the label set), around the request
    id and the rendering of every error as a MESH error body."""
    # Both marks set now, so _status_class reads them: a key missing from a request is a KeyError raised and caught
    # inside the Mapping ABC's get and `in` (about 3 microseconds each, on every request).
    request[CLIENT_CLOSED] = False
    request[DOWNLOAD_ABORTED] = ""
    metrics = request.app[METRICS]
    metrics.requests_in_flight.inc()
    started = time.perf_counter()
    status_class = "5xx"
    try:
        request_id = headers.request_id(request.headers.get("X-Request-ID")) or request.app[REQUEST_IDS].next()
        request[REQUEST_ID] = request_id
        response: web.StreamResponse
        try:
            request[API_VERSION] = headers.api_version(request.headers.get("Accept"))
        except BrokerError as exc:
            response = views.error(exc, headers.V1)
        else:
            try:
                check_url_text(request)
                response = await handler(request)
            except Exception as exc:
                response = _rendered(request, exc, request_id)
        status_class = _status_class(request, response)
        return response
    except asyncio.CancelledError:
        # aiohttp cancels the handler of a client that went away (when handler_cancellation is on).
        if _transport_gone(request):
            _client_closed(request, "CancelledError")
            status_class = CLIENT_CLOSED_CLASS
        raise
    finally:
        metrics.requests_in_flight.dec()
        metrics.observe_request(_template(request), request.method, status_class, time.perf_counter() - started)


def _rendered(request: web.Request, exc: Exception, request_id: str) -> web.StreamResponse:
    """The answer to a request whose handling raised `exc`; an HTTP exception below 400 (a redirect) goes on up."""
    if isinstance(exc, BrokerError):
        _count(request, exc)
        if exc.code is ErrorCode.REQUEST_TIMEOUT:
            # A stalled upload's frames hold its pipeline (generators, the store's buffer) in a cycle with the
            # exception: cleared, they go now rather than at the next full garbage collection.
            traceback.clear_frames(exc.__traceback__)
        return views.error(exc, request[API_VERSION])
    if isinstance(exc, ValidationFailed):
        return views.validation_error(exc)
    if isinstance(exc, StoreError | BlobError):
        code = _unavailable(exc)
        if code is None:
            where = {"request_id": request_id, "path": request.path}
            log.exception("unhandled error", extra={"action": "request_failed", **where})
            return views.internal_error(request_id)
        # No stack trace: while a dependency is down every request lands here, and the cause is one line.
        where = {"request_id": request_id, "path": request.path, "cause": str(exc)}
        log.warning("dependency unavailable", extra={"action": "dependency_unavailable", **where})
        error = BrokerError(code)
        _count(request, error)
        return views.error(error, request[API_VERSION])
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        # Unknown routes and methods answer in the sandbox's JSON shape, not aiohttp's text.
        response = views.json({"detail": exc.reason}, status=exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    if isinstance(exc, CLIENT_GONE) and _transport_gone(request):
        _client_closed(request, type(exc).__name__)
        # The frames it passed through hold what the transfer held (open files, buffers, generators) in a cycle
        # with the exception: cleared, all of it goes now, not at the next full garbage collection.
        traceback.clear_frames(exc.__traceback__)
        # Nobody will read it: aiohttp's attempt to send it fails quietly on the closed connection.
        return web.Response(status=499, reason="Client Closed Request")
    log.exception(
        "unhandled error",
        extra={"action": "request_failed", "request_id": request_id, "path": request.path},
    )
    return views.internal_error(request_id)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    transfer = route in request.app[TRANSFER_ROUTES]
    policy = request.app[ROUTE_AUTH].get(route, Auth.NONE)
    if policy is Auth.NONE:
        return await (_paced(request, handler) if transfer else handler(request))
    authorization = request.headers.get("Authorization")
    if policy is Auth.OPTIONAL and not authorization:
        return await (_paced(request, handler) if transfer else handler(request))
    path_mailbox = request.match_info.get("mailbox_id")
    give_back: list[Callable[[], None]] = []

    def admit(mailbox: Mailbox) -> None:
        # The node's limits for the proven mailbox (broker/admission.py), before its token is spent.
        give_back.append(request.app[ADMISSION].admit(mailbox.mailbox_id, transfer=transfer))

    try:
        request[MAILBOX] = await request.app[AUTHENTICATOR].authenticate(
            authorization,
            None if path_mailbox is None else path_mailbox.strip().upper(),
            _peer_certificate(request),
            admit=admit,
        )
        # After authentication, as the sandbox checks headers: a stranger learns nothing but 403.
        headers.check_text(request.headers)
        return await (_paced(request, handler) if transfer else handler(request))
    finally:
        for release in give_back:
            release()


async def _paced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A transfer's answer watched as it leaves (broker/pacing.py): a client that stops taking it is cut off."""
    with request.app[PACER].watch(request) as watch:
        try:
            return await handler(request)
        finally:
            if watch.cut is not None:
                request[CUT_OFF] = watch.cut


#: The status class of a request whose client went away, or stalled and was cut off, before its answer was complete.
CLIENT_CLOSED_CLASS = "client_closed"
#: What a handler sees when its client has gone: a read or write on the closed connection fails with one of these.
CLIENT_GONE = (ConnectionError, EofStream, web.RequestPayloadError)


def _status_class(request: web.Request, response: web.StreamResponse) -> str:
    """A client gone before its answer is not a server error: its own class, which no 5xx alert counts. Nor is an
    upload answered 408 because its client stalled: the same class keeps its wait out of the latency KPIs. A download
    the broker cut (its status already sent) is the broker's failure, whatever that status said."""
    if request[CLIENT_CLOSED] or response.status == 408:
        return CLIENT_CLOSED_CLASS
    if request[DOWNLOAD_ABORTED]:
        return "5xx"
    return f"{response.status // 100}xx"


def _transport_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _template(request: web.Request) -> str:
    route = request.match_info.route.resource
    return route.canonical if route is not None else "unmatched"


def _client_closed(request: web.Request, cause: str) -> None:
    """Mark the request as ended by its client and log it once, at INFO, with what moved: a client's network
    trouble is no fault of the broker's, and needs no stack trace."""
    request[CLIENT_CLOSED] = True
    if CUT_OFF in request:
        return  # the broker cut it for stalling, and broker/pacing.py has logged why
    log.info(
        "client closed the connection",
        extra={
            "action": "client_closed",
            "request_id": request.get(REQUEST_ID),
            "route": _template(request),
            "method": request.method,
            "bytes_received": request.content.total_bytes,
            "bytes_sent": request.writer.output_size,
            "cause": cause,
        },
    )


def _unavailable(exc: StoreError | BlobError) -> ErrorCode | None:
    """The 503 a storage failure answers (Retry-After: the client repeats the request later), or None for a fault of
    ours and no outage: a blob missing under a row that points at it, a store error other than StoreUnavailable."""
    if isinstance(exc, BlobNotFound):
        return None
    if isinstance(exc, BlobStoreFull):
        return ErrorCode.STORAGE_FULL
    if isinstance(exc, BlobError):
        return ErrorCode.BLOB_STORE_UNAVAILABLE
    if isinstance(exc, StoreUnavailable):
        return ErrorCode.STORE_UNAVAILABLE
    return None


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
