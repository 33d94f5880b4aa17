"""A gzip bomb served decoded: the broker's memory while clients that do not accept gzip download it.

Starts a real `mesh-broker serve` (embedded store, demo mailboxes, 127.0.0.1), sends X26ABC2 one message whose
body is about 1 MiB of gzip that inflates to 1 GiB of zeros (broker.devsupport.gzip_bomb), then for each client
count (1 and 4 by default) has that many clients download it at once with `Accept-Encoding: identity`, so the
broker decodes it on the way out. Each client reads and drops the body, counting its bytes. The broker's VmRSS is
sampled every 50 ms: the figure is the peak over each round, next to the RSS before it. Bounded: every round has
a deadline and the script stops by itself.

--source DIR runs the broker from another source tree (for a before/after in one sitting), e.g. the last commit:

    mkdir /tmp/head && git archive HEAD | tar -x -C /tmp/head
    .venv/bin/python benchmarks/bomb.py --source /tmp/head
    .venv/bin/python benchmarks/bomb.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from broker.devsupport.gzip_bomb import MiB, gzip_bomb
from latency import Tokens, free_port, wait_ready

REPO = Path(__file__).resolve().parent.parent
SENDER, RECIPIENT = "X26ABC1", "X26ABC2"
READ_PIECE = 1024 * 1024
SAMPLE_INTERVAL = 0.05
ROUND_DEADLINE = 600.0


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


class Sampler:
    """The peak VmRSS of a process over a stretch of time, sampled on a thread."""

    def __init__(self, pid: int):
        self._pid = pid
        self._stop = threading.Event()
        self.peak_kib = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, rss_kib(self._pid))
            self._stop.wait(SAMPLE_INTERVAL)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, rss_kib(self._pid))


@dataclass
class Round:
    clients: int
    rss_before_mib: float
    peak_rss_mib: float
    seconds: float
    decoded_mib_each: float


def start_broker(source: Path, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(MESH_DEMO="on", MESH_DATA_DIR=str(data_dir), MESH_PORT=str(port), MESH_SHARED_KEY="TestKey")
    env["PYTHONPATH"] = str(source)  # `-m broker` from that tree, not the installed one
    return subprocess.Popen(
        [sys.executable, "-m", "broker", "serve"],
        cwd=source,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def send_bomb(session: aiohttp.ClientSession, base: str, body: bytes) -> str:
    headers = {
        **Tokens(SENDER).headers(),
        "mex-To": RECIPIENT,
        "mex-WorkflowID": "TEST_WORKFLOW",
        "Content-Type": "application/octet-stream",
        "Content-Encoding": "gzip",
    }
    async with session.post(f"{base}/{SENDER}/outbox", data=body, headers=headers) as response:
        if response.status != 202:
            raise RuntimeError(f"send failed: {response.status} {await response.text()}")
        return str((await response.json())["message_id"])


async def download(session: aiohttp.ClientSession, base: str, message_id: str) -> int:
    headers = {**Tokens(RECIPIENT).headers(), "Accept-Encoding": "identity"}
    received = 0
    async with session.get(f"{base}/{RECIPIENT}/inbox/{message_id}", headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"download failed: {response.status}")
        async for piece in response.content.iter_chunked(READ_PIECE):
            received += len(piece)
    return received


async def run(source: Path, decoded_mib: int, rounds: list[int]) -> list[Round]:
    data_dir = Path(tempfile.mkdtemp(prefix="mesh-bomb-"))
    port = free_port()
    broker = start_broker(source, data_dir, port)
    base = f"http://127.0.0.1:{port}/messageexchange"
    results = []
    try:
        await wait_ready(base)
        body = gzip_bomb(decoded_mib)
        print(f"bomb: {len(body):,} bytes of gzip, {decoded_mib} MiB decoded ({decoded_mib * MiB / len(body):.0f}:1)")
        timeout = aiohttp.ClientTimeout(total=ROUND_DEADLINE)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            started = time.perf_counter()
            message_id = await send_bomb(session, base, body)
            print(f"send: {time.perf_counter() - started:.1f} s")
            for clients in rounds:
                before = rss_kib(broker.pid)
                started = time.perf_counter()
                with Sampler(broker.pid) as sampler:
                    received = await asyncio.wait_for(
                        asyncio.gather(*(download(session, base, message_id) for _ in range(clients))),
                        ROUND_DEADLINE,
                    )
                elapsed = time.perf_counter() - started
                if any(count != decoded_mib * MiB for count in received):
                    raise RuntimeError(f"short download: {received}")
                results.append(Round(clients, before / 1024, sampler.peak_kib / 1024, elapsed, decoded_mib))
                peak = sampler.peak_kib / 1024
                print(
                    f"{clients} client(s): broker RSS {before / 1024:.0f} MiB before, peak {peak:.0f} MiB;"
                    f" {elapsed:.1f} s, {clients * decoded_mib / elapsed:.0f} MiB/s decoded in all"
                )
    finally:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            broker.kill()
        shutil.rmtree(data_dir, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REPO, help="source tree to run the broker from")
    parser.add_argument("--decoded-mib", type=int, default=1024, help="what the bomb inflates to (MiB)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4], help="concurrent downloads per round")
    args = parser.parse_args()
    results = asyncio.run(run(args.source.resolve(), args.decoded_mib, args.clients))
    print("\n| Clients | Broker RSS before MiB | Peak broker RSS MiB | Seconds | Decoded MiB/s (all clients) |")
    print("|---|---|---|---|---|")
    for result in results:
        rate = result.clients * result.decoded_mib_each / result.seconds
        print(
            f"| {result.clients} | {result.rss_before_mib:.0f} | {result.peak_rss_mib:.0f} | {result.seconds:.1f}"
            f" | {rate:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
