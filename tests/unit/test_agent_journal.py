"""The folder agent's journal log and its group commit (broker/client/agent/journal.py, groupcommit.py)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import orjson
import pytest

from broker.client.agent import journal as journal_module
from broker.client.agent.groupcommit import Batch, GroupCommit
from broker.client.agent.journal import Journal


async def settle() -> None:
    """Let the tasks created so far run up to their next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


def opened(directory: Path) -> Journal:
    journal = Journal(directory)
    journal.open()
    return journal


async def test_a_saved_record_survives_a_restart_and_a_removed_one_does_not(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    await journal.save("send-a", {"state": "taken", "stem": "a"})
    await journal.save("send-b", {"state": "taken", "stem": "b"})
    await journal.save("send-a", {"state": "sent", "stem": "a", "message_id": "M1"})
    journal.remove("send-b")
    await journal.aclose()

    again = opened(tmp_path)
    assert again.names("send-") == ["send-a"]
    assert again.get("send-a") == {"state": "sent", "stem": "a", "message_id": "M1"}
    again.close()


async def test_a_save_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    """No close: what a crash right after save() would leave."""
    journal = opened(tmp_path)
    await journal.save("recv-1", {"state": "filing"})
    assert opened(tmp_path).get("recv-1") == {"state": "filing"}


async def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    await journal.save("send-a", {"state": "taken", "stem": "a"})
    journal.close()
    with (tmp_path / journal_module.LOG_NAME).open("ab") as log:
        log.write(b'{"n": "send-b", "r": {"sta')
    assert opened(tmp_path).names("send-") == ["send-a"]


async def test_records_of_the_one_file_each_layout_are_taken_in(tmp_path: Path) -> None:
    (tmp_path / "send-old.json").write_bytes(orjson.dumps({"state": "taken", "stem": "x", "key": "k"}))
    (tmp_path / "upload-send-old.json").write_bytes(b"{}")  # the client's own chunk journal: left alone
    journal = opened(tmp_path)
    assert journal.get("send-old") == {"state": "taken", "stem": "x", "key": "k"}
    assert not (tmp_path / "send-old.json").exists()
    assert (tmp_path / "upload-send-old.json").exists()
    journal.close()
    assert opened(tmp_path).get("send-old") is not None


async def test_the_log_is_compacted_once_it_outgrows_the_live_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "COMPACT_MIN_LINES", 20)
    journal = opened(tmp_path)
    for n in range(200):
        await journal.save(f"send-{n}", {"state": "taken"})
        journal.remove(f"send-{n}")
    await journal.save("send-last", {"state": "taken"})
    await journal.aclose()
    lines = (tmp_path / journal_module.LOG_NAME).read_bytes().splitlines()
    assert len(lines) <= 20
    assert opened(tmp_path).names("send-") == ["send-last"]


async def test_one_flush_covers_every_caller_that_arrived_while_the_previous_ran() -> None:
    started: list[int] = []
    release = asyncio.Event()

    async def flush() -> None:
        started.append(len(started))
        await release.wait()

    group = GroupCommit(flush)
    first = asyncio.create_task(group.wait())
    await settle()
    assert started == [0]
    rest = [asyncio.create_task(group.wait()) for _ in range(10)]
    await settle()
    release.set()
    await asyncio.gather(first, *rest)
    assert started == [0, 1]  # the ten that arrived during flush 0 were not let go by it: one more flush, shared


async def test_a_caller_is_not_covered_by_a_flush_that_began_before_it() -> None:
    release = asyncio.Event()
    flushes = 0

    async def flush() -> None:
        nonlocal flushes
        flushes += 1
        await release.wait()

    group = GroupCommit(flush)
    first = asyncio.create_task(group.wait())
    await settle()
    late = asyncio.create_task(group.wait())
    await settle()
    release.set()
    await first
    assert flushes == 1 and not late.done()
    await late
    assert flushes == 2


async def test_a_batch_takes_everything_handed_in_while_the_previous_ran() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()

    def process(items: list[int]) -> list[int]:
        gate.wait(5)
        batches.append(items)
        return [item * 10 for item in items]

    batch: Batch[int, int] = Batch(process)
    first = asyncio.create_task(batch.run(0))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(batch.run(n)) for n in range(1, 6)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await asyncio.gather(first, *rest) == [0, 10, 20, 30, 40, 50]
    assert batches == [[0], [1, 2, 3, 4, 5]]


async def test_a_failing_batch_fails_each_of_its_callers() -> None:
    def process(items: list[int]) -> list[int]:
        raise OSError("disk full")

    batch: Batch[int, int] = Batch(process)
    results = await asyncio.gather(batch.run(1), batch.run(2), return_exceptions=True)
    assert [type(r) for r in results] == [OSError, OSError]
