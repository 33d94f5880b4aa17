"""broker/services/readiness.py: one probe at a time, reused briefly, failures named, state changes logged once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from broker.blobs.protocol import BlobError, BlobNotFound, BlobStore
from broker.drain import Drain
from broker.services import readiness
from broker.services.readiness import Readiness, Report
from broker.store.protocol import MessageStore, StoreError


class Probed:
    """A store and a blob store in one, counting probes; each answers as told."""

    def __init__(self) -> None:
        self.database_calls = 0
        self.blob_calls = 0
        self.database: BaseException | None = None
        self.blobs: BaseException = BlobNotFound("never written")
        self.gate: asyncio.Event | None = None

    async def get_message(self, message_id: str) -> None:
        self.database_calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.database is not None:
            raise self.database

    async def size(self, key: str) -> int:
        self.blob_calls += 1
        raise self.blobs


def readiness_of(probed: Probed, drain: Drain | None = None, timeout: float = 1.0) -> Readiness:
    return Readiness(cast(MessageStore, probed), cast(BlobStore, probed), drain or Drain(), timeout=timeout)


@pytest.fixture
def no_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readiness, "REUSE_SECONDS", 0.0)


async def test_ready_when_both_answer() -> None:
    probed = Probed()
    report = await readiness_of(probed).check()
    assert report == Report(draining=False, checks={"database": "ok", "blob_store": "ok"})
    assert report.ready and report.failed == []
    assert (probed.database_calls, probed.blob_calls) == (1, 1)


async def test_a_blob_store_answering_with_a_size_is_ready_too() -> None:
    class Found(Probed):
        async def size(self, key: str) -> int:
            return 3

    assert (await readiness_of(Found()).check()).ready


async def test_draining_answers_without_probing() -> None:
    probed, drain = Probed(), Drain()
    drain.begin()
    report = await readiness_of(probed, drain).check()
    assert (report.draining, report.failed, report.ready) == (True, ["draining"], False)
    assert probed.database_calls == probed.blob_calls == 0


async def test_an_answer_is_reused_for_a_moment() -> None:
    probed = Probed()
    ready = readiness_of(probed)
    for _ in range(5):
        assert (await ready.check()).ready
    assert probed.database_calls == 1


async def test_callers_at_once_share_one_probe() -> None:
    probed = Probed()
    probed.gate = asyncio.Event()
    ready = readiness_of(probed)
    waiting = [asyncio.create_task(ready.check()) for _ in range(10)]
    await asyncio.sleep(0.01)
    probed.gate.set()
    assert all(report.ready for report in await asyncio.gather(*waiting))
    assert probed.database_calls == 1


async def test_a_caller_that_hangs_up_does_not_cancel_the_shared_probe() -> None:
    probed = Probed()
    probed.gate = asyncio.Event()
    ready = readiness_of(probed)
    impatient, patient = asyncio.create_task(ready.check()), asyncio.create_task(ready.check())
    await asyncio.sleep(0.01)
    impatient.cancel()
    probed.gate.set()
    assert (await patient).ready


@pytest.mark.usefixtures("no_reuse")
async def test_failures_are_named_and_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    probed = Probed()
    ready = readiness_of(probed, timeout=0.05)
    caplog.set_level(logging.INFO, "broker.readiness")
    assert (await ready.check()).ready
    probed.database = StoreError("connection to db.internal refused")
    for _ in range(3):
        report = await ready.check()
        assert report.checks == {"database": "failed: StoreError", "blob_store": "ok"}
        assert report.failed == ["database"]
    probed.database, probed.gate = None, asyncio.Event()  # now it hangs
    assert (await ready.check()).checks["database"] == "no answer within 0.05 s"
    probed.gate = None
    probed.blobs = BlobError("bucket unreachable")
    assert (await ready.check()).checks == {"database": "ok", "blob_store": "failed: BlobError"}
    actions = [(record.__dict__["action"], record.__dict__["dependency"]) for record in caplog.records]
    assert actions == [
        ("readiness_failed", "database"),  # once, not once per probe
        ("readiness_restored", "database"),
        ("readiness_failed", "blob_store"),
    ]
    # The log keeps the cause the public body leaves out.
    assert "db.internal" in caplog.records[0].__dict__["cause"]


async def test_an_unexpected_error_is_a_failure_not_a_crash() -> None:
    probed = Probed()
    probed.database = RuntimeError("anything")
    report = await readiness_of(probed).check()
    assert report.checks["database"] == "failed: RuntimeError"


def test_report_failed_lists_what_failed() -> None:
    checks: dict[str, Any] = {"database": "ok", "blob_store": "failed: BlobError"}
    assert Report(draining=False, checks=checks).failed == ["blob_store"]
