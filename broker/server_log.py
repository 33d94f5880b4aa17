"""aiohttp's server log, given to the node's HTTP server in place of its module logger (`aiohttp.server`).

aiohttp logs a request it cannot parse (a port scan, TLS spoken to the plain-HTTP port, random bytes) at ERROR with
a stack trace: "Error handling request" and BadStatusLine. That is the client's mistake, not the broker's, and a
client sending garbage would fill the log at the rate it sends. Here it becomes one INFO line in the broker's own
log (`action: bad_http_request`, the peer and the parser's reason) and a count in
`mesh_bad_http_requests_total`; anything else aiohttp reports goes on to `aiohttp.server` as before.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from broker.metrics import Metrics

log = logging.getLogger("broker.http")
#: The longest reason logged: the parser quotes the bytes it refused, and those are the client's to choose.
REASON_CHARS = 200


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp calls `exception(...)` (or `debug(...)` for a bad method on a connection's first request), both of
    which come through `log`; a parse error is told here, the rest passes through untouched."""

    def __init__(self, metrics: Metrics, logger: logging.Logger | None = None):
        super().__init__(logger or logging.getLogger("aiohttp.server"), {})
        self._metrics = metrics

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        failure = kwargs.get("exc_info")
        if isinstance(failure, HttpProcessingError):
            self._bad_request(failure, args)
            return
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return msg, kwargs  # the adapter has no fields of its own (the base would replace the caller's extra)

    def _bad_request(self, failure: HttpProcessingError, args: tuple[object, ...]) -> None:
        kind = type(failure).__name__
        self._metrics.bad_http_requests.labels(kind).inc()
        # aiohttp's message is "Error handling request from %s" with the peer's address as its one argument.
        peer = args[0] if args and isinstance(args[0], str) else None
        log.info(
            "bad HTTP request",
            extra={"action": "bad_http_request", "peer": peer, "reason": _one_line(kind, failure.message)},
        )


def _one_line(kind: str, message: object) -> str:
    text = " ".join(str(message).split())
    if len(text) > REASON_CHARS:
        text = text[:REASON_CHARS] + "..."
    return f"{kind}: {text}" if text else kind
