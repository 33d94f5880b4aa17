"""The agent's listing of OUT (broker/client/agent/agent.py): left alone, inotify included, while more pairs are
queued than can be sent at once, and watched again once the queue runs low."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.client.agent import agent as agent_module
from broker.client.agent.agent import AgentMetrics, MailboxAgent
from broker.client.agent.config import AgentConfig, MailboxConfig

pytest.importorskip("watchfiles")


def drop(out: Path, stem: str) -> None:
    (out / f"{stem}.dat").write_bytes(b"x")
    (out / f"{stem}.ctl").write_bytes(b"<DTSControl><To_DTS>X26ABC2</To_DTS></DTSControl>")


def take_all(agent: MailboxAgent) -> None:
    """What the send workers do as they take pairs: say the queue is low once it is."""
    while not agent._queue.empty():
        agent._queue.get_nowait()
        if agent._queue.qsize() <= agent.config.parallel:
            agent._low.set()


async def queued(agent: MailboxAgent, stem: str, within: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while stem not in agent._taken:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_out_is_watched_again_once_the_queue_runs_low(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_module, "RESCAN_SECONDS", 30.0)  # only inotify (or the queue running low) wakes a scan
    mailbox = MailboxConfig("X26ABC1", "password", tmp_path / "X26ABC1")
    agent = MailboxAgent(AgentConfig("http://127.0.0.1:1", "key", (mailbox,), parallel=1), mailbox, AgentMetrics())
    agent.out.mkdir(parents=True)
    tasks = [asyncio.create_task(agent._scan_loop()), asyncio.create_task(agent._watch())]
    try:
        await asyncio.sleep(0.5)  # the watcher is up
        drop(agent.out, "first")
        assert await queued(agent, "first", within=5.0)  # an inotify wake
        for n in range(3):
            drop(agent.out, f"busy-{n}")
        assert await queued(agent, "busy-2", within=5.0)
        assert agent._queue.qsize() > agent.config.parallel and not agent._low.is_set()
        await asyncio.sleep(0.5)
        drop(agent.out, "while-busy")  # neither listed nor watched for: the queue is long
        await asyncio.sleep(1.0)
        assert "while-busy" not in agent._taken
        take_all(agent)
        assert await queued(agent, "while-busy", within=5.0)  # listed as the queue ran low
        take_all(agent)
        await asyncio.sleep(0.5)  # the watcher is up again
        drop(agent.out, "after")
        assert await queued(agent, "after", within=5.0)  # an inotify wake, not the 30 s rescan
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        agent._io.shutdown(wait=False)
