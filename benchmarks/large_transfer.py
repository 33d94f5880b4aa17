"""Large chunked messages through a real `mesh-broker serve` process: upload and download speed, broker memory.

For each (message size, chunk size) case it starts a broker on a throwaway data dir (demo mailboxes), sends one
message from X26ABC1 to X26ABC2 in MESH chunks (POST .../outbox with mex-Chunk-Range 1:n, then POST
.../outbox/{id}/{k}), downloads it chunk by chunk (GET .../inbox/{id} and .../inbox/{id}/{k}, v2, identity
encoding), checks its SHA-256 against the sender's, and acknowledges it. The client streams both ways: payload
bytes come from a seeded generator one block at a time, so neither side ever holds a whole chunk. The broker's
VmRSS is sampled every 100 ms and its VmHWM read at the end of each case. The same run measures the data disk's
fsync'd write speed (the physical limit for upload) and a cached read speed.

--concurrent N (default 1): N senders, each with its own token stream (fresh token per request, own nonce) and
its own message content, upload N messages of the case's size at once; when all are in, N receivers download
and verify (SHA-256) them at once, then acknowledge them. Upload and download MiB/s are then aggregate (all N
messages' bytes over the batch's wall time), the broker's VmHWM/VmRSS are its peak for the batch, and the disk
check counts all N messages stored at once.

Sizes take units: KB/MB/GB are powers of 1000 (the broker's per-request limit is 100 MB = 100,000,000 bytes),
KiB/MiB/GiB powers of 1024. Bounded: every case has a deadline and the script stops by itself.

    .venv/bin/python benchmarks/large_transfer.py --quick --backend both --markdown
    .venv/bin/python benchmarks/large_transfer.py --sizes 20GiB --chunks 100MB
    .venv/bin/python benchmarks/large_transfer.py --sizes 1GiB --chunks 100MB --concurrent 8

--variant LABEL=PATH (repeatable) compares broker code: each case runs once per variant, the broker started with
PYTHONPATH=PATH (a `git worktree add /tmp/before HEAD~1` checkout, say), and settings after a `+` if any
(LABEL=PATH+MESH_EVENT_LOOP=asyncio+...), and --rounds N repeats that N times, so
the variants alternate (A, B, A, B) under the same disk and CPU weather. The report then adds each variant's median
upload and download MiB/s per case and their ratio to the first variant's.

    .venv/bin/python benchmarks/large_transfer.py --sizes 1GiB --chunks 100MB \
        --variant before=/tmp/before --variant after=. --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from latency import Tokens, backend, free_port, start_broker, wait_ready

MiB = 1024 * 1024
GiB = 1024 * MiB
UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
SENDER, RECIPIENT, WORKFLOW = "X26ABC1", "X26ABC2", "TEST_WORKFLOW"
#: Payload blocks: the generator stamps each block's index into a block from a small seeded pool.
BLOCK = MiB
POOL_BLOCKS = 16
#: Download pieces read from the response stream.
READ_PIECE = 256 * 1024
#: Free space left on the disk after a case, beyond the message itself.
RESERVE = GiB
SAMPLE_INTERVAL = 0.1
T = TypeVar("T")


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 256MiB, 100MB, 20GiB)")
    value = int(float(match.group(1)) * UNITS[match.group(2).lower()])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a size must be positive, not {text!r}")
    return value


def parse_sizes(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def human(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B" if n < MiB else f"{n / MiB:.1f} MiB"


class Payload:
    """Deterministic bytes: block i of message 0 is pool[i mod 16] with i stamped into its first 8 bytes; block i
    of message m > 0 (--concurrent) is pool[(i + m) mod 16] with i and m stamped into its first 16 bytes, so
    every concurrent message has its own content and SHA-256."""

    def __init__(self, seed: int):
        rng = random.Random(seed)
        self._pool = [rng.randbytes(BLOCK) for _ in range(POOL_BLOCKS)]

    def _block(self, index: int, message: int = 0) -> bytes:
        if not message:
            return index.to_bytes(8, "big") + self._pool[index % POOL_BLOCKS][8:]
        return index.to_bytes(8, "big") + message.to_bytes(8, "big") + self._pool[(index + message) % POOL_BLOCKS][16:]

    def pieces(self, start: int, length: int, message: int = 0) -> Iterator[bytes]:
        """Bytes [start, start + length) of message number `message`, at most one block per piece."""
        position, end = start, start + length
        while position < end:
            index, offset = divmod(position, BLOCK)
            take = min(BLOCK - offset, end - position)
            block = self._block(index, message)
            yield block if take == BLOCK else block[offset : offset + take]
            position += take


def proc_status_kib(pid: int | str, field_name: str) -> int:
    """A kB field (VmRSS, VmHWM) of /proc/<pid>/status; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 once it is gone. On a shared machine this is the
    steadier figure: wall time depends on what else runs, the work a transfer costs the broker much less."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # Fields 14 and 15 of stat(5), utime and stime in clock ticks; fields[0] here is field 3 (state).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    """VmRSS of a process every 100 ms on its own thread (the event loop may be busy), max kept per phase."""

    def __init__(self, pid: int):
        super().__init__(daemon=True, name="rss-sampler")
        self.pid = pid
        self.phase = "idle"
        self.peak: dict[str, int] = {}
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = proc_status_kib(self.pid, "VmRSS")
            phase = self.phase
            self.peak[phase] = max(self.peak.get(phase, 0), rss)
            self.samples += 1
            self._stop_event.wait(SAMPLE_INTERVAL)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    @property
    def max_kib(self) -> int:
        return max(self.peak.values(), default=0)


@dataclass
class Result:
    """One case. With concurrent > 1, upload_s/download_s/ack_ms are the batch's wall time (first request to last
    answer) and rate() is the aggregate; the *_each_s lists hold each transfer's own time."""

    backend: str
    size: int
    chunk: int
    concurrent: int = 1
    #: --variant's label ("" without --variant) and the PYTHONPATH the broker ran with.
    variant: str = ""
    pythonpath: str = ""
    #: MESH_* settings the variant adds to the broker's environment.
    variant_env: dict[str, str] = field(default_factory=dict)
    status: str = "ok"
    upload_s: float = 0.0
    download_s: float = 0.0
    ack_ms: float = 0.0
    slowest_upload_s: float = 0.0
    slowest_download_s: float = 0.0
    hwm_kib: int = 0
    rss_start_kib: int = 0
    rss_peak: dict[str, int] = field(default_factory=dict)
    rss_samples: int = 0
    upload_each_s: list[float] = field(default_factory=list)
    download_each_s: list[float] = field(default_factory=list)
    #: The broker's CPU seconds (user + system) in each phase.
    cpu_s: dict[str, float] = field(default_factory=dict)

    def cpu_per_gib(self, phase: str) -> float:
        return self.cpu_s.get(phase, 0.0) / (self.total / GiB)

    @property
    def chunks(self) -> int:
        return math.ceil(self.size / self.chunk)

    @property
    def total(self) -> int:
        """Bytes moved each way: every concurrent message."""
        return self.size * self.concurrent

    @property
    def size_label(self) -> str:
        return human(self.size) if self.concurrent == 1 else f"{self.concurrent} x {human(self.size)}"

    def rate(self, seconds: float) -> float:
        return self.total / MiB / seconds if seconds else 0.0


@dataclass
class Limits:
    """The data disk, measured twice before and once after the cases: a shared virtual disk's fsync speed varies
    several-fold from one run to the next, so the limit used for % disk is the median of the measurements."""

    test_size: int
    generate_mibs: float = 0.0
    writes: list[float] = field(default_factory=list)
    reads: list[float] = field(default_factory=list)

    @property
    def write_mibs(self) -> float:
        return statistics.median(self.writes) if self.writes else 0.0

    def measure(self, parent: Path) -> None:
        probe = Path(tempfile.mkdtemp(prefix="mesh-bench-disk-", dir=parent))
        try:
            write_mibs, read_mibs = disk_limits(probe, self.test_size)
        finally:
            shutil.rmtree(probe, ignore_errors=True)
        self.writes.append(write_mibs)
        self.reads.append(read_mibs)

    def describe(self) -> str:
        writes = " / ".join(f"{w:.0f}" for w in self.writes)
        reads = " / ".join(f"{r:.0f}" for r in self.reads)
        return (
            f"fsync'd write {writes} MiB/s (2 before, 1 after the cases; {human(self.test_size)} in 8 MiB os.write, "
            f"then fsync; % disk uses the median, {self.write_mibs:.0f}), cached read {reads} MiB/s; "
            f"client payload generate+SHA-256 {self.generate_mibs:.0f} MiB/s"
        )


def disk_limits(folder: Path, total: int, block: int = 8 * MiB) -> tuple[float, float]:
    """fsync'd sequential write of total bytes in 8 MiB os.write calls, then a read of the (cached) file."""
    data = os.urandom(block)
    path = folder / "disk-speed.bin"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            started = time.perf_counter()
            written = 0
            while written < total:
                view = memoryview(data)[: min(block, total - written)]
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    written += n
            os.fsync(fd)
            write_s = time.perf_counter() - started
        finally:
            os.close(fd)
        buffer = bytearray(block)
        with open(path, "rb", buffering=0) as handle:
            started = time.perf_counter()
            while handle.readinto(buffer):
                pass
            read_s = time.perf_counter() - started
    finally:
        path.unlink(missing_ok=True)
    return total / MiB / write_s, total / MiB / read_s


def generate_rate(payload: Payload, total: int = 512 * MiB) -> float:
    """How fast this client makes and hashes payload bytes: if near the measured rates, the client is the limit."""
    digest = hashlib.sha256()
    started = time.perf_counter()
    for piece in payload.pieces(0, total):
        digest.update(piece)
    return total / MiB / (time.perf_counter() - started)


async def together(coroutines: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run coroutines at once; the first failure cancels the rest and is raised as itself (not a group)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coroutine) for coroutine in coroutines]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]


@dataclass
class Sent:
    message_id: str
    digest: bytes


async def upload(
    session: aiohttp.ClientSession, base: str, payload: Payload, result: Result, message: int
) -> tuple[Sent, float]:
    """One sender: its own token stream (nonce), its own message number, chunk by chunk."""
    size, chunk, n = result.size, result.chunk, result.chunks
    sender = Tokens(SENDER)
    sent_digest = hashlib.sha256()
    local_id = "large-transfer" if result.concurrent == 1 else f"large-transfer-{message}"
    where = "" if result.concurrent == 1 else f" (message {message + 1}/{result.concurrent})"

    async def body(start: int, length: int) -> AsyncIterator[bytes]:
        for piece in payload.pieces(start, length, message):
            sent_digest.update(piece)
            yield piece

    started = time.perf_counter()
    message_id = ""
    for k in range(1, n + 1):
        start = (k - 1) * chunk
        length = min(chunk, size - start)
        headers = sender.headers()
        headers.update(
            {
                "mex-Chunk-Range": f"{k}:{n}",
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
            }
        )
        if k == 1:
            url = f"{base}/{SENDER}/outbox"
            headers.update({"mex-To": RECIPIENT, "mex-WorkflowID": WORKFLOW, "mex-LocalID": local_id})
        else:
            url = f"{base}/{SENDER}/outbox/{message_id}/{k}"
        chunk_started = time.perf_counter()
        async with session.post(url, headers=headers, data=body(start, length)) as response:
            answer = await response.read()
            if response.status != 202:
                raise RuntimeError(f"upload of chunk {k}/{n}{where} answered {response.status}: {answer[:300]!r}")
            if k == 1:
                message_id = (await response.json(content_type=None))["message_id"]
        result.slowest_upload_s = max(result.slowest_upload_s, time.perf_counter() - chunk_started)
    return Sent(message_id, sent_digest.digest()), time.perf_counter() - started


async def download(
    session: aiohttp.ClientSession, base: str, recipient: Tokens, sent: Sent, result: Result, message: int
) -> float:
    """One receiver (its own token stream): downloads one message chunk by chunk and checks its SHA-256."""
    size, chunk, n = result.size, result.chunk, result.chunks
    got_digest = hashlib.sha256()
    where = "" if result.concurrent == 1 else f" (message {message + 1}/{result.concurrent})"
    started = time.perf_counter()
    for k in range(1, n + 1):
        expected = min(chunk, size - (k - 1) * chunk)
        url = f"{base}/{RECIPIENT}/inbox/{sent.message_id}" + (f"/{k}" if k > 1 else "")
        headers = recipient.headers()
        headers["Accept-Encoding"] = "identity"
        chunk_started = time.perf_counter()
        async with session.get(url, headers=headers) as response:
            want = 206 if k < n else 200
            if response.status != want:
                answer = await response.content.read(300)
                raise RuntimeError(f"download of chunk {k}/{n}{where} answered {response.status}: {answer!r}")
            if response.headers.get("mex-Chunk-Range") != f"{k}:{n}":
                raise RuntimeError(
                    f"chunk {k}/{n}{where} came with mex-Chunk-Range {response.headers.get('mex-Chunk-Range')}"
                )
            if response.headers.get("Content-Encoding"):
                raise RuntimeError(f"chunk {k}/{n}{where} came {response.headers['Content-Encoding']}-encoded")
            received = 0
            async for piece in response.content.iter_chunked(READ_PIECE):
                got_digest.update(piece)
                received += len(piece)
            if received != expected:
                raise RuntimeError(f"chunk {k}/{n}{where}: {received} bytes, expected {expected}")
        result.slowest_download_s = max(result.slowest_download_s, time.perf_counter() - chunk_started)
    elapsed = time.perf_counter() - started
    if got_digest.digest() != sent.digest:
        raise RuntimeError(f"SHA-256 mismatch{where}: sent {sent.digest.hex()}, received {got_digest.hexdigest()}")
    return elapsed


async def acknowledge(session: aiohttp.ClientSession, base: str, recipient: Tokens, sent: Sent) -> None:
    async with session.put(
        f"{base}/{RECIPIENT}/inbox/{sent.message_id}/status/acknowledged", headers=recipient.headers()
    ) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"acknowledge answered {response.status}")


async def transfer(base: str, payload: Payload, result: Result, sampler: RssSampler, read_timeout: float) -> None:
    """All uploads at once, then (once every upload is in) all downloads at once, then all acknowledgements.
    Transfer i has its own client session (connection pool); with --concurrent 1 that is one session, one
    message, exactly the sequential case."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)
    sessions = [aiohttp.ClientSession(timeout=timeout, auto_decompress=False) for _ in range(result.concurrent)]
    try:
        indexes = range(result.concurrent)
        sampler.phase = "upload"
        started, cpu = time.perf_counter(), proc_cpu_s(sampler.pid)
        uploads = await together([upload(sessions[i], base, payload, result, i) for i in indexes])
        result.upload_s = time.perf_counter() - started
        result.cpu_s["upload"] = proc_cpu_s(sampler.pid) - cpu
        sent = [each for each, _ in uploads]
        result.upload_each_s = [seconds for _, seconds in uploads]

        sampler.phase = "download"
        receivers = [Tokens(RECIPIENT) for _ in indexes]
        started, cpu = time.perf_counter(), proc_cpu_s(sampler.pid)
        result.download_each_s = await together(
            [download(sessions[i], base, receivers[i], sent[i], result, i) for i in indexes]
        )
        result.download_s = time.perf_counter() - started
        result.cpu_s["download"] = proc_cpu_s(sampler.pid) - cpu

        sampler.phase = "acknowledge"
        started = time.perf_counter()
        await together([acknowledge(sessions[i], base, receivers[i], sent[i]) for i in indexes])
        result.ack_ms = (time.perf_counter() - started) * 1000
        sampler.phase = "idle"
    finally:
        for session in sessions:
            await session.close()


def case_budget(size: int, args: argparse.Namespace) -> float:
    """Seconds a case may take: startup slack plus upload and download (of every concurrent message, size being
    their total) at --min-rate."""
    return 120.0 + 2 * size / MiB / args.min_rate


def stop_broker(broker: subprocess.Popen[bytes]) -> None:
    if broker.poll() is None:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(15)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait(5)


def room_for(result: Result, parent: Path) -> str | None:
    """Why the case cannot fit on disk, or None. Every concurrent message is stored at once (none is acknowledged
    before all are downloaded). Embedded stores a message once on disk; moto spools S3 parts to temp files and
    then assembles the objects, so count the messages twice there."""
    needs = [(parent, result.total + RESERVE)]
    if result.backend != "embedded":
        needs.append((Path(tempfile.gettempdir()), 2 * result.total + RESERVE))
    for folder, need in needs:
        free = shutil.disk_usage(folder).free
        if need > free:
            return f"skipped: needs {need / GiB:.1f} GiB free on {folder}, has {free / GiB:.1f} GiB"
    return None


def run_case(result: Result, payload: Payload, parent: Path, args: argparse.Namespace) -> Result:
    reason = room_for(result, parent)
    if reason:
        result.status = reason
        return result
    label = f"[{result.backend}] {result.size_label} in {result.chunks} x {human(result.chunk)}"
    if result.variant:
        label += f" ({result.variant})"
    print(f"{label} ...", file=sys.stderr, flush=True)
    data_dir = Path(tempfile.mkdtemp(prefix="mesh-bench-large-", dir=parent))
    budget = case_budget(result.total, args)
    try:
        with backend(result.backend) as backend_env:
            port = free_port()
            base = f"http://127.0.0.1:{port}/messageexchange"
            if result.pythonpath:
                # PYTHONSAFEPATH: `python -m broker` puts the working directory on sys.path ahead of PYTHONPATH, so
                # run from a checkout, every variant would otherwise import that checkout's broker.
                backend_env = {
                    **backend_env,
                    **result.variant_env,
                    "PYTHONPATH": result.pythonpath,
                    "PYTHONSAFEPATH": "1",
                }
            broker = start_broker(data_dir, port, backend_env)
            sampler = RssSampler(broker.pid)
            try:
                asyncio.run(wait_ready(base))
                result.rss_start_kib = proc_status_kib(broker.pid, "VmRSS")
                sampler.start()

                async def bounded() -> None:
                    async with asyncio.timeout(budget):
                        await transfer(base, payload, result, sampler, args.read_timeout)

                asyncio.run(bounded())
            except TimeoutError:
                result.status = f"timed out after {budget:.0f} s"
            except Exception as exc:  # one failed case must not stop the others
                result.status = f"failed: {exc}"
            finally:
                result.hwm_kib = proc_status_kib(broker.pid, "VmHWM")
                if sampler.is_alive():
                    sampler.stop()
                result.rss_peak = dict(sampler.peak)
                result.rss_samples = sampler.samples
                stop_broker(broker)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"{label}: {result.status}", file=sys.stderr, flush=True)
    return result


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def report(results: list[Result], limits: Limits, parent: Path, markdown: bool, label: str) -> None:
    print(f"\ndata disk ({parent}): {limits.describe()}")
    width = max([8, *(len(r.size_label) for r in results)])
    named = max([0, *(len(r.variant) + 1 for r in results)])
    header = (
        f"{'backend':<12} {'':<{named}}{'size':>{width}} {'chunk':>7} {'n':>4} {'up MiB/s':>9} {'% disk':>7} "
        f"{'down MiB/s':>10} {'VmHWM MiB':>10} {'max RSS MiB':>11}  status"
    )
    print(header)
    for r in results:
        ok = r.status == "ok"
        up, down = r.rate(r.upload_s), r.rate(r.download_s)
        pct = 100 * up / limits.write_mibs if limits.write_mibs else 0
        peak = max(r.rss_peak.values(), default=0) / 1024
        cells = (
            f"{up:>9.1f} {pct:>6.0f}% {down:>10.1f} {r.hwm_kib / 1024:>10.0f} {peak:>11.0f}"
            if ok
            else f"{'-':>9} {'-':>7} {'-':>10} {'-':>10} {'-':>11}"
        )
        print(
            f"{r.backend:<12} {r.variant:<{named}}{r.size_label:>{width}} {human(r.chunk):>7} {r.chunks:>4} {cells}  "
            f"{r.status}"
        )
    for r in results:
        if r.status == "ok":
            peaks = ", ".join(f"{phase} {kib / 1024:.0f}" for phase, kib in r.rss_peak.items())
            print(
                f"  {r.backend} {r.variant + ' ' if r.variant else ''}{r.size_label}/{human(r.chunk)}: "
                f"upload {r.upload_s:.1f} s, "
                f"download {r.download_s:.1f} s, ack {r.ack_ms:.0f} ms; slowest chunk up {r.slowest_upload_s:.2f} s, "
                f"down {r.slowest_download_s:.2f} s; broker CPU s/GiB up {r.cpu_per_gib('upload'):.2f}, "
                f"down {r.cpu_per_gib('download'):.2f}; "
                f"broker RSS MiB at start {r.rss_start_kib / 1024:.0f}, max by phase: {peaks} ({r.rss_samples} samples)"
            )
            if r.concurrent > 1:
                each_up = ", ".join(f"{t:.1f}" for t in r.upload_each_s)
                each_down = ", ".join(f"{t:.1f}" for t in r.download_each_s)
                print(
                    f"    {r.concurrent} at once, MiB/s aggregate (all bytes / batch wall time); each transfer's own "
                    f"seconds: upload {each_up}; download {each_down}"
                )
    print(f"client (this process) VmHWM {proc_status_kib('self', 'VmHWM') / 1024:.0f} MiB")
    compare(results, limits)
    if markdown:
        today, head = date.today().isoformat(), label or commit()
        print(f"\nData disk: {limits.describe()}.\n")
        print(
            "| Date | Commit | Backend | Size | Chunk | Chunks | Upload MiB/s | % of fsync write | Download MiB/s "
            "| Broker VmHWM MiB | Max sampled VmRSS MiB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results:
            named_head = f"{head} ({r.variant})" if r.variant else head
            case = f"| {today} | {named_head} | {r.backend} | {r.size_label} | {human(r.chunk)} | {r.chunks} |"
            if r.status != "ok":
                print(f"{case} {r.status} |||||")
                continue
            up = r.rate(r.upload_s)
            print(
                f"{case} {up:.1f} | {100 * up / limits.write_mibs:.0f}% | {r.rate(r.download_s):.1f} "
                f"| {r.hwm_kib / 1024:.0f} | {max(r.rss_peak.values(), default=0) / 1024:.0f} |"
            )


def compare(results: list[Result], limits: Limits) -> None:
    """With --variant: per case, each variant's median rates over its rounds and the ratio to the first variant."""
    variants = list(dict.fromkeys(r.variant for r in results if r.variant))
    if len(variants) < 2:
        return
    print("\nvariants, median over rounds (ratio to the first variant):")
    cases = dict.fromkeys((r.backend, r.size, r.chunk) for r in results)
    for backend_name, size, chunk in cases:
        runs = [r for r in results if (r.backend, r.size, r.chunk) == (backend_name, size, chunk) and r.status == "ok"]
        medians: dict[str, tuple[float, float, float, float, float]] = {}
        for variant in variants:
            mine = [r for r in runs if r.variant == variant]
            if mine:
                medians[variant] = (
                    statistics.median(r.rate(r.upload_s) for r in mine),
                    statistics.median(r.rate(r.download_s) for r in mine),
                    statistics.median(r.cpu_per_gib("upload") for r in mine),
                    statistics.median(r.cpu_per_gib("download") for r in mine),
                    max(max(r.rss_peak.values(), default=0) for r in mine) / 1024,
                )
        if variants[0] not in medians:
            continue
        base_up, base_down, base_cpu_up, base_cpu_down, _ = medians[variants[0]]
        for variant, (up, down, cpu_up, cpu_down, rss) in medians.items():
            pct = 100 * up / limits.write_mibs if limits.write_mibs else 0
            print(
                f"  {backend_name} {human(size)}/{human(chunk)} {variant}: upload {up:.1f} MiB/s ({pct:.0f}% disk, "
                f"x{up / base_up:.2f}; broker CPU {cpu_up:.2f} s/GiB, x{cpu_up / base_cpu_up:.2f}), "
                f"download {down:.1f} MiB/s (x{down / base_down:.2f}; broker CPU {cpu_down:.2f} s/GiB, "
                f"x{cpu_down / base_cpu_down:.2f}), max RSS {rss:.0f} MiB ({sum(r.variant == variant for r in runs)} "
                "rounds)"
            )


def parse_variant(text: str) -> tuple[str, str, dict[str, str]]:
    """LABEL=PATH[+MESH_NAME=VALUE...]: a label, a PYTHONPATH for the broker, and settings for it."""
    label, sep, rest = text.partition("=")
    path, *settings = rest.split("+")
    env = dict(setting.partition("=")[::2] for setting in settings)
    if not sep or not label or not path or not all(name.startswith("MESH_") and value for name, value in env.items()):
        raise argparse.ArgumentTypeError(f"a variant is LABEL=PYTHONPATH[+MESH_NAME=VALUE...], not {text!r}")
    return label, str(Path(path).resolve()), env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("1GiB,5GiB"), help="message sizes (1GiB,5GiB)")
    parser.add_argument(
        "--chunks", type=parse_sizes, default=parse_sizes("100MB,20MB"), help="chunk sizes (100MB,20MB)"
    )
    parser.add_argument("--backend", choices=("embedded", "postgres+s3", "both"), default="embedded")
    parser.add_argument("--quick", action="store_true", help="256 MiB messages only (overrides --sizes)")
    parser.add_argument("--markdown", action="store_true", help="also print rows for benchmarks/README.md")
    parser.add_argument("--data-parent", type=Path, default=Path(tempfile.gettempdir()), help="where data dirs go")
    parser.add_argument("--disk-test-size", type=parse_size, default=GiB, help="bytes for the disk speed test (1GiB)")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--commit", default="", help="label for the Commit column (default: git rev-parse HEAD)")
    parser.add_argument("--min-rate", type=float, default=2.0, help="MiB/s below which a case is abandoned")
    parser.add_argument("--read-timeout", type=float, default=120.0, help="seconds without a byte before failing")
    parser.add_argument(
        "--concurrent",
        type=int,
        default=1,
        metavar="N",
        help="N senders upload their own message of each size at once, then N receivers download and verify "
        "them at once; rates are aggregate MiB/s for the batch (1)",
    )
    parser.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="run each case with the broker on PYTHONPATH=PATH too, alternating variants (repeatable)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --variant: alternations of all variants (1)")
    args = parser.parse_args()
    if args.concurrent < 1:
        parser.error("--concurrent must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    sizes = [256 * MiB] if args.quick else args.sizes
    backends = ("embedded", "postgres+s3") if args.backend == "both" else (args.backend,)
    parent: Path = args.data_parent
    parent.mkdir(parents=True, exist_ok=True)

    free = shutil.disk_usage(parent).free
    if args.disk_test_size + RESERVE > free:
        print(f"not enough room for the disk test: {free / GiB:.1f} GiB free on {parent}", file=sys.stderr)
        return 1
    payload = Payload(args.seed)
    limits = Limits(args.disk_test_size, generate_rate(payload))
    limits.measure(parent)
    limits.measure(parent)

    variants: list[tuple[str, str, dict[str, str]]] = args.variant or [("", "", {})]
    results = [
        run_case(Result(name, size, chunk, args.concurrent, label, path, env), payload, parent, args)
        for name in backends
        for size in sizes
        for chunk in args.chunks
        for _ in range(args.rounds)
        for label, path, env in variants
    ]
    limits.measure(parent)
    report(results, limits, parent, args.markdown, args.commit)
    return 0 if all(r.status == "ok" or r.status.startswith("skipped") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
