"""The broker's CPU per message cycle, two source trees alternated in one run (issue 18's A/B rule).

    .venv/bin/python benchmarks/cpu_ab.py --tree /tmp/before --tree . --rounds 3 --cycles 3000

Each round starts a fresh embedded broker from each tree in turn (``PYTHONPATH=<tree>``, this script's Python),
drives ``--cycles`` message cycles through it (send 1 KiB, list the inbox, download, acknowledge: four requests,
``--concurrency`` at a time from one uvloop client) and reads the broker process's CPU seconds from the kernel,
and those of its first thread (the event loop's; the others are SQLite's writer, readers and checkpointers).
CPU per cycle is what the broker spent, not how fast the run went, so it is much steadier than requests a second on
a shared machine: contention slows a run without adding much to the broker's own CPU time. Locust's mix (chunked
sends, tracking) is left out on purpose: this is the A/B tool, `load.py` the full picture.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psutil
import uvloop

from broker.auth import make_token
from latency import free_port, wait_ready
from load import WORKFLOW, broker_env, create_mailboxes, stop, tree_cpu

V2 = "application/vnd.mesh.v2+json"
MAILBOXES = [f"X26CPU{n:02d}" for n in range(8)]


class Caller:
    """One mailbox's credentials: a fresh token (nonce count) for every request, as real clients send."""

    def __init__(self, mailbox: str) -> None:
        self.mailbox = mailbox
        self.nonce = str(uuid.uuid4())
        self.counts = itertools.count()

    def headers(self, **extra: str) -> dict[str, str]:
        token = make_token(
            b"TestKey", self.mailbox, "password", nonce=self.nonce, nonce_count=next(self.counts), at=datetime.now(UTC)
        )
        return {"Authorization": token, "Accept": V2, **extra}


async def cycle(
    session: aiohttp.ClientSession, base: str, sender: Caller, recipient: Caller, body: bytes, settle: float = 0.0
) -> None:
    """Send, list, download, acknowledge: each answer checked, so a broken tree cannot look cheap. For a server
    that delivers after it answers the send, `settle` seconds are waited before the list, and the list repeated
    (after as long again) until it shows the message."""
    headers = sender.headers(**{"mex-To": recipient.mailbox, "mex-WorkflowID": WORKFLOW})
    headers["Content-Type"] = "application/octet-stream"
    async with session.post(f"{base}/{sender.mailbox}/outbox", data=body, headers=headers) as response:
        assert response.status == 202, await response.text()
        message_id = (await response.json())["message_id"]
    while True:
        if settle:
            await asyncio.sleep(settle)
        async with session.get(f"{base}/{recipient.mailbox}/inbox", headers=recipient.headers()) as response:
            assert response.status == 200, await response.text()
            listed = message_id in (await response.json())["messages"]
        if listed or not settle:
            break
    async with session.get(f"{base}/{recipient.mailbox}/inbox/{message_id}", headers=recipient.headers()) as response:
        assert response.status == 200, await response.text()
        assert await response.read() == body
    url = f"{base}/{recipient.mailbox}/inbox/{message_id}/status/acknowledged"
    async with session.put(url, headers=recipient.headers()) as response:
        assert response.status == 200, await response.text()


async def drive(
    base: str, cycles: int, concurrency: int, mailboxes: list[str] = MAILBOXES, settle: float = 0.0
) -> float:
    """Run the cycles; the wall-clock seconds they took."""
    callers = {m: Caller(m) for m in mailboxes}
    body = os.urandom(1024)
    left = itertools.count()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(k: int) -> None:
            # Worker k sends from mailbox k to mailbox k+1: with more mailboxes than workers inboxes are never shared.
            sender = callers[mailboxes[k % len(mailboxes)]]
            recipient = callers[mailboxes[(k + 1) % len(mailboxes)]]
            while next(left) < cycles:
                await cycle(session, base, sender, recipient, body, settle)

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return time.perf_counter() - started


def loop_cpu(pid: int) -> float:
    """CPU seconds of the process's first thread: the event loop's (the rest are SQLite's, blob and coding threads)."""
    for thread in psutil.Process(pid).threads():
        if thread.id == pid:
            return float(thread.user_time + thread.system_time)
    return 0.0


def measure(tree: Path, cycles: int, concurrency: int, warmup: int) -> tuple[float, float, float]:
    """(broker CPU ms per cycle, the event loop thread's share of it, cycles a second) for one fresh broker
    started from `tree`."""
    data_dir = Path(tempfile.mkdtemp(prefix="mesh-cpu-ab-"))
    port = free_port()
    env = broker_env(data_dir, port, {})
    env["PYTHONPATH"] = str(tree)
    log = data_dir / "broker.log"
    try:
        here = Path.cwd()
        os.chdir(tree)  # `python -m broker` imports from its working folder first: the tree's own CLI migrates
        try:
            create_mailboxes(env, data_dir, MAILBOXES)
        finally:
            os.chdir(here)
        with log.open("wb") as out:
            broker = subprocess.Popen(
                [sys.executable, "-m", "broker", "serve"], env=env, stdout=out, stderr=out, cwd=tree
            )
        try:
            base = f"http://127.0.0.1:{port}/messageexchange"
            uvloop.run(wait_ready(base))
            uvloop.run(drive(base, warmup, concurrency))  # caches, imports and the first WAL pages
            before, loop_before = tree_cpu(broker.pid), loop_cpu(broker.pid)
            seconds = uvloop.run(drive(base, cycles, concurrency))
            spent, loop_spent = tree_cpu(broker.pid) - before, loop_cpu(broker.pid) - loop_before
        finally:
            stop(broker)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return spent / cycles * 1000, loop_spent / cycles * 1000, cycles / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True, help="a source tree (give two or more)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.tree]
    cpu: dict[Path, list[float]] = {t: [] for t in trees}
    loop: dict[Path, list[float]] = {t: [] for t in trees}
    for round_number in range(1, args.rounds + 1):
        # Alternate the order each round, so neither tree always runs on a warmer (or busier) machine.
        for tree in trees if round_number % 2 else list(reversed(trees)):
            ms, loop_ms, rate = measure(tree, args.cycles, args.concurrency, args.warmup)
            cpu[tree].append(ms)
            loop[tree].append(loop_ms)
            print(
                f"round {round_number} {tree}: {ms:.3f} ms CPU per cycle ({loop_ms:.3f} on the event loop's thread), "
                f"{rate:.0f} cycles/s",
                flush=True,
            )
    first = statistics.mean(cpu[trees[0]])
    for tree in trees:
        mean = statistics.mean(cpu[tree])
        spread = f"{min(cpu[tree]):.3f}-{max(cpu[tree]):.3f}"
        print(
            f"{tree}: mean {mean:.3f} ms per cycle ({spread}), {100 * (mean / first - 1):+.1f} % against the first; "
            f"event loop thread {statistics.mean(loop[tree]):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
