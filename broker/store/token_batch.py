"""The replay cache's writes on a shared database, a batch at a time: every request spends its token with one
statement before it is served, and on PostgreSQL that statement was half of all the round trips a message cycle
made (benchmarks/README.md, the node run of session 3). The tokens of the requests that arrive while one write is
in flight go together in the next: one statement for many requests under load, and for a lone request the same
single write as before."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

#: Writes tokens (keys, their expiries at the same positions) and answers the keys it recorded: those not used before.
WriteTokens = Callable[[list[str], list[datetime]], Awaitable[set[str]]]


class TokenBatch:
    """Spends tokens through write, one batch in flight at a time. A token twice in one batch is a replay the
    second time, as it would be in two statements: the first to arrive is the one accepted."""

    def __init__(self, write: WriteTokens):
        self._write = write
        self._waiting: list[tuple[str, datetime, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def use(self, token_key: str, expires_at: datetime) -> bool:
        """Whether the token was unused (now it is used); raises what the write raised."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((token_key, expires_at, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await answer

    async def close(self) -> None:
        """Let the write in flight, and any batch waiting behind it, finish (the store closes next)."""
        if self._writer is not None:
            await asyncio.wait([self._writer])

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            expiries: dict[str, datetime] = {}
            for key, expires, _ in batch:
                expiries.setdefault(key, expires)  # each key once, as it first arrived
            keys = list(expiries)
            try:
                recorded = await self._write(keys, [expiries[key] for key in keys])
            except asyncio.CancelledError:
                for _, _, answer in batch:
                    answer.cancel()
                raise
            except Exception as exc:
                for _, _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            seen: set[str] = set()
            for key, _, answer in batch:
                first = key not in seen
                seen.add(key)
                if not answer.done():  # its request may have gone (cancelled): the token is spent all the same
                    answer.set_result(first and key in recorded)
