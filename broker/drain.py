"""A node's drain after SIGTERM: readiness fails, each answer closes its connection, requests in flight are counted
down until they have finished or the grace has run out (broker/serving.py runs the sequence)."""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler


class Drain:
    """Whether this node is draining, and how many requests it is handling. One per app."""

    def __init__(self) -> None:
        self._draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def begin(self) -> None:
        self._draining = True

    def enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        await self._idle.wait()

    @web.middleware
    async def track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The app's outermost middleware: counts the request while its handler runs."""
        self.enter()
        try:
            return await handler(request)
        finally:
            self.leave()

    async def close_connections(self, request: web.Request, response: web.StreamResponse) -> None:
        """on_response_prepare: while draining, every answer says `Connection: close` and ends its connection,
        so the client's next request opens a new one, which the load balancer sends to another node."""
        if self._draining:
            response.force_close()
            # aiohttp runs this hook after it has chosen the headers, so the client is told here.
            response.headers[hdrs.CONNECTION] = "close"
