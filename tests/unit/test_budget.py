"""The transfer memory budget: reservations wait while it is spent and resume when it frees."""

from __future__ import annotations

import asyncio

import pytest

from broker.budget import MemoryBudget


async def test_reservations_wait_for_the_budget() -> None:
    budget = MemoryBudget(100)
    order: list[str] = []
    first_holding = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with budget.reserve(70):
            order.append("first in")
            first_holding.set()
            await release_first.wait()
        order.append("first out")

    async def second() -> None:
        await first_holding.wait()
        async with budget.reserve(40):
            order.append("second in")

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await first_holding.wait()
    await asyncio.sleep(0.01)
    assert order == ["first in"] and budget.available == 30  # 40 does not fit beside 70
    release_first.set()
    await asyncio.gather(*tasks)
    assert order == ["first in", "first out", "second in"]
    assert budget.available == 100


async def test_a_reservation_larger_than_the_budget_takes_all_of_it() -> None:
    budget = MemoryBudget(10)
    async with budget.reserve(1000):
        assert budget.available == 0
    assert budget.available == 10


async def test_cancelled_waiter_takes_nothing() -> None:
    budget = MemoryBudget(10)
    async with budget.reserve(10):
        waiter = asyncio.create_task(budget.reserve(5).__aenter__())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert budget.available == 10


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryBudget(0)
