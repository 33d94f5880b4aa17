"""The client side's targets (issue 15), measured against a real `mesh-broker serve` (embedded backend):

- latency: a 1 KiB file dropped into agent A's OUT until it is in agent B's IN (PollPeriod 1 minute: arrivals
  come through the long poll), median and p95 over --samples files;
- idle: HTTP requests the two idle agents make to the broker per mailbox over --idle-seconds with a long-poll wait
  of --wait seconds (from the broker's own request counter);
- throughput: --files small files through the pair, files/s from the first drop to the last file in IN, every
  file checked (none lost, none twice); the CPU seconds each process (broker, sender agent, receiver agent) spent
  meanwhile, to say which one is the limit;
- large: one --large-size file through the pair, each agent's peak RSS (VmHWM);
- client: one --client-size message in --client-chunk chunks, --rounds times, alternating in the same run against
  the same broker: the raw aiohttp upload and download of large_transfer.py (payload generated in memory, download
  hashed and dropped) and MeshClient's (upload from a file, download to a file, fsynced, its SHA-256 checked);
  MiB/s of each and the client's ratio to raw (target: within 10 %). The raw download writes nothing, so the
  client also downloads into a file on tmpfs (/dev/shm, where fsync costs nothing): that figure against raw is the
  client's own cost, and its download to disk is set beside the disk's fsync'd write speed measured in the run.

--parts picks some of them (default: all, in that order).

    .venv/bin/python benchmarks/agent.py --files 10000 --large-size 5GiB --client-size 1GiB
    .venv/bin/python benchmarks/agent.py --parts throughput --files 10000
    .venv/bin/python benchmarks/agent.py --parts client --client-size 1GiB --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from broker.client.client import Credentials, MeshClient
from large_transfer import Payload, Result, disk_limits, download, parse_size, upload
from latency import Tokens, free_port, start_broker, wait_ready

KEY = "TestKey"
DTS = (
    "<DTSControl><Version>1.0</Version><AddressType>DTS</AddressType><MessageType>Data</MessageType>"
    "<WorkflowId>TEST_WORKFLOW</WorkflowId><To_DTS>{to}</To_DTS><LocalId>{local}</LocalId>"
    "<AllowChunking>Y</AllowChunking></DTSControl>"
)
PARTS = ("latency", "idle", "throughput", "large", "client")
MiB = 1024 * 1024


def agent(
    home: Path, url: str, mailbox: str, wait: int, parallel: int, source: Path | None = None
) -> subprocess.Popen[bytes]:
    """A `mesh-broker agent` for one mailbox; source: run the agent from that tree instead (an A/B baseline)."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "agent.toml"
    config.write_text(
        f'url = "{url}"\nshared_key = "{KEY}"\npoll_period_minutes = 1\nwait_seconds = {wait}\n'
        f"parallel = {parallel}\n"
        f'[[mailbox]]\nid = "{mailbox}"\npassword = "password"\nroot = "{home / mailbox}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    log = (home / "agent.log").open("wb")
    if source is not None:
        env["PYTHONPATH"] = str(source)
    process = subprocess.Popen(
        [sys.executable, "-m", "broker", "agent", "--config", str(config)],
        env=env,
        stdout=log,
        stderr=log,
        cwd=source,
    )
    deadline = time.monotonic() + 60
    while not (home / mailbox / "TEMP").is_dir() or not (home / "agent.log").read_bytes().count(b"agent_started"):
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"agent for {mailbox} did not start: {(home / 'agent.log').read_text()}")
        time.sleep(0.05)
    return process


def drop(out: Path, stem: str, data: bytes, to: str) -> None:
    (out / f"{stem}.dat").write_bytes(data)
    (out / f"{stem}.ctl").write_text(DTS.format(to=to, local=stem))


def in_count(folder: Path) -> int:
    return sum(1 for name in os.listdir(folder) if name.endswith(".ctl"))


def vm_hwm_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024  # type: ignore[union-attr]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def inbox_requests(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    route = r'route="/messageexchange/\{mailbox_id\}/inbox"'
    pattern = r"mesh_http_request_duration_seconds_count\{[^}]*" + route + r"[^}]*\} ([0-9.e+]+)"
    return sum(float(v) for v in re.findall(pattern, text))


def latency(out: Path, inbox: Path, samples: int) -> None:
    took = []
    for n in range(samples):
        before = in_count(inbox)
        started = time.perf_counter()
        drop(out, f"lat-{n}", os.urandom(1024), "X26ABC2")
        while in_count(inbox) == before:
            time.sleep(0.002)
        took.append(time.perf_counter() - started)
    took.sort()
    print(
        f"latency 1 KiB OUT->IN: median {statistics.median(took) * 1000:.0f} ms, "
        f"p95 {took[int(len(took) * 0.95) - 1] * 1000:.0f} ms, max {took[-1] * 1000:.0f} ms ({len(took)} files)"
    )


def idle(metrics_port: int, seconds: float, wait: int) -> None:
    time.sleep(2.0)
    first = inbox_requests(f"http://127.0.0.1:{metrics_port}/metrics")
    time.sleep(seconds)
    requests = inbox_requests(f"http://127.0.0.1:{metrics_port}/metrics") - first
    periods = seconds / wait
    print(
        f"idle: {requests:.0f} inbox requests from 2 mailboxes in {seconds:.0f} s with wait={wait}: "
        f"{requests / 2 / periods:.2f} per mailbox per wait period"
    )


@dataclass(frozen=True)
class Rate:
    """A throughput run: files a second, and each process's CPU milliseconds a file."""

    files_per_second: float
    cpu_ms: dict[str, float]


def throughput(out: Path, inbox: Path, files: int, pids: dict[str, int], label: str = "") -> Rate:
    before = in_count(inbox)
    payloads = {f"many-{n:05d}": os.urandom(200) + n.to_bytes(4, "big") for n in range(files)}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    for stem, data in payloads.items():
        drop(out, stem, data, "X26ABC2")
    dropped = time.perf_counter() - started
    failed = out.parent / "FAILED"
    progress, seen = time.monotonic(), before
    timeline: list[tuple[float, int]] = []  # (seconds, files in IN) every 10 s: does the rate fall as IN fills?
    while True:
        listed = time.perf_counter()
        if (count := in_count(inbox)) >= before + files:
            break
        if listed - started >= 10 * (len(timeline) + 1):
            timeline.append((listed - started, count - before))
        listed = time.perf_counter() - listed
        if count != seen:
            progress, seen = time.monotonic(), count
        if time.monotonic() - progress > 60 or any(failed.iterdir()):
            raise SystemExit(
                f"stuck at {count - before} of {files} files in IN; FAILED: {sorted(failed.iterdir())[:4]}"
            )
        # Listing IN costs more as it fills (20,000 names at 10,000 files): at most a twentieth of a core here,
        # which the agents and the broker on this machine would otherwise lose.
        time.sleep(max(0.05, 20 * listed))
    elapsed = time.perf_counter() - started
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    time.sleep(1.0)
    received = {}
    for control in inbox.glob("*.ctl"):
        local = re.search(r"<LocalId>(.*?)</LocalId>", control.read_text()).group(1)  # type: ignore[union-attr]
        if local.startswith("many-"):
            assert local not in received, f"{local} delivered twice"
            received[local] = control.with_suffix(".dat").read_bytes()
    assert received == payloads, "lost or changed files"
    shares = ", ".join(
        f"{name} {seconds:.1f} s ({seconds / elapsed:.0%} of a core, {seconds / files * 1000:.2f} ms a file)"
        for name, seconds in cpu.items()
    )
    cpu_ms = sum(cpu.values()) / files * 1000
    rates, last = [], (0.0, 0)
    for point in [*timeline, (elapsed, files)]:
        rates.append(f"{(point[1] - last[1]) / (point[0] - last[0]):.0f}")
        last = point
    print(
        f"throughput{label}: {files} files in {elapsed:.1f} s = {files / elapsed:.0f} files/s, none lost or twice "
        f"(dropping them took {dropped:.1f} s); CPU meanwhile: {shares}; {cpu_ms:.1f} ms of CPU a file; "
        f"files/s in each 10 s: {' '.join(rates)}",
        flush=True,
    )
    return Rate(files / elapsed, {name: seconds / files * 1000 for name, seconds in cpu.items()})


def throughput_ab(root: Path, url: str, broker: int, args: argparse.Namespace) -> None:
    """Baseline agents (--baseline tree) and this tree's, alternated against the same broker, a fresh pair each."""
    rates: dict[str, list[Rate]] = {"baseline": [], "this tree": []}
    for round_number in range(args.rounds):
        trees: list[tuple[str, Path | None]] = [("baseline", args.baseline), ("this tree", None)]
        # A B, B A, A B, ...: neither tree always runs second, after the other has warmed the broker.
        for label, source in trees if round_number % 2 == 0 else trees[::-1]:
            home = root / f"ab-{round_number}-{'base' if source else 'new'}"
            a = agent(home / "a", url, "X26ABC1", args.wait, args.parallel, source)
            b = agent(home / "b", url, "X26ABC2", args.wait, args.parallel, source)
            try:
                out, inbox = home / "a" / "X26ABC1" / "OUT", home / "b" / "X26ABC2" / "IN"
                pids = {"broker": broker, "sender agent": a.pid, "receiver agent": b.pid}
                rates[label].append(throughput(out, inbox, args.files, pids, f" ({label})"))
            finally:
                for process in (a, b):
                    process.terminate()
                for process in (a, b):
                    process.wait(30)
    base = statistics.median(r.files_per_second for r in rates["baseline"])
    new = statistics.median(r.files_per_second for r in rates["this tree"])
    print(
        f"throughput A/B, medians of {args.rounds}: baseline {base:.0f}, this tree {new:.0f} files/s "
        f"({new / base:.2f}x)"
    )
    for label, runs in rates.items():
        cpu = {name: sorted(r.cpu_ms[name] for r in runs) for name in runs[0].cpu_ms}
        spread = ", ".join(f"{name} {statistics.median(ms):.2f} ({ms[0]:.2f}-{ms[-1]:.2f})" for name, ms in cpu.items())
        total = sorted(sum(r.cpu_ms.values()) for r in runs)
        print(
            f"CPU ms a file, {label}, median (range): {spread}; all {statistics.median(total):.2f} "
            f"({total[0]:.2f}-{total[-1]:.2f})"
        )


def large(
    out: Path, inbox: Path, size: int, sender: subprocess.Popen[bytes], receiver: subprocess.Popen[bytes]
) -> None:
    big = out / "big.dat"
    with big.open("wb") as f:
        block = os.urandom(MiB)
        for _ in range(size // len(block)):
            f.write(block)
    started = time.perf_counter()
    (out / "big.ctl").write_text(DTS.format(to="X26ABC2", local="big"))
    while not any(True for c in inbox.glob("*.ctl") if "<LocalId>big<" in c.read_text()):
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    print(
        f"large: {size / 2**30:.2f} GiB OUT->IN in {elapsed:.1f} s; peak RSS sender agent "
        f"{vm_hwm_mib(sender.pid):.0f} MiB, receiver agent {vm_hwm_mib(receiver.pid):.0f} MiB"
    )
    for path in inbox.glob("*.dat"):
        if path.stat().st_size == size:
            path.unlink()
    sent = out.parent / "SENT" / "big.dat"
    sent.unlink(missing_ok=True)


async def client_vs_raw(url: str, root: Path, size: int, chunk: int, rounds: int) -> None:
    """raw, client, raw, client, ...: the same message size and chunk size against the same broker."""
    payload = Payload(20261201)
    source = root / "client.bin"
    digest = hashlib.sha256()
    with source.open("wb") as f:
        for piece in payload.pieces(0, size):
            digest.update(piece)
            f.write(piece)
    target = root / "client-got.bin"
    memory_target = tmpfs_file()
    disk_write = disk_limits(root, size)[0]
    base = f"{url}/messageexchange"
    rates: dict[str, list[tuple[float, float]]] = {"raw": [], "client": []}
    to_memory: list[float] = []
    # This process's CPU seconds a GiB for each way (steadier than MiB/s on a shared machine).
    cpu: dict[str, list[float]] = {"raw up": [], "client up": [], "raw down": [], "client down": [], "client tmpfs": []}
    gib = size / (1024 * MiB)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    for _ in range(rounds):
        # raw: large_transfer.py's own upload and download
        result = Result(backend="embedded", size=size, chunk=chunk)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            spent = time.process_time()
            sent, up = await upload(session, base, payload, result, 0)
            cpu["raw up"].append((time.process_time() - spent) / gib)
            spent = time.process_time()
            down = await download(session, base, Tokens("X26ABC2"), sent, result, 0)
            cpu["raw down"].append((time.process_time() - spent) / gib)
        async with MeshClient(Credentials(url, "X26ABC2", "password", KEY.encode())) as bob:
            await bob.acknowledge(sent.message_id)
        rates["raw"].append((size / MiB / up, size / MiB / down))
        # client: from a file, to a file
        async with MeshClient(Credentials(url, "X26ABC1", "password", KEY.encode()), chunk_size=chunk) as alice:
            await alice.handshake()
            started, spent = time.perf_counter(), time.process_time()
            message_id = await alice.send("X26ABC2", source, workflow_id="TEST_WORKFLOW")
            up = time.perf_counter() - started
            cpu["client up"].append((time.process_time() - spent) / gib)
        async with MeshClient(Credentials(url, "X26ABC2", "password", KEY.encode())) as bob:
            started, spent = time.perf_counter(), time.process_time()
            await bob.download(message_id, target)
            down = time.perf_counter() - started
            cpu["client down"].append((time.process_time() - spent) / gib)
            if memory_target is not None:
                started, spent = time.perf_counter(), time.process_time()
                await bob.download(message_id, memory_target)
                to_memory.append(size / MiB / (time.perf_counter() - started))
                cpu["client tmpfs"].append((time.process_time() - spent) / gib)
                same_bytes(memory_target, digest)
                memory_target.unlink()
            await bob.acknowledge(message_id)
        same_bytes(target, digest)
        target.unlink()
        rates["client"].append((size / MiB / up, size / MiB / down))
        print(
            f"client round: raw up {rates['raw'][-1][0]:.0f} / down {rates['raw'][-1][1]:.0f} MiB/s, "
            f"client up {rates['client'][-1][0]:.0f} / down {rates['client'][-1][1]:.0f} MiB/s to disk"
            + (f", {to_memory[-1]:.0f} MiB/s to tmpfs" if to_memory else ""),
            flush=True,
        )
    source.unlink()

    def median(name: str, way: int) -> float:
        return statistics.median(r[way] for r in rates[name])

    print(
        f"client: {size / MiB:.0f} MiB in {chunk} B chunks, {rounds} alternated rounds, medians: "
        f"upload raw {median('raw', 0):.0f} / client {median('client', 0):.0f} MiB/s "
        f"(client/raw {median('client', 0) / median('raw', 0):.2f}), "
        f"download raw {median('raw', 1):.0f} / client {median('client', 1):.0f} MiB/s "
        f"(client/raw {median('client', 1) / median('raw', 1):.2f})"
    )
    to_disk = median("client", 1)
    print(
        f"client download to disk {to_disk:.0f} MiB/s against the disk's fsync'd write {disk_write:.0f} MiB/s "
        f"({to_disk / disk_write:.2f})"
        + (
            f"; to tmpfs {statistics.median(to_memory):.0f} MiB/s (client/raw "
            f"{statistics.median(to_memory) / median('raw', 1):.2f})"
            if to_memory
            else ""
        )
    )
    print(
        "client-side CPU seconds a GiB (this process, medians): "
        + ", ".join(f"{way} {statistics.median(values):.2f}" for way, values in cpu.items() if values)
    )


def tmpfs_file() -> Path | None:
    """Where the client's download costs no disk writes, to compare like with like against raw's (None: no tmpfs)."""
    shm = Path("/dev/shm")
    return shm / f"mesh-bench-client-{os.getpid()}.bin" if shm.is_dir() else None


def same_bytes(path: Path, digest: hashlib._Hash) -> None:
    got = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(MiB):
            got.update(piece)
    assert got.digest() == digest.digest(), f"the client's download to {path} differs from what it sent"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--wait", type=int, default=20, help="the agents' long-poll wait (seconds)")
    parser.add_argument("--parallel", type=int, default=16, help="the agents' `parallel` setting")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--large-size", type=parse_size, default=parse_size("5GiB"))
    parser.add_argument("--client-size", type=parse_size, default=parse_size("1GiB"))
    parser.add_argument("--client-chunk", type=parse_size, default=parse_size("100MB"))
    parser.add_argument(
        "--rounds", type=int, default=2, help="A/B alternations (client part; throughput with --baseline)"
    )
    parser.add_argument(
        "--baseline", type=Path, help="throughput: alternate with agents run from this tree (e.g. a `git archive`)"
    )
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")

    with tempfile.TemporaryDirectory(prefix="bench-agent-", dir=Path(__file__).parent / "results") as tmp:
        root = Path(tmp)
        port, metrics_port = free_port(), free_port()
        broker = start_broker(root / "broker", port, {"MESH_METRICS_PORT": str(metrics_port)})
        url = f"http://127.0.0.1:{port}"
        try:
            for attempt in range(6):  # 10 s each: a loaded machine can take longer than one to start a broker
                try:
                    asyncio.run(wait_ready(url))
                    break
                except RuntimeError:
                    if attempt == 5 or broker.poll() is not None:
                        raise
            if "throughput" in parts and args.baseline is not None:
                throughput_ab(root, url, broker.pid, args)
                parts.remove("throughput")
            if set(parts) - {"client"}:
                a = agent(root / "a", url, "X26ABC1", args.wait, args.parallel)
                b = agent(root / "b", url, "X26ABC2", args.wait, args.parallel)
                out, inbox = root / "a" / "X26ABC1" / "OUT", root / "b" / "X26ABC2" / "IN"
                try:
                    if "latency" in parts:
                        latency(out, inbox, args.samples)
                    if "idle" in parts:
                        idle(metrics_port, args.idle_seconds, args.wait)
                    if "throughput" in parts:
                        pids = {"broker": broker.pid, "sender agent": a.pid, "receiver agent": b.pid}
                        throughput(out, inbox, args.files, pids)
                    if "large" in parts:
                        large(out, inbox, args.large_size, a, b)
                finally:
                    for process in (a, b):
                        process.terminate()
                    for process in (a, b):
                        process.wait(30)
            if "client" in parts:
                asyncio.run(client_vs_raw(url, root, args.client_size, args.client_chunk, args.rounds))
        finally:
            broker.terminate()
            broker.wait(30)


if __name__ == "__main__":
    main()
