"""broker/store/token_batch.py: the tokens of concurrent requests go to the database as one write, a token twice is a
replay the second time, and a failed write fails every request of its batch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from broker.store.protocol import StoreUnavailable
from broker.store.token_batch import TokenBatch

EXPIRES = datetime(2026, 12, 1, tzinfo=UTC)


class Database:
    """Records each write; remembers the tokens spent; can be made to fail, or to wait until released."""

    def __init__(self) -> None:
        self.spent: set[str] = {"used-before"}
        self.writes: list[list[str]] = []
        self.fail: Exception | None = None
        self.release = asyncio.Event()
        self.release.set()

    async def write(self, keys: list[str], expiries: list[datetime]) -> set[str]:
        assert len(keys) == len(expiries) == len(set(keys))
        self.writes.append(keys)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        recorded = {key for key in keys if key not in self.spent}
        self.spent |= recorded
        return recorded


async def test_concurrent_tokens_go_as_one_write_and_a_repeat_is_a_replay() -> None:
    database = Database()
    batch = TokenBatch(database.write)
    answers = await asyncio.gather(*(batch.use(key, EXPIRES) for key in ["a", "b", "a", "used-before", "c"]))
    assert answers == [True, True, False, False, True]
    assert database.writes == [["a", "b", "used-before", "c"]]
    assert await batch.use("a", EXPIRES) is False  # spent by the batch before


async def test_tokens_arriving_during_a_write_go_in_the_next_one() -> None:
    database = Database()
    database.release.clear()
    batch = TokenBatch(database.write)
    first = asyncio.create_task(batch.use("first", EXPIRES))
    await asyncio.sleep(0)  # the first write is now in flight
    later = [asyncio.create_task(batch.use(key, EXPIRES)) for key in ("x", "y", "first")]
    await asyncio.sleep(0)
    database.release.set()
    assert await first is True
    assert [await task for task in later] == [True, True, False]
    assert database.writes == [["first"], ["x", "y", "first"]]


async def test_a_failed_write_fails_its_whole_batch_and_the_next_one_goes_on() -> None:
    database = Database()
    database.fail = StoreUnavailable("database went away")
    batch = TokenBatch(database.write)
    results = await asyncio.gather(batch.use("a", EXPIRES), batch.use("b", EXPIRES), return_exceptions=True)
    assert [type(r) for r in results] == [StoreUnavailable, StoreUnavailable]
    database.fail = None
    assert await batch.use("a", EXPIRES) is True


async def test_a_request_that_goes_away_still_spends_its_token() -> None:
    database = Database()
    database.release.clear()
    batch = TokenBatch(database.write)
    gone = asyncio.create_task(batch.use("gone", EXPIRES))
    await asyncio.sleep(0)
    gone.cancel()
    database.release.set()
    with pytest.raises(asyncio.CancelledError):
        await gone
    await batch.close()
    assert await batch.use("gone", EXPIRES) is False
