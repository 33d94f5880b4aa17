"""One node of many doing a piece of work: a named lease row in the metadata store (LeaseStore), taken when free or
lapsed, renewed by its holder while it works, and given up on shutdown. Work that can be claimed row by row (expiry,
the purge, released blobs) needs none of this; a lease is for work that cannot, such as listing the blob store.

A lease is judged by the clock of the node that claims it, so the nodes' clocks must agree to well within a lease's
length (NTP does: seconds at worst, against minutes). A holder that stops without releasing (killed, partitioned)
keeps the lease until its time passes, and then the next node to claim it takes it over."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from datetime import timedelta

from broker.clock import Clock
from broker.store.protocol import LeaseStore, StoreError

log = logging.getLogger("broker.housekeeping")


def node_identity() -> str:
    """This process among the nodes sharing a store: host and process ID say where it runs (for an operator reading
    the lease row), and a random suffix keeps a restarted process on a recycled PID, or a container whose hostname
    and PID repeat, from renewing the lease of the process before it."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """A lease this node may hold: hold() before each piece of the work, release() when stopping."""

    def __init__(self, store: LeaseStore, name: str, holder: str, length: timedelta, clock: Clock):
        self._store = store
        self.name = name
        self.holder = holder
        self._length = length
        self._clock = clock
        self.held = False

    async def hold(self) -> bool:
        """Take the lease, or renew it for another length if this node has it; False while another node holds it.
        A renewal the store refuses means another node took the lease over after this one let it lapse."""
        now = self._clock.now()
        held = await self._store.claim_lease(self.name, self.holder, now + self._length, now)
        if held != self.held:
            action = "lease_taken" if held else "lease_lost"
            log.info(action.replace("_", " "), extra={"action": action, "lease": self.name, "holder": self.holder})
        self.held = held
        return held

    async def release(self) -> None:
        """Give the lease up if this node holds it, so another node takes the work over at its next pass instead of
        when the lease lapses. A store failure is logged, not raised: the lease then lapses on its own."""
        if not self.held:
            return
        self.held = False
        try:
            await self._store.release_lease(self.name, self.holder)
        except StoreError:
            log.warning(
                "lease not released; it lapses on its own",
                extra={"action": "lease_release_failed", "lease": self.name, "holder": self.holder},
            )
            return
        log.info("lease released", extra={"action": "lease_released", "lease": self.name, "holder": self.holder})
