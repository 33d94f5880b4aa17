"""Per-mailbox admission on one node: a token bucket for the request rate and a cap on transfers in progress."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from broker.errors import BrokerError, ErrorCode
from broker.metrics import Metrics


class TokenBuckets:
    """One token bucket per key: `rate` tokens a second, holding at most `burst`; a request takes one token.

    A bucket is only a level and a time, brought up to date when its key next asks, so an idle mailbox costs
    nothing between requests; buckets that have filled up again are forgotten once there are many of them.
    """

    #: Past this many buckets, a take() first forgets the full ones (they hold nothing a new bucket would not).
    PRUNE_AT = 10_000

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0.0 if key had a token (now taken); else the seconds until it will have one (nothing taken)."""
        now = self._clock()
        if len(self._buckets) >= self.PRUNE_AT:
            self._prune(now)
        level, at = self._buckets.get(key, (self._burst, now))
        level = min(self._burst, level + (now - at) * self._rate)
        if level >= 1.0:
            self._buckets[key] = (level - 1.0, now)
            return 0.0
        self._buckets[key] = (level, now)
        return (1.0 - level) / self._rate

    def _prune(self, now: float) -> None:
        self._buckets = {
            key: (level, at)
            for key, (level, at) in self._buckets.items()
            if level + (now - at) * self._rate < self._burst
        }


class TransferSlots:
    """How many transfers each key has in progress, refusing one past `limit` (0: no limit)."""

    def __init__(self, limit: int):
        self._limit = limit
        self._held: dict[str, int] = {}

    def in_progress(self, key: str) -> int:
        return self._held.get(key, 0)

    def try_take(self, key: str) -> bool:
        held = self._held.get(key, 0)
        if self._limit and held >= self._limit:
            return False
        self._held[key] = held + 1
        return True

    def give_back(self, key: str) -> None:
        held = self._held[key] - 1
        if held:
            self._held[key] = held
        else:
            del self._held[key]  # no entry per mailbox that ever transferred: only those doing so now


class Admission:
    """The node's per-mailbox limits, answered as MESH errors (429 with Retry-After) and counted."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        rate_per_second: float,
        burst: int,
        max_transfers: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._metrics = metrics
        self._buckets = TokenBuckets(rate_per_second, burst, clock) if rate_per_second > 0 else None
        self._transfers = TransferSlots(max_transfers)

    def admit(self, mailbox_id: str, *, transfer: bool) -> Callable[[], None]:
        """Take one of the mailbox's request tokens (else RATE_LIMITED, saying how long to wait for one) and, for a
        transfer, one of its places (else TOO_MANY_TRANSFERS). Returns what gives the place back: call it once,
        when the request has ended."""
        if self._buckets is not None:
            wait = self._buckets.take(mailbox_id)
            if wait > 0:
                self._metrics.rate_limited.labels("requests").inc()
                raise BrokerError(ErrorCode.RATE_LIMITED, retry_after=max(1, math.ceil(wait)))
        if not transfer:
            return _nothing
        if not self._transfers.try_take(mailbox_id):
            self._metrics.rate_limited.labels("transfers").inc()
            raise BrokerError(ErrorCode.TOO_MANY_TRANSFERS)
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self._transfers.give_back(mailbox_id)

        return give_back

    def transfers_in_progress(self, mailbox_id: str) -> int:
        return self._transfers.in_progress(mailbox_id)


def _nothing() -> None:
    pass
