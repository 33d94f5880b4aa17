"""Soak: a real `mesh-broker serve` under mixed load for a bounded time, watched for drift and for lost messages.

Starts a broker on a throwaway data dir (embedded by default, or PostgreSQL + S3 with --backend postgres+s3),
creates its mailboxes with `mesh-broker import-sandbox`, then for --duration seconds (default 600) runs, all
against 127.0.0.1 only:

- normal clients, one sender and one receiver per mailbox pair: sends of 1 KB to 300 KB, some chunked (3 chunks),
  and receivers that list, download (checking every byte) and acknowledge;
- hostile clients, a bounded number at a time: connections that stall after part of their request head or body,
  uploads and downloads dropped midway, and garbage (random bytes, bad tokens, malformed mex-* headers, headers
  too long, bad request lines).

Every minute (--interval) it prints the broker's RSS and open files (psutil num_fds), p50/p99 of each normal
operation in that minute, the 5xx answers seen, and messages sent, received and acknowledged so far. When the
load stops the receivers drain what is left (at most --drain seconds) and the run is judged on the targets:
RSS and open files flat (last minute within 10 % of the first), p99 of the normal operations within 20 %, no 5xx,
nothing lost, duplicated or corrupted. It exits non-zero when a target is missed. The per-minute rows are also
written to benchmarks/results/soak-<backend>-<stamp>.csv, the broker's log beside them.

    .venv/bin/python benchmarks/soak.py                      # make soak: 10 minutes, embedded
    .venv/bin/python benchmarks/soak.py --duration 60 --backend postgres+s3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import aiohttp
import psutil

from broker.auth import make_token
from latency import backend, free_port
from load import RESULTS, WORKFLOW, broker_env, broker_env_argument, create_mailboxes, stop, wait_http

KEY = b"TestKey"
MiB = 1024 * 1024
V2 = "application/vnd.mesh.v2+json"
HOST = "127.0.0.1"
NORMAL_OPS = ("send", "chunk", "list", "download", "acknowledge")
#: (bytes, weight) of a single-chunk message; a chunked message is three chunks of CHUNK bytes.
SIZES = ((1_000, 60), (50_000, 25), (300_000, 15))
CHUNKED_SHARE = 0.15
CHUNK = 100_000
#: Hostile connections open at once, by kind.
STALLED = 8
#: Targets.
MAX_FLAT_DRIFT = 0.10
MAX_P99_DRIFT = 0.20


class Tokens:
    """NHSMESH tokens for one mailbox: one nonce, an increasing count, as every MESH client makes them."""

    def __init__(self, mailbox: str):
        self.mailbox = mailbox
        self.nonce = str(uuid.uuid4())
        self.counter = count()

    def __call__(self) -> str:
        return make_token(
            KEY, self.mailbox, "password", nonce=self.nonce, nonce_count=next(self.counter), at=datetime.now(UTC)
        )

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": self(), "Accept": V2, **(extra or {})}


@dataclass
class Window:
    """What one reporting interval saw."""

    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    server_errors: int = 0


@dataclass
class Ledger:
    """Every message a sender was told was accepted, and what became of it at its receiver."""

    sent: dict[str, str] = field(default_factory=dict)  # message ID -> SHA-256 of its bytes
    received: set[str] = field(default_factory=set)
    acknowledged: set[str] = field(default_factory=set)
    duplicated: int = 0
    corrupted: int = 0
    failed: int = 0  # normal requests answered other than expected (each also printed)
    server_errors: int = 0
    hostile_requests: int = 0


class Soak:
    def __init__(self, port: int, pairs: list[tuple[str, str]], hostile: tuple[str, str], seed: int):
        self.port = port
        self.base = f"http://{HOST}:{port}/messageexchange"
        self.pairs = pairs
        self.hostile = hostile
        self.rng = random.Random(seed)
        self.window = Window()
        self.ledger = Ledger()
        self.stopping = asyncio.Event()
        self.drained = asyncio.Event()
        self.problems: list[str] = []

    # Bookkeeping -----------------------------------------------------------------------------------------
    def observe(self, op: str, seconds: float, status: int) -> None:
        if op in NORMAL_OPS:
            self.window.samples[op].append(seconds)
        self.server_error(status)

    def server_error(self, status: int) -> None:
        if status >= 500:
            self.window.server_errors += 1
            self.ledger.server_errors += 1

    def problem(self, text: str) -> None:
        self.ledger.failed += 1
        if len(self.problems) < 20:
            self.problems.append(text)
            print(f"  problem: {text}", flush=True)

    async def call(
        self, session: aiohttp.ClientSession, op: str, method: str, url: str, tokens: Tokens, **kw: object
    ) -> tuple[int, dict[str, str], bytes]:
        headers = tokens.headers(kw.pop("headers", None))  # type: ignore[arg-type]
        started = time.perf_counter()
        async with session.request(method, url, headers=headers, **kw) as response:  # type: ignore[arg-type]
            body = await response.read()
        self.observe(op, time.perf_counter() - started, response.status)
        return response.status, dict(response.headers), body

    # Normal clients --------------------------------------------------------------------------------------
    async def sender(self, session: aiohttp.ClientSession, mailbox: str, to: str, think: float) -> None:
        tokens = Tokens(mailbox)
        rng = random.Random(self.rng.random())
        outbox = f"{self.base}/{mailbox}/outbox"
        common = {"mex-To": to, "mex-WorkflowID": WORKFLOW, "Content-Type": "application/octet-stream"}
        while not self.stopping.is_set():
            chunked = rng.random() < CHUNKED_SHARE
            if chunked:
                parts = [rng.randbytes(CHUNK) for _ in range(3)]
            else:
                size = rng.choices([s for s, _ in SIZES], [w for _, w in SIZES])[0]
                parts = [rng.randbytes(size)]
            digest = hashlib.sha256(b"".join(parts)).hexdigest()
            headers = {**common, **({"mex-Chunk-Range": f"1:{len(parts)}"} if chunked else {})}
            status, _, body = await self.call(session, "send", "POST", outbox, tokens, data=parts[0], headers=headers)
            if status != 202:
                self.problem(f"send answered {status}: {body[:200]!r}")
                continue
            message_id = _json_field(body, "message_id")
            ok = True
            for number, part in enumerate(parts[1:], start=2):
                status, _, body = await self.call(
                    session,
                    "chunk",
                    "POST",
                    f"{outbox}/{message_id}/{number}",
                    tokens,
                    data=part,
                    headers={"mex-Chunk-Range": f"{number}:{len(parts)}", "Content-Type": "application/octet-stream"},
                )
                if status != 202:
                    self.problem(f"chunk {number} of {message_id} answered {status}: {body[:200]!r}")
                    ok = False
                    break
            if ok:
                self.ledger.sent[message_id] = digest
            await asyncio.sleep(rng.uniform(0, 2 * think))

    async def receiver(self, session: aiohttp.ClientSession, mailbox: str, poll: float) -> None:
        tokens = Tokens(mailbox)
        inbox = f"{self.base}/{mailbox}/inbox"
        while True:
            status, _, body = await self.call(session, "list", "GET", inbox, tokens)
            if status != 200:
                self.problem(f"list answered {status}: {body[:200]!r}")
                await asyncio.sleep(poll)
                continue
            listed = _json_list(body, "messages")
            for message_id in listed:
                if message_id in self.ledger.acknowledged:
                    self.ledger.duplicated += 1
                    self.problem(f"{message_id} listed again after it was acknowledged")
                    continue
                if message_id not in self.ledger.sent:
                    continue  # its last 202 is still on its way to the sender: taken on the next poll
                await self.receive(session, tokens, inbox, message_id)
            if not listed:
                if self.stopping.is_set() and self.ledger.acknowledged >= self.ledger.sent.keys():
                    return
                await asyncio.sleep(poll)

    async def receive(self, session: aiohttp.ClientSession, tokens: Tokens, inbox: str, message_id: str) -> None:
        pieces: list[bytes] = []
        number, total = 1, 1
        while number <= total:
            status, headers, body = await self.call(
                session, "download", "GET", f"{inbox}/{message_id}/{number}", tokens,
                headers={"Accept-Encoding": "identity"},
            )  # fmt: skip
            if status not in (200, 206):
                self.problem(f"download {message_id}/{number} answered {status}: {body[:200]!r}")
                return
            total = int(headers.get("mex-Chunk-Range", "1:1").split(":")[1])
            pieces.append(body)
            number += 1
        if message_id in self.ledger.received:
            self.ledger.duplicated += 1
            self.problem(f"{message_id} received twice")
        self.ledger.received.add(message_id)
        if hashlib.sha256(b"".join(pieces)).hexdigest() != self.ledger.sent[message_id]:
            self.ledger.corrupted += 1
            self.problem(f"{message_id} downloaded other bytes than were sent")
        status, _, body = await self.call(
            session, "acknowledge", "PUT", f"{inbox}/{message_id}/status/acknowledged", tokens
        )
        if status != 200:
            self.problem(f"acknowledge {message_id} answered {status}: {body[:200]!r}")
            return
        self.ledger.acknowledged.add(message_id)

    # Hostile clients -------------------------------------------------------------------------------------
    async def stalled(self, seed: float) -> None:
        """Opens a connection, sends part of a request (head or body), then says nothing for 5..90 s: past the
        broker's header and body timeouts (75 and 60 s by default) for some, so its own cut-offs are exercised."""
        rng = random.Random(seed)
        sender, receiver = self.hostile
        tokens = Tokens(sender)
        while not self.stopping.is_set():
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                reader, writer = await asyncio.open_connection(HOST, self.port)
                self.ledger.hostile_requests += 1
                head = _head("POST", f"/messageexchange/{sender}/outbox", tokens, to=receiver, length=500_000)
                writer.write(head[: rng.randrange(10, len(head))] if rng.random() < 0.5 else head + b"x" * 1000)
                await writer.drain()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._status(reader), rng.uniform(5, 90))
                writer.transport.abort()
            await asyncio.sleep(0.05)

    async def dropped_upload(self, seed: float) -> None:
        """A send whose client goes away after a quarter of its declared body."""
        rng = random.Random(seed)
        sender, receiver = self.hostile
        tokens = Tokens(sender)
        while not self.stopping.is_set():
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                _, writer = await asyncio.open_connection(HOST, self.port)
                self.ledger.hostile_requests += 1
                writer.write(_head("POST", f"/messageexchange/{sender}/outbox", tokens, to=receiver, length=1_000_000))
                writer.write(rng.randbytes(250_000))
                await writer.drain()
                await asyncio.sleep(rng.uniform(0, 0.3))
                writer.transport.abort()
            await asyncio.sleep(rng.uniform(0.5, 1.5))

    async def dropped_download(self, session: aiohttp.ClientSession, seed: float) -> None:
        """Downloads of a 2 MB message that stop reading after 64 KiB and hang up; it is never acknowledged."""
        rng = random.Random(seed)
        sender, receiver = self.hostile
        tokens = Tokens(receiver)
        headers = {"mex-To": receiver, "mex-WorkflowID": WORKFLOW, "Content-Type": "application/octet-stream"}
        async with session.post(
            f"{self.base}/{sender}/outbox", data=rng.randbytes(2_000_000), headers=Tokens(sender).headers(headers)
        ) as sent:
            message_id = _json_field(await sent.read(), "message_id")
        while not self.stopping.is_set():
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                reader, writer = await asyncio.open_connection(HOST, self.port)
                self.ledger.hostile_requests += 1
                writer.write(_head("GET", f"/messageexchange/{receiver}/inbox/{message_id}", tokens))
                await writer.drain()
                status = await asyncio.wait_for(self._status(reader), 10)
                self.server_error(status)
                await asyncio.wait_for(reader.read(64 * 1024), 10)
                writer.transport.abort()
            await asyncio.sleep(rng.uniform(0.5, 1.5))

    async def garbage(self, seed: float) -> None:
        """Requests no client should send: each must be refused with a 4xx (or the connection closed), never 5xx."""
        rng = random.Random(seed)
        sender, receiver = self.hostile
        tokens = Tokens(sender)
        outbox = f"/messageexchange/{sender}/outbox"
        kinds = [
            lambda: rng.randbytes(rng.randrange(1, 2000)),
            lambda: (
                _head("POST", outbox, None, to=receiver, length=5, extra={"Authorization": "NHSMESH garbage"})
                + b"hello"
            ),
            lambda: _head("POST", outbox, tokens, to=receiver, length=5, extra={"mex-Chunk-Range": "x:y"}) + b"hello",
            lambda: _head("POST", outbox, tokens, to=receiver, length=5, extra={"mex-Subject": "s" * 9000}) + b"hello",
            lambda: _head("GET", f"/messageexchange/{sender}/inbox", tokens, extra={"Accept": "\xff\xfe garbage"}),
            lambda: _head("GET", f"/messageexchange/{sender}/inbox/../../etc/passwd", tokens),
            lambda: b"G\x00T /messageexchange HTTP/1.1\r\nHost: x\r\n\r\n",
            lambda: b"GET /messageexchange/_ping HTTP/1.1\r\nHost x\r\nContent-Length: -1\r\n\r\n",
            lambda: _head("GET", f"/messageexchange/{sender}/inbox", None, extra={"X-Long": "y" * 70_000}),
        ]
        while not self.stopping.is_set():
            with contextlib.suppress(OSError, asyncio.TimeoutError, ValueError):
                reader, writer = await asyncio.open_connection(HOST, self.port)
                self.ledger.hostile_requests += 1
                writer.write(rng.choice(kinds)())
                await writer.drain()
                status = await asyncio.wait_for(self._status(reader), 10)
                self.server_error(status)
                if status >= 500:
                    self.problems.append(f"garbage answered {status}")
                writer.transport.abort()
            await asyncio.sleep(rng.uniform(0.05, 0.3))

    async def _status(self, reader: asyncio.StreamReader) -> int:
        """The status of the answer, or 0 where the broker closed the connection without one."""
        line = await reader.readline()
        parts = line.split(b" ", 2)
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0


def _head(
    method: str,
    path: str,
    tokens: Tokens | None,
    *,
    to: str | None = None,
    length: int | None = None,
    extra: dict[str, str] | None = None,
) -> bytes:
    fields = {"Host": f"{HOST}", "Accept": V2}
    if tokens is not None:
        fields["Authorization"] = tokens()
    if to is not None:
        fields.update({"mex-To": to, "mex-WorkflowID": WORKFLOW, "Content-Type": "application/octet-stream"})
    if length is not None:
        fields["Content-Length"] = str(length)
    fields.update(extra or {})
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def _json_field(body: bytes, name: str) -> str:
    return str(json.loads(body)[name])


def _json_list(body: bytes, name: str) -> list[str]:
    return [str(item) for item in json.loads(body)[name]]


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) in milliseconds, nearest rank; 0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank] * 1000


@dataclass
class Minute:
    minute: int
    rss_mib: float
    #: The part of RSS that is file pages mapped in (SQLite's memory-mapped database, shared libraries): the
    #: kernel's page cache, reclaimable, and growing with the database up to the store's mmap window.
    file_mib: float
    fds: int
    p50: dict[str, float]
    p99: dict[str, float]
    all_p99: float
    server_errors: int
    sent: int
    received: int
    acknowledged: int


async def report(soak: Soak, process: psutil.Process, interval: float, windows: int, rows: list[Minute]) -> None:
    """Closes a window every interval, windows times, and prints each one's row."""
    print(
        f"{'min':>3} {'RSS MiB':>8} {'file':>6} {'fds':>4} | "
        + " | ".join(f"{op:>11} p50/p99" for op in NORMAL_OPS)
        + f" | {'all p99':>7} {'5xx':>4} {'sent':>6} {'recv':>6} {'acked':>6}",
        flush=True,
    )
    started = time.monotonic()
    for minute in range(1, windows + 1):
        await asyncio.sleep(started + minute * interval - time.monotonic())
        window, soak.window = soak.window, Window()
        memory = process.memory_info()
        every = [s for op in NORMAL_OPS for s in window.samples[op]]
        row = Minute(
            minute,
            memory.rss / MiB,
            _rss_file(process.pid, memory.shared) / MiB,
            process.num_fds(),
            {op: percentile(window.samples[op], 50) for op in NORMAL_OPS},
            {op: percentile(window.samples[op], 99) for op in NORMAL_OPS},
            percentile(every, 99),
            window.server_errors,
            len(soak.ledger.sent),
            len(soak.ledger.received),
            len(soak.ledger.acknowledged),
        )
        rows.append(row)
        print(
            f"{row.minute:>3} {row.rss_mib:>8.1f} {row.file_mib:>6.1f} {row.fds:>4} | "
            + " | ".join(f"{row.p50[op]:>8.1f} / {row.p99[op]:>7.1f}" for op in NORMAL_OPS)
            + f" | {row.all_p99:>7.1f} {row.server_errors:>4} {row.sent:>6} {row.received:>6} {row.acknowledged:>6}",
            flush=True,
        )


async def run(port: int, broker_pid: int, args: argparse.Namespace, rows: list[Minute]) -> Soak:
    pairs = [(f"SOAKS{i:02d}", f"SOAKR{i:02d}") for i in range(args.pairs)]
    soak = Soak(port, pairs, ("SOAKH01", "SOAKH02"), args.seed)
    process = psutil.Process(broker_pid)
    connector = aiohttp.TCPConnector(limit=4 * args.pairs + 8)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        windows = int(args.duration // args.interval)
        reporter = asyncio.create_task(report(soak, process, args.interval, windows, rows))
        receivers = [asyncio.create_task(soak.receiver(session, r, args.poll)) for _, r in pairs]
        senders = [asyncio.create_task(soak.sender(session, s, r, args.think_time)) for s, r in pairs]
        hostile: list[asyncio.Task[None]] = []
        if args.hostile:
            hostile += [asyncio.create_task(soak.stalled(soak.rng.random())) for _ in range(STALLED)]
            hostile += [asyncio.create_task(soak.dropped_upload(soak.rng.random())) for _ in range(2)]
            hostile += [asyncio.create_task(soak.dropped_download(session, soak.rng.random())) for _ in range(2)]
            hostile += [asyncio.create_task(soak.garbage(soak.rng.random())) for _ in range(2)]
        # The load runs exactly as long as the reported windows, and a little more if duration is not a multiple.
        await reporter
        await asyncio.sleep(args.duration - windows * args.interval)
        soak.stopping.set()
        await asyncio.gather(*senders)
        try:
            await asyncio.wait_for(asyncio.gather(*receivers), args.drain)
        except TimeoutError:
            soak.problems.append(f"receivers had not drained the inboxes after {args.drain} s")
        for task in hostile:
            task.cancel()
        await asyncio.gather(*hostile, return_exceptions=True)
    return soak


def _rss_file(pid: int, shared: int) -> int:
    """RssFile from /proc (Linux); psutil's `shared` (file and shared-memory pages together) elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return shared


def drift(first: float, last: float) -> float:
    return (last - first) / first if first else 0.0


def judge(soak: Soak, rows: list[Minute]) -> list[str]:
    """The targets missed, in words (none: the run passed)."""
    missed: list[str] = []
    ledger = soak.ledger
    lost = set(ledger.sent) - ledger.acknowledged
    if lost:
        missed.append(f"{len(lost)} messages sent (202) and never received and acknowledged")
    if ledger.duplicated or ledger.corrupted:
        missed.append(f"{ledger.duplicated} duplicated and {ledger.corrupted} corrupted messages")
    if ledger.server_errors:
        missed.append(f"{ledger.server_errors} answers 5xx")
    if ledger.failed:
        missed.append(f"{ledger.failed} normal requests refused")
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        for name, a, b, limit in (
            ("RSS", first.rss_mib, last.rss_mib, MAX_FLAT_DRIFT),
            ("open files", first.fds, last.fds, MAX_FLAT_DRIFT),
            ("p99", first.all_p99, last.all_p99, MAX_P99_DRIFT),
        ):
            if drift(a, b) > limit:
                missed.append(
                    f"{name} drifted {drift(a, b):+.1%} from the first minute to the last (limit {limit:.0%})"
                )
    return missed


def summary(soak: Soak, rows: list[Minute], args: argparse.Namespace, missed: list[str]) -> None:
    ledger = soak.ledger
    print(f"\n[soak {args.backend}] {args.duration} s, {args.pairs} sender/receiver pairs, hostile={args.hostile}")
    print(
        f"messages: sent {len(ledger.sent)}, received {len(ledger.received)}, acknowledged {len(ledger.acknowledged)}, "
        f"lost {len(set(ledger.sent) - ledger.acknowledged)}, duplicated {ledger.duplicated}, "
        f"corrupted {ledger.corrupted}; 5xx {ledger.server_errors}; hostile connections {ledger.hostile_requests}"
    )
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print(
            f"drift first -> last minute: RSS {first.rss_mib:.1f} -> {last.rss_mib:.1f} MiB "
            f"({drift(first.rss_mib, last.rss_mib):+.1%}, max {max(r.rss_mib for r in rows):.1f}; without mapped "
            f"files {first.rss_mib - first.file_mib:.1f} -> {last.rss_mib - last.file_mib:.1f} MiB, "
            f"{drift(first.rss_mib - first.file_mib, last.rss_mib - last.file_mib):+.1%}), "
            f"open files {first.fds} -> {last.fds} ({drift(first.fds, last.fds):+.1%}, "
            f"max {max(r.fds for r in rows)}), "
            f"p99 of all normal operations {first.all_p99:.1f} -> {last.all_p99:.1f} ms "
            f"({drift(first.all_p99, last.all_p99):+.1%})"
        )
        for op in NORMAL_OPS:
            medians = [r.p50[op] for r in rows if r.p50[op]]
            p99s = [r.p99[op] for r in rows if r.p99[op]]
            if medians:
                print(
                    f"  {op:<12} p50 {statistics.median(medians):6.1f} ms (minutes' median), "
                    f"p99 {first.p99[op]:6.1f} -> {last.p99[op]:6.1f} ms (max {max(p99s):.1f})"
                )
    print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))


def write_csv(path: Path, rows: list[Minute]) -> None:
    p50s, p99s = [f"{op}_p50_ms" for op in NORMAL_OPS], [f"{op}_p99_ms" for op in NORMAL_OPS]
    tail = ["all_p99_ms", "server_errors", "sent", "received", "acknowledged"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["minute", "rss_mib", "rss_file_mib", "fds", *p50s, *p99s, *tail])
        for r in rows:
            times = [*(f"{r.p50[op]:.2f}" for op in NORMAL_OPS), *(f"{r.p99[op]:.2f}" for op in NORMAL_OPS)]
            figures = [f"{r.all_p99:.2f}", r.server_errors, r.sent, r.received, r.acknowledged]
            writer.writerow([r.minute, f"{r.rss_mib:.1f}", f"{r.file_mib:.1f}", r.fds, *times, *figures])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    parser.add_argument("--backend", choices=("embedded", "postgres+s3"), default="embedded")
    parser.add_argument("--pairs", type=int, default=4, help="sender/receiver mailbox pairs (normal clients)")
    parser.add_argument("--think-time", type=float, default=0.25, help="a sender waits 0..2x this between sends")
    parser.add_argument("--poll", type=float, default=0.25, help="a receiver's wait after an empty inbox")
    parser.add_argument("--interval", type=float, default=60, help="seconds per reported row")
    parser.add_argument("--drain", type=float, default=60, help="most seconds the receivers get to drain at the end")
    parser.add_argument("--no-hostile", dest="hostile", action="store_false", help="normal clients only")
    parser.add_argument("--seed", type=int, default=20261201)
    broker_env_argument(parser)
    args = parser.parse_args()

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    label = f"soak-{args.backend.replace('+', '-')}-{stamp}"
    data_dir = Path(tempfile.mkdtemp(prefix="mesh-soak-"))
    port = free_port()
    mailboxes = [m for i in range(args.pairs) for m in (f"SOAKS{i:02d}", f"SOAKR{i:02d}")] + ["SOAKH01", "SOAKH02"]
    rows: list[Minute] = []
    log = RESULTS / f"{label}.broker.log"
    with backend(args.backend) as backend_env:
        env = broker_env(data_dir, port, {**backend_env, **dict(args.broker_env)})
        create_mailboxes(env, data_dir, mailboxes)
        with log.open("wb") as out:
            broker = subprocess.Popen([sys.executable, "-m", "broker", "serve"], env=env, stdout=out, stderr=out)
        try:
            wait_http(f"http://{HOST}:{port}/_ping", broker, log)
            started = time.monotonic()
            soak = asyncio.run(run(port, broker.pid, args, rows))
            elapsed = time.monotonic() - started
        finally:
            stop(broker)
    shutil.rmtree(data_dir, ignore_errors=True)
    write_csv(RESULTS / f"{label}.csv", rows)
    missed = judge(soak, rows)
    summary(soak, rows, args, missed)
    print(f"wall {elapsed:.0f} s; rows in {RESULTS / (label + '.csv')}; broker log {log}; commit {_commit()}")
    return 1 if missed else 0


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
