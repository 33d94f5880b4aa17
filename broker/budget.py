"""A node-wide memory budget that concurrent transfers draw their buffers from, so load cannot grow memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class MemoryBudget:
    """A weighted semaphore over bytes: a transfer reserves its buffer size before streaming and waits,
    holding back its socket (TCP backpressure), while the budget is spent."""

    def __init__(self, total_bytes: int):
        if total_bytes <= 0:
            raise ValueError("a memory budget must be positive")
        self.total = total_bytes
        self.available = total_bytes
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        # A transfer needing more than the whole budget takes all of it rather than waiting forever.
        wanted = min(nbytes, self.total)
        async with self._changed:
            await self._changed.wait_for(lambda: self.available >= wanted)
            self.available -= wanted
        try:
            yield
        finally:
            async with self._changed:
                self.available += wanted
                self._changed.notify_all()
