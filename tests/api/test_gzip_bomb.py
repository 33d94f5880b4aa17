"""A small gzip upload that inflates enormously is served decoded a piece at a time, each piece charged to the
memory budget while it is produced and written: memory stays bounded whatever the compression ratio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from broker import app as app_module
from broker import transfer
from broker.app import create_app
from broker.budget import MemoryBudget
from broker.devsupport.gzip_bomb import MiB, gzip_bomb
from broker.settings import Settings
from broker.transfer import CODED_STEP, PIECE
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB2, download
from tests.support import Mesh


class BudgetSpy(MemoryBudget):
    """The node's budget, recording the most it ever had reserved at once."""

    def __init__(self, total_bytes: int):
        super().__init__(total_bytes)
        self.peak = 0

    @property
    def in_use(self) -> int:
        return self.total - self.available

    @asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        async with super().reserve(nbytes):
            self.peak = max(self.peak, self.in_use)
            yield


@pytest.mark.parametrize(
    "decoded_mib", [pytest.param(128, id="128MiB"), pytest.param(1024, id="1GiB", marks=pytest.mark.slow)]
)
async def test_gzip_bomb_is_decoded_within_the_budget(
    aiohttp_client: AiohttpClient, settings: Settings, monkeypatch: pytest.MonkeyPatch, decoded_mib: int
) -> None:
    monkeypatch.setattr(app_module, "MemoryBudget", BudgetSpy)
    app = create_app(settings)
    client = await aiohttp_client(app)
    budget = app[app_module.BUDGET]
    assert isinstance(budget, BudgetSpy)
    bomb = gzip_bomb(decoded_mib)
    assert len(bomb) < decoded_mib * MiB // 1000
    message_id = await Mesh(client, "X26ABC1").send_ok(MB2, bomb, extra={"Content-Encoding": "gzip"})

    # Every piece the download hands its connection must lie within what is reserved at that moment (the wait for
    # the client to take it holds nothing).
    writes: list[tuple[int, int]] = []
    plain_put = transfer._Outlet.put

    async def watched_put(outlet: transfer._Outlet, data: bytes) -> None:
        writes.append((len(data), budget.in_use))
        await plain_put(outlet, data)

    monkeypatch.setattr(transfer._Outlet, "put", watched_put)
    budget.peak = 0
    response = await download(Mesh(client, MB2), message_id, headers={"Accept-Encoding": "identity"})
    assert response.status == 200
    received = 0
    async for piece in response.content.iter_chunked(4 * MiB):
        assert piece.count(0) == len(piece)  # zeros, as sent
        received += len(piece)
    assert received == decoded_mib * MiB
    assert writes
    assert max(size for size, _ in writes) <= PIECE
    assert all(size <= in_use for size, in_use in writes)
    assert budget.peak <= CODED_STEP
    assert budget.in_use == 0


async def test_budget_spy_sees_what_the_transfer_reserves() -> None:
    """The spy records reservations as MemoryBudget makes them (else the bound above would hold vacuously)."""
    spy = BudgetSpy(10 * PIECE)
    async with spy.reserve(PIECE):
        assert spy.in_use == PIECE
    assert (spy.peak, spy.in_use) == (PIECE, 0)
