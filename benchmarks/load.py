"""Locust load test of a real `mesh-broker serve` process (benchmarks/locustfile.py), checked against the KPIs.

Starts a broker on a throwaway data dir (embedded by default, or PostgreSQL + S3 with --backend postgres+s3),
creates the load mailboxes with the broker CLI (`mesh-broker import-sandbox`), runs Locust headless for a bounded
time, writes Locust's CSV and HTML reports under benchmarks/results/, and prints per-operation median, p99 and
requests/s, the message-cycle throughput (acknowledged messages/s: each is a completed send + download + ack)
and the CPU used by the broker and by the load generator. Exits non-zero if any request failed or any
operation's median exceeds 0.2 s or its p99 exceeds 1 s (the national KPIs).

--compare-sandbox also runs the same locustfile against mesh-sandbox (PyPI, installed into
benchmarks/results/.sandbox-venv, STORE_MODE=memory AUTH_MODE=full) and prints broker/sandbox ratios. The
sandbox's mailboxes come only from its packaged mailboxes.jsonl, so in that mode both servers use X26ABC1..3.

    .venv/bin/python benchmarks/load.py --users 64 --duration 60
    .venv/bin/python benchmarks/load.py --backend postgres+s3 --compare-sandbox

--ceiling also runs the locustfile against benchmarks/bare_server.py (in-memory, no checks) in the same run,
with one Locust process per core (--ceiling-processes), since there the load generator is the bottleneck.
With --compare-sandbox, the CPU each server and Locust spent per message cycle is turned into a budget: what
10x the sandbox's cycles would take of this machine's cores, and (with --ceiling) what it would leave the broker.
--flatness N runs twice in one go, on an empty store and on one seeded (benchmarks/seed.py) with N acknowledged
messages, and prints the change in throughput. --profile samples the broker with py-spy (in the bench extra)
during the run and prints where its busy time went. --cluster aims the same load at a running `make cluster`
(several nodes behind HAProxy, on PostgreSQL and S3) instead of starting a broker.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from budget import Cost, budget, describe
from latency import backend, free_port, wait_ready
from seed import seed

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LOCUSTFILE = ROOT / "benchmarks" / "locustfile.py"
SANDBOX_VENV = RESULTS / ".sandbox-venv"
BIN = Path(sys.executable).parent
KPI_MEDIAN_MS = 200.0
KPI_P99_MS = 1000.0
WORKFLOW = "LOAD_TEST"
SANDBOX_MAILBOXES = ["X26ABC1", "X26ABC2", "X26ABC3"]
ACK = "PUT /inbox/{id}/status/acknowledged"
SENDS = ("POST /outbox", "POST /outbox (chunk 1)")


@dataclass
class Row:
    name: str
    count: int
    failures: int
    median_ms: float
    p99_ms: float
    rps: float


@dataclass
class Result:
    label: str
    rows: dict[str, Row] = field(default_factory=dict)
    total: Row | None = None
    server_cpu_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    elapsed_s: float = 0.0
    html: Path | None = None

    @property
    def cycles_per_s(self) -> float:
        return self.rows[ACK].rps if ACK in self.rows else 0.0

    def cost(self) -> Cost:
        """Cycles and cores over the same wall-clock span (Locust's process lifetime, ramp-up included)."""
        wall = max(self.elapsed_s, 1e-9)
        cycles = self.rows[ACK].count if ACK in self.rows else 0
        return Cost(cycles / wall, self.server_cpu_s / wall, self.loadgen_cpu_s / wall)

    @property
    def sends_per_s(self) -> float:
        return sum(self.rows[name].rps for name in SENDS if name in self.rows)


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def read_stats(path: Path) -> tuple[dict[str, Row], Row | None]:
    rows: dict[str, Row] = {}
    total = None
    with path.open(newline="") as f:
        for line in csv.DictReader(f):
            row = Row(
                line["Name"],
                int(line["Request Count"]),
                int(line["Failure Count"]),
                _number(line["50%"]),
                _number(line["99%"]),
                _number(line["Requests/s"]),
            )
            if line["Name"] == "Aggregated":
                total = row
            else:
                rows[row.name] = row
    return rows, total


def tree_cpu(pid: int, *, reaped: bool = False) -> float:
    """CPU seconds (user + system) of a process and its live descendants; with reaped, also of the descendants
    they have waited for (PostgreSQL's postmaster reaps the backends that have ended)."""
    try:
        top = psutil.Process(pid)
        processes = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
        if reaped:
            total += times.children_user + times.children_system
    return total


def broker_env_argument(parser: argparse.ArgumentParser) -> None:
    """--broker-env MESH_NAME=VALUE (repeatable), shared by the scripts that start a broker."""
    parser.add_argument(
        "--broker-env",
        type=env_setting,
        action="append",
        default=[],
        metavar="MESH_NAME=VALUE",
        help="a setting for the broker started (repeatable; the caller's own MESH_* variables are not passed on), "
        "e.g. MESH_SQLITE_CACHE_MIB=64 to compare",
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.error
    import urllib.request

    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not become ready; see {log}")


def broker_env(data_dir: Path, port: int, backend_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(MESH_DATA_DIR=str(data_dir), MESH_PORT=str(port), MESH_SHARED_KEY="TestKey", MESH_HOST="127.0.0.1")
    env.update(backend_env)
    return env


def env_setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.startswith("MESH_"):
        raise argparse.ArgumentTypeError(f"expected MESH_NAME=VALUE, not {text!r}")
    return name, value


def create_mailboxes(env: dict[str, str], data_dir: Path, mailboxes: list[str]) -> None:
    """One `mesh-broker import-sandbox` call: the mailboxes (password "password") and an unrestricted workflow."""
    mailbox_file = data_dir / "load-mailboxes.jsonl"
    workflow_file = data_dir / "load-workflows.jsonl"
    mailbox_file.write_text(
        "".join(
            json.dumps({"mailbox_id": m, "mailbox_name": f"Load {m}", "ods_code": "X26", "password": "password"}) + "\n"
            for m in mailboxes
        )
    )
    workflow_file.write_text(json.dumps({"workflow_id": WORKFLOW, "senders": mailboxes, "receivers": mailboxes}))
    command = [sys.executable, "-m", "broker", "--data-dir", str(data_dir), "import-sandbox"]
    subprocess.run([*command, str(mailbox_file), str(workflow_file)], env=env, check=True, stdout=subprocess.DEVNULL)


def run_locust(
    label: str,
    host: str,
    mailboxes: list[str],
    args: argparse.Namespace,
    stamp: str,
    processes: int = 0,
    results: Path = RESULTS,
) -> Result:
    """One headless Locust run; `processes` overrides --processes (0: use it); its reports go to `results`."""
    processes = processes or args.processes
    prefix = results / f"load-{label}-{stamp}"
    html = prefix.with_name(prefix.name + ".html")
    command = [
        str(BIN / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(args.users),
        "-r",
        str(args.spawn_rate or max(1, args.users // 4)),
        "-t",
        f"{args.duration}s",
        "--stop-timeout",
        "5",
        "--csv",
        str(prefix),
        "--html",
        str(html),
        "--host",
        host,
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--mesh-mailboxes",
        ",".join(mailboxes),
        "--mesh-workflow",
        WORKFLOW,
        "--payload-size",
        str(args.size),
        "--chunks",
        str(args.chunks),
        "--think-time",
        str(args.think_time),
    ]
    if processes != 1:
        command += ["--processes", str(processes)]
    log = prefix.with_name(prefix.name + ".log")
    print(
        f"[{label}] locust: {args.users} users, {processes} process(es), {args.duration} s -> {prefix}_stats.csv",
        flush=True,
    )
    started = time.perf_counter()
    with log.open("wb") as out:
        locust = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = started + args.duration + 120
        while True:
            pid, status, usage = os.wait4(locust.pid, os.WNOHANG)
            if pid:
                locust.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() > deadline:
                locust.kill()
                raise RuntimeError(f"locust overran its time; see {log}")
            time.sleep(0.2)
    elapsed = time.perf_counter() - started
    stats = prefix.with_name(prefix.name + "_stats.csv")
    if not stats.exists():
        raise RuntimeError(f"locust wrote no stats (exit {locust.returncode}); see {log}")
    rows, total = read_stats(stats)
    # Locust's wait4 usage includes the worker processes it reaped (--processes).
    return Result(label, rows, total, loadgen_cpu_s=usage.ru_utime + usage.ru_stime, elapsed_s=elapsed, html=html)


def measure_broker(args: argparse.Namespace, mailboxes: list[str], stamp: str, *, seeded: int = 0) -> Result:
    """One broker run; `seeded` acknowledged messages between the load mailboxes are in the store first."""
    data_dir = Path(tempfile.mkdtemp(prefix="mesh-load-"))
    port = free_port()
    label = f"broker-{args.backend.replace('+', '-')}" + (f"-seeded{seeded}" if seeded else "")
    with backend(args.backend) as backend_env:
        env = broker_env(data_dir, port, {**backend_env, **dict(args.broker_env)})
        create_mailboxes(env, data_dir, mailboxes)
        if seeded:
            started = time.perf_counter()
            rate = seed(data_dir, seeded, mailboxes, WORKFLOW)
            print(
                f"[{label}] seeded {seeded:,} acknowledged messages in {time.perf_counter() - started:.0f} s "
                f"({rate:,.0f}/s)",
                flush=True,
            )
        log = RESULTS / f"load-{label}-{stamp}.broker.log"
        with log.open("wb") as out:
            broker = subprocess.Popen([sys.executable, "-m", "broker", "serve"], env=env, stdout=out, stderr=out)
        try:
            asyncio.run(wait_ready(f"http://127.0.0.1:{port}/messageexchange"))
            cpu_before = tree_cpu(broker.pid)
            with profiled(broker.pid, args, RESULTS / f"profile-{label}-{stamp}.txt"):
                result = run_locust(label, f"http://127.0.0.1:{port}", mailboxes, args, stamp)
            result.server_cpu_s = tree_cpu(broker.pid) - cpu_before
        finally:
            stop(broker)
            shutil.rmtree(data_dir, ignore_errors=True)
    return result


def measure_cluster(args: argparse.Namespace, mailboxes: list[str], stamp: str) -> Result:
    """Locust against a running `make cluster` (broker/devsupport/cluster.py): through its HAProxy, with the load
    mailboxes created in its store, counting the CPU of all its nodes."""
    from broker.devsupport.cluster import Cluster

    cluster = Cluster.load(args.cluster.resolve())
    data_dir = Path(tempfile.mkdtemp(prefix="mesh-load-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        create_mailboxes({**env, **cluster.environment}, data_dir, mailboxes)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    pids = [node.pid for node in cluster.nodes]
    cpu_before = sum(tree_cpu(pid) for pid in pids)
    result = run_locust(f"cluster-{len(pids)}-nodes", cluster.url, mailboxes, args, stamp)
    result.server_cpu_s = sum(tree_cpu(pid) for pid in pids) - cpu_before
    return result


@contextmanager
def profiled(pid: int, args: argparse.Namespace, out: Path) -> Iterator[None]:
    """With --profile, sample the broker with py-spy (all threads, 100 Hz) for the run, then print where the
    busy samples were: per thread, and the functions with the most samples of their own."""
    if not args.profile:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [spy, "record", "-p", str(pid), "-f", "raw", "-o", str(out), "-t", "-r", "100", "-d", str(args.duration)]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        recorder.wait(timeout=args.duration + 60)
    if out.exists():
        print(summarise_profile(out))


#: Leaf frames of threads waiting for work: py-spy cannot always tell them from busy ones, so they are dropped.
IDLE_LEAVES = ("concurrent/futures/thread.py:81", "threading.py", "queue.py", "GroupCommitWriter._serve")


def summarise_profile(path: Path, top: int = 15) -> str:
    """Busy samples per thread and the hottest functions. The event loop thread's own samples in `run_app`
    are uvloop's C code: polling sockets (idle) and reading/writing them (busy), which py-spy cannot separate."""
    threads: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in IDLE_LEAVES):
            continue
        samples = int(count)
        total += samples
        thread = frames[0].split(": ", 1)[-1]
        threads[thread] = threads.get(thread, 0) + samples
        own[frames[-1]] = own.get(frames[-1], 0) + samples
    lines = [f"profile {path} ({total} busy samples)", "busy samples by thread:"]
    lines += [f"  {n:>6} {name}" for name, n in sorted(threads.items(), key=lambda kv: -kv[1])]
    lines.append("functions with the most samples of their own:")
    lines += [f"  {100 * n / total:5.1f}% {name}" for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines)


def sandbox_python() -> Path:
    """The sandbox venv's python, installing mesh-sandbox (and uvicorn) there on first use."""
    python = SANDBOX_VENV / "bin" / "python"
    if not (SANDBOX_VENV / "bin" / "uvicorn").exists():
        print(f"installing mesh-sandbox into {SANDBOX_VENV} ...", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(SANDBOX_VENV)], check=True)
            pip = [str(python), "-m", "pip", "install", "--quiet", "mesh-sandbox", "uvicorn"]
            subprocess.run(pip, check=True)
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"--compare-sandbox: could not install mesh-sandbox into {SANDBOX_VENV}: {e}") from e
    return python


@contextmanager
def sandbox_server(port: int, stamp: str) -> Iterator[subprocess.Popen[bytes]]:
    python = sandbox_python()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH"}}
    env.update(STORE_MODE="memory", AUTH_MODE="full", SHARED_KEY="TestKey", ENV="load")
    log = RESULTS / f"load-sandbox-{stamp}.server.log"
    command = [str(python), "-m", "uvicorn", "mesh_sandbox.api:app", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*command, "--workers", "1", "--log-level", "warning"], env=env, stdout=out, stderr=out
        )
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/health", server, log)
        except RuntimeError as e:
            raise SystemExit(f"--compare-sandbox: mesh-sandbox did not start: {e}") from e
        yield server
    finally:
        stop(server)


def measure_sandbox(args: argparse.Namespace, stamp: str) -> Result:
    port = free_port()
    with sandbox_server(port, stamp) as server:
        cpu_before = tree_cpu(server.pid)
        result = run_locust("sandbox", f"http://127.0.0.1:{port}", SANDBOX_MAILBOXES, args, stamp)
        result.server_cpu_s = tree_cpu(server.pid) - cpu_before
    return result


def measure_ceiling(args: argparse.Namespace, mailboxes: list[str], stamp: str) -> Result:
    """The same load against benchmarks/bare_server.py: what this machine and load generator allow at all.

    With several Locust processes each gets a mailbox set of its own (the bare server takes any mailbox ID), so
    receivers in different processes never share an inbox, however few mailboxes the other runs had."""
    processes = args.ceiling_processes or os.cpu_count() or 1
    if processes > 1:
        mailboxes = [f"CEIL{n:03d}" for n in range(1, len(mailboxes) * processes + 1)]
    port = free_port()
    log = RESULTS / f"load-ceiling-{stamp}.server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("bare_server.py")), str(port)], stdout=out, stderr=out
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/messageexchange/_ping", server, log)
        cpu_before = tree_cpu(server.pid)
        result = run_locust("ceiling", f"http://127.0.0.1:{port}", mailboxes, args, stamp, processes)
        result.server_cpu_s = tree_cpu(server.pid) - cpu_before
    finally:
        stop(server)
    return result


def report(result: Result) -> list[str]:
    """Print the table; return the KPI breaches and failures."""
    problems = []
    print(f"\n[{result.label}] {result.elapsed_s:.0f} s wall, report {result.html}")
    print(f"{'operation':<38} {'requests':>9} {'fails':>6} {'median ms':>10} {'p99 ms':>8} {'req/s':>8}")
    for row in [*result.rows.values(), *([result.total] if result.total else [])]:
        print(
            f"{row.name:<38} {row.count:>9} {row.failures:>6} {row.median_ms:>10.0f} {row.p99_ms:>8.0f} {row.rps:>8.1f}"
        )
        if row.name == "Aggregated":
            continue
        if row.failures:
            problems.append(f"{result.label}: {row.name} had {row.failures} failed requests")
        if row.median_ms > KPI_MEDIAN_MS:
            problems.append(f"{result.label}: {row.name} median {row.median_ms:.0f} ms > {KPI_MEDIAN_MS:.0f} ms")
        if row.p99_ms > KPI_P99_MS:
            problems.append(f"{result.label}: {row.name} p99 {row.p99_ms:.0f} ms > {KPI_P99_MS:.0f} ms")
    wall = max(result.elapsed_s, 1e-9)
    print(
        f"message cycles (send + download + ack): {result.cycles_per_s:.1f}/s acknowledged, "
        f"{result.sends_per_s:.1f}/s sent"
    )
    cost = result.cost()
    print(
        f"CPU: server {result.server_cpu_s:.1f} s ({100 * result.server_cpu_s / wall:.0f}% of a core), "
        f"load generator {result.loadgen_cpu_s:.1f} s ({100 * result.loadgen_cpu_s / wall:.0f}% of a core) "
        f"on {os.cpu_count()} cores; per message cycle: server {cost.server_ms:.2f} ms, load generator "
        f"{cost.loadgen_ms:.2f} ms"
    )
    return problems


def compare(broker: Result, sandbox: Result) -> None:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "n/a"

    print(f"\n[{broker.label} vs sandbox] throughput ratios (broker / sandbox), median ratios (sandbox / broker)")
    print(f"message cycles/s: {ratio(broker.cycles_per_s, sandbox.cycles_per_s)}")
    if broker.total and sandbox.total:
        print(f"requests/s:       {ratio(broker.total.rps, sandbox.total.rps)}")
    for name, row in broker.rows.items():
        other = sandbox.rows.get(name)
        if other:
            speed = ratio(other.median_ms, row.median_ms)
            print(f"  {name:<38} median {row.median_ms:>5.0f} vs {other.median_ms:>5.0f} ms ({speed} faster)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("embedded", "postgres+s3"), default="embedded")
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--spawn-rate", type=float, default=0, help="users started per second (users / 4)")
    parser.add_argument("--duration", type=int, default=60, help="seconds of load")
    parser.add_argument("--processes", type=int, default=1, help="Locust worker processes (-1: one per core)")
    parser.add_argument("--size", type=int, default=1024, help="payload bytes per chunk")
    parser.add_argument("--chunks", type=int, default=3, help="chunks of a chunked message")
    parser.add_argument("--think-time", type=float, default=0.5, help="each user waits 0..x s between tasks")
    parser.add_argument("--mailboxes", type=int, default=0, help="load mailboxes (about one per receiver)")
    parser.add_argument("--compare-sandbox", action="store_true", help="also run against mesh-sandbox")
    broker_env_argument(parser)
    parser.add_argument("--profile", action="store_true", help="sample the broker with py-spy during the run")
    parser.add_argument(
        "--cluster",
        type=Path,
        nargs="?",
        const=Path(".cluster"),
        metavar="DIR",
        help="aim at the running `make cluster` whose state is in DIR (.cluster) instead of starting a broker",
    )
    parser.add_argument(
        "--flatness",
        type=int,
        default=0,
        metavar="N",
        help="run twice, on an empty store and on one holding N acknowledged messages, and compare (embedded)",
    )
    parser.add_argument(
        "--ceiling", action="store_true", help="also run against a bare in-memory aiohttp server (the ceiling)"
    )
    parser.add_argument(
        "--ceiling-processes",
        type=int,
        default=0,
        metavar="N",
        help="Locust worker processes for the ceiling run, where Locust is the bottleneck (default: one per core)",
    )
    args = parser.parse_args()
    if args.flatness and (args.backend != "embedded" or args.compare_sandbox or args.ceiling):
        parser.error("--flatness seeds the embedded store only, and not with --compare-sandbox")
    if args.cluster and (args.flatness or args.profile):
        parser.error("--cluster runs against the cluster's nodes as they are: no --flatness or --profile")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.compare_sandbox:
        mailboxes = SANDBOX_MAILBOXES
    else:
        count = args.mailboxes or max(2, math.ceil(args.users * 5 / 11))
        mailboxes = [f"LOAD{n:03d}" for n in range(1, count + 1)]
    print(
        f"{args.users} users ({args.processes} locust process(es)), {args.duration} s, {args.size} B payload, "
        f"{len(mailboxes)} mailboxes, "
        + (f"the cluster in {args.cluster}" if args.cluster else f"backend {args.backend}"),
        flush=True,
    )
    results = [measure_cluster(args, mailboxes, stamp) if args.cluster else measure_broker(args, mailboxes, stamp)]
    if args.compare_sandbox:
        results.append(measure_sandbox(args, stamp))
    if args.flatness:
        results.append(measure_broker(args, mailboxes, stamp, seeded=args.flatness))
    if args.ceiling:
        results.append(measure_ceiling(args, mailboxes, stamp))
    problems = [problem for result in results for problem in report(result)]
    if args.compare_sandbox:
        compare(results[0], results[1])
    if args.flatness:
        empty, full = results
        change = 100 * (full.cycles_per_s / empty.cycles_per_s - 1) if empty.cycles_per_s else float("nan")
        print(
            f"\nflatness: {empty.cycles_per_s:.1f} cycles/s empty, {full.cycles_per_s:.1f} cycles/s with "
            f"{args.flatness:,} acknowledged messages ({change:+.1f}%; target within 10%)"
        )
    if args.ceiling:
        ceiling = results[-1]
        share = 100 * results[0].cycles_per_s / ceiling.cycles_per_s if ceiling.cycles_per_s else float("nan")
        print(
            f"\nceiling: the bare server managed {ceiling.cycles_per_s:.1f} cycles/s; the broker reached {share:.0f}%"
        )
    if args.compare_sandbox:
        floor = results[-1].cost() if args.ceiling else None
        print("\n" + describe(budget(results[0].cost(), results[1].cost().cycles_per_s, os.cpu_count() or 1, floor)))
    # The KPIs bind our broker; the sandbox's and the bare server's figures are for comparison only.
    problems = [p for p in problems if not p.startswith(("sandbox:", "ceiling:"))]
    for problem in problems:
        print(f"FAIL {problem}")
    print("KPIs met (median <= 0.2 s, p99 <= 1 s, no failures)" if not problems else "KPIs NOT met")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
