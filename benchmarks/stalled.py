"""Stalled clients against a real broker: many connections held stalled while a well-behaved client works.

Starts `mesh-broker serve` (embedded store, demo mailboxes, HTTP on 127.0.0.1), sends one large message, then opens
--stalled connections and leaves them stalled: half are sends that declare 10 MB and send one byte, half are
downloads of the large message that read nothing. While they are held it runs --cycles send -> download ->
acknowledge cycles of 1 KiB messages from one client, one at a time, and reports their p50/p99 (beside the same
cycles with nothing stalled, first), the broker's RSS (psutil, sampled every 50 ms; its VmHWM too), the memory
budget in use and the connections open (its metrics port). Then it closes the stalled connections and reports the
broker's RSS once they are gone.

The broker runs with its production timeouts, but with the per-address and per-mailbox limits off (every stalled
connection comes from 127.0.0.1 and two mailboxes), so that it really holds them all. Bounded: one broker, a fixed
number of connections and cycles. Raises this process's open-file limit, which the broker inherits.

    .venv/bin/python benchmarks/stalled.py
    .venv/bin/python benchmarks/stalled.py --stalled 2000 --cycles 500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families

from latency import Tokens, free_port, start_broker, wait_ready

HOST = "127.0.0.1"
MiB = 1024 * 1024
#: The large message the stalled downloads ask for: far more than the kernel's socket buffers hold.
LARGE = 5 * 1000 * 1000
#: What a stalled send declares and never sends.
DECLARED = 10 * 1000 * 1000
TARGET_P99_MS = 100.0
TARGET_RSS_MIB = 300.0


class RssSampler(threading.Thread):
    """The broker's RSS every 50 ms; `peak` the highest seen since the last reset()."""

    def __init__(self, pid: int):
        super().__init__(daemon=True, name="rss-sampler")
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def now(self) -> int:
        return int(self.process.memory_info().rss)

    def reset(self) -> None:
        self.peak = self.now()

    def stop(self) -> None:
        self._stop_event.set()


def vm_hwm(pid: int) -> int:
    """The kernel's own peak RSS of the process (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def raise_file_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


@dataclass
class Node:
    base: str
    metrics_url: str

    async def gauge(self, session: aiohttp.ClientSession, name: str) -> float:
        async with session.get(self.metrics_url) as response:
            text = await response.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        return 0.0

    async def wait_gauge(
        self, session: aiohttp.ClientSession, name: str, check: Callable[[float], bool], within: float
    ) -> float:
        """Poll a gauge until check(value) holds or `within` seconds have passed; its last value."""
        deadline = time.monotonic() + within
        while True:
            value = await self.gauge(session, name)
            if check(value) or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.1)


async def send(session: aiohttp.ClientSession, node: Node, tokens: Tokens, to: str, data: bytes) -> str:
    headers = {**tokens.headers(), "mex-To": to, "mex-WorkflowID": "BENCH", "Content-Type": "application/octet-stream"}
    async with session.post(f"{node.base}/{tokens.mailbox}/outbox", data=data, headers=headers) as response:
        if response.status != 202:
            raise RuntimeError(f"send answered {response.status}: {await response.text()}")
        return str((await response.json(content_type=None))["message_id"])


async def cycle(session: aiohttp.ClientSession, node: Node, sender: Tokens, recipient: Tokens) -> float:
    """One message sent, downloaded and acknowledged; its wall time in seconds."""
    started = time.perf_counter()
    message_id = await send(session, node, sender, recipient.mailbox, os.urandom(1024))
    url = f"{node.base}/{recipient.mailbox}/inbox/{message_id}"
    async with session.get(url, headers={**recipient.headers(), "Accept-Encoding": "identity"}) as response:
        if response.status != 200 or len(await response.read()) != 1024:
            raise RuntimeError(f"download answered {response.status}")
    async with session.put(f"{url}/status/acknowledged", headers=recipient.headers()) as response:
        if response.status != 200:
            raise RuntimeError(f"acknowledge answered {response.status}")
    return time.perf_counter() - started


async def cycles(node: Node, count: int) -> list[float]:
    sender, recipient = Tokens("X26ABC3"), Tokens("X26ABC1")
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        return [await cycle(session, node, sender, recipient) for _ in range(count)]


@dataclass
class Stalled:
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def open(self, port: int, request: bytes) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing stalls sooner
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
        _reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        writer.write(request)
        self.writers.append(writer)

    def close(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()


def stalled_send(tokens: Tokens, to: str) -> bytes:
    headers = tokens.headers()
    lines = [
        f"POST /messageexchange/{tokens.mailbox}/outbox HTTP/1.1",
        f"Host: {HOST}",
        f"Authorization: {headers['Authorization']}",
        f"Accept: {headers['Accept']}",
        f"mex-To: {to}",
        "mex-WorkflowID: BENCH",
        "Content-Type: application/octet-stream",
        f"Content-Length: {DECLARED}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + b"x"


def stalled_download(tokens: Tokens, message_id: str) -> bytes:
    headers = tokens.headers()
    lines = [
        f"GET /messageexchange/{tokens.mailbox}/inbox/{message_id} HTTP/1.1",
        f"Host: {HOST}",
        f"Authorization: {headers['Authorization']}",
        f"Accept: {headers['Accept']}",
        "Accept-Encoding: identity",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ms(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] * 1000


async def run(args: argparse.Namespace, node: Node, port: int, rss: RssSampler, pid: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        large = await send(session, node, Tokens("X26ABC1"), "X26ABC2", os.urandom(LARGE))
    await cycles(node, 20)  # warm-up
    quiet = await cycles(node, args.cycles)
    figures["quiet_p50"], figures["quiet_p99"] = ms(quiet, 50), ms(quiet, 99)
    figures["rss_before"] = rss.now()

    stalled = Stalled()
    uploads, downloads = Tokens("X26ABC1"), Tokens("X26ABC2")
    async with aiohttp.ClientSession() as session:
        in_flight = await node.gauge(session, "mesh_http_requests_in_flight")
        for start in range(0, args.stalled, 50):
            batch = range(start, min(start + 50, args.stalled))
            await asyncio.gather(
                *(
                    stalled.open(
                        port, stalled_send(uploads, "X26ABC2") if i % 2 else stalled_download(downloads, large)
                    )
                    for i in batch
                )
            )
        held = await node.wait_gauge(
            session, "mesh_http_requests_in_flight", lambda v: v >= in_flight + args.stalled, 120
        )
        figures["held"] = held - in_flight
        rss.reset()
        busy = await cycles(node, args.cycles)
        figures["busy_p50"], figures["busy_p99"] = ms(busy, 50), ms(busy, 99)
        figures["rss_peak_held"] = rss.peak
        figures["budget_in_use_held"] = await node.gauge(session, "mesh_transfer_memory_in_use_bytes")
        figures["connections_open_held"] = await node.gauge(session, "mesh_connections_open")
        still = await node.gauge(session, "mesh_http_requests_in_flight")
        figures["still_held_after_cycles"] = still - in_flight

        closed_at = time.monotonic()
        stalled.close()
        await node.wait_gauge(session, "mesh_http_requests_in_flight", lambda v: v <= in_flight, 120)
        await node.wait_gauge(session, "mesh_transfer_memory_in_use_bytes", lambda v: v == 0, 120)
        figures["let_go_seconds"] = time.monotonic() - closed_at
        await asyncio.sleep(2)
        figures["rss_after"] = rss.now()
        figures["budget_in_use_after"] = await node.gauge(session, "mesh_transfer_memory_in_use_bytes")
    after = await cycles(node, args.cycles)
    figures["after_p50"], figures["after_p99"] = ms(after, 50), ms(after, 99)
    figures["vm_hwm"] = vm_hwm(pid)
    return figures


def report(args: argparse.Namespace, figures: dict[str, float], file_limit: int) -> None:
    mib = MiB
    print(
        f"\nstalled={args.stalled} (half sends of 1 byte of {DECLARED:,}, half downloads of {LARGE:,} bytes "
        f"reading nothing), cycles={args.cycles} of 1 KiB, open-file limit {file_limit}"
    )
    print(
        f"held by the broker: {figures['held']:.0f} requests, {figures['connections_open_held']:.0f} connections; "
        f"still held after the cycles: {figures['still_held_after_cycles']:.0f}"
    )
    print(f"{'cycles':<28} {'p50 ms':>8} {'p99 ms':>8}")
    for label, key in (
        ("nothing stalled", "quiet"),
        ("while stalled are held", "busy"),
        ("after they closed", "after"),
    ):
        print(f"{label:<28} {figures[key + '_p50']:>8.2f} {figures[key + '_p99']:>8.2f}")
    print(
        f"broker RSS: {figures['rss_before'] / mib:.1f} MiB before, peak {figures['rss_peak_held'] / mib:.1f} MiB "
        f"while held, {figures['rss_after'] / mib:.1f} MiB 2 s after they closed; VmHWM {figures['vm_hwm'] / mib:.1f}"
        " MiB"
    )
    print(
        f"memory budget in use: {figures['budget_in_use_held'] / mib:.2f} MiB while held, "
        f"{figures['budget_in_use_after'] / mib:.2f} MiB after; all let go {figures['let_go_seconds']:.1f} s after "
        "the close"
    )
    p99_ok = figures["busy_p99"] <= TARGET_P99_MS
    rss_ok = figures["rss_peak_held"] / mib <= TARGET_RSS_MIB
    print(
        f"targets: p99 <= {TARGET_P99_MS:.0f} ms while held: {'met' if p99_ok else 'NOT met'}; "
        f"RSS <= {TARGET_RSS_MIB:.0f} MiB while held: {'met' if rss_ok else 'NOT met'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stalled", type=int, default=1000, help="connections held stalled (half each kind)")
    parser.add_argument("--cycles", type=int, default=200, help="send -> download -> acknowledge cycles measured")
    args = parser.parse_args()
    file_limit = raise_file_limit(args.stalled + 1024)
    data_dir = Path(tempfile.mkdtemp(prefix="mesh-stalled-"))
    port, metrics_port = free_port(), free_port()
    env = {
        "MESH_METRICS_PORT": str(metrics_port),
        "MESH_MAX_CONNECTIONS": str(args.stalled + 512),
        "MESH_MAX_CONNECTIONS_PER_ADDRESS": "0",
        "MESH_MAX_TRANSFERS_PER_MAILBOX": "0",
    }
    broker = start_broker(data_dir, port, env)
    rss = RssSampler(broker.pid)
    try:
        node = Node(f"http://{HOST}:{port}/messageexchange", f"http://{HOST}:{metrics_port}/metrics")
        asyncio.run(wait_ready(node.base))
        rss.start()
        figures = asyncio.run(run(args, node, port, rss, broker.pid))
    finally:
        rss.stop()
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(30)
        except subprocess.TimeoutExpired:
            broker.kill()
        shutil.rmtree(data_dir, ignore_errors=True)
    report(args, figures, file_limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
