"""Whether this node should be sent traffic (/readyz): not draining, and its database and blob store answering."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field

from broker.blobs.protocol import BlobNotFound, BlobStore
from broker.drain import Drain
from broker.store.protocol import MessageStore

log = logging.getLogger("broker.readiness")

#: Never issued (IDs have the live form yyyyMMddHHmmssffffff_XXXXXX), so the probe is a primary-key miss.
PROBE_MESSAGE_ID = "00000000000000000000_READYZ"
#: Never written (blob keys start with a date), so the probe is a lookup that finds nothing.
PROBE_BLOB_KEY = "readyz-probe"
#: Answers within this many seconds of a probe reuse it: /readyz needs no authentication, and whoever calls it
#: in a loop must not turn each call into a database query and an S3 request.
REUSE_SECONDS = 1.0
OK = "ok"


@dataclass(frozen=True, slots=True)
class Report:
    draining: bool
    #: Each dependency and what its probe found: "ok", or why it failed.
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return ["draining"] if self.draining else [name for name, found in self.checks.items() if found != OK]

    @property
    def ready(self) -> bool:
        return not self.failed


DRAINING = Report(draining=True)


class Readiness:
    """Probes the database (a primary-key lookup) and the blob store (a lookup of a key that is never written)
    side by side, each within `timeout` seconds; one probe at a time, its answer reused for REUSE_SECONDS."""

    def __init__(self, store: MessageStore, blobs: BlobStore, drain: Drain, *, timeout: float):
        self._store = store
        self._blobs = blobs
        self._drain = drain
        self._timeout = timeout
        self._last: Report | None = None
        self._last_at = 0.0
        self._probe: asyncio.Task[Report] | None = None

    async def check(self) -> Report:
        if self._drain.draining:
            return DRAINING
        loop = asyncio.get_running_loop()
        if self._last is not None and loop.time() - self._last_at < REUSE_SECONDS:
            return self._last
        if self._probe is None:
            self._probe = loop.create_task(self._run())
        # Shielded: a caller that hangs up does not cancel the probe the others are waiting for.
        return await asyncio.shield(self._probe)

    async def _run(self) -> Report:
        try:
            database, blob_store = await asyncio.gather(
                self._within("database", self._store.get_message(PROBE_MESSAGE_ID)),
                self._within("blob_store", self._blob_probe()),
            )
            report = Report(draining=False, checks={"database": database, "blob_store": blob_store})
            self._last, self._last_at = report, asyncio.get_running_loop().time()
            return report
        finally:
            self._probe = None

    async def _blob_probe(self) -> None:
        with contextlib.suppress(BlobNotFound):  # the store answered
            await self._blobs.size(PROBE_BLOB_KEY)

    async def _within(self, name: str, probe: Awaitable[object]) -> str:
        """OK, or why the probe failed; logged when the dependency changes state, not on every probe."""
        cause = ""
        try:
            async with asyncio.timeout(self._timeout):
                await probe
        except TimeoutError:
            found = cause = f"no answer within {self._timeout:g} s"
        except Exception as exc:
            # The body gets the class only: it is public, and a driver's message can name hosts and users.
            found, cause = f"failed: {type(exc).__name__}", f"{type(exc).__name__}: {exc}"
        else:
            found = OK
        was = self._last.checks.get(name, OK) if self._last is not None else OK
        if found != OK and was == OK:
            log.warning(
                "dependency not answering", extra={"action": "readiness_failed", "dependency": name, "cause": cause}
            )
        elif found == OK and was != OK:
            log.info("dependency answering again", extra={"action": "readiness_restored", "dependency": name})
        return found
