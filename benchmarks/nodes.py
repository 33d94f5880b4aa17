"""Node scaling (issue 18): the same Locust load on 1, 2, 4 ... broker nodes sharing one PostgreSQL and one S3.

Starts, once, PostgreSQL (the server binaries on PATH or under /usr/lib/postgresql, as `make cluster` finds them,
fsync on, with pg_stat_statements preloaded when the server has it) and moto's S3 server. Then for each node count:
a fresh database and bucket, `mesh-broker migrate`, N `mesh-broker serve` nodes and HAProxy with
deploy/haproxy/haproxy.cfg in front of them (broker/devsupport/cluster.py's functions, the `make cluster`
topology), the load mailboxes, and one run of benchmarks/locustfile.py through HAProxy (benchmarks/load.py's
runner). The window measured is --duration seconds that start --warmup seconds after the nodes see Locust's first
request (past HAProxy's slow start, the nodes' first statements and Locust's start-up); every counter is read at
its two ends, so all the figures cover the same seconds. Locust runs several worker processes when the machine has
the cores (--locust-processes), so it is not the bottleneck; its own CPU is reported beside the rest.

Reported per node count (benchmarks/nodes_summary.py does the arithmetic): message cycles/s (acknowledgements,
counted by the nodes' mesh_messages_acknowledged_total) and requests/s (their request histograms); CPU per cycle
of the broker (summed over the nodes), PostgreSQL (the postmaster and every backend and background process, reaped
ones included), moto, HAProxy and Locust (its workers included); the machine's busy cores (other work on it
included); and, per cycle, PostgreSQL's round trips, transactions, rows written, pages dirtied, WAL bytes and WAL
fsyncs. Throughput against one node's is the scaling figure.

Round trips: pg_stat_statements counts every top-level statement a client sends, BEGIN and COMMIT included.
asyncpg sends each statement as its own exchange (Bind/Execute/Sync on a statement it has prepared) and waits for
the answer, so statements are round trips; a server-side function doing several statements is one. Not counted:
the Parse of a statement's first use on a connection (the warm-up takes those) and LISTEN's notifications. Without
pg_stat_statements the table says n/a and the transactions (pg_stat_database) remain. Busy backends add their
pg_stat_database and pg_stat_wal counts about once a second, so both readings, taken under the same steady load,
lag by about the same second and their difference is the window's (to about 1 s in --duration).

Latency (worst p50 / p99) and failures are Locust's, over its whole run. Writes DIR/nodes.json and
DIR/nodes.md, Locust's CSV/HTML per run, and prints the tables and the capacity plan
(benchmarks/capacity_model.py) that the measured figures give. Exits 1 if any request failed.

    .venv/bin/python benchmarks/nodes.py --nodes 1,2,4 --duration 30 --users 64
    .venv/bin/python benchmarks/nodes.py --nodes 1,2,4,8 --duration 60 --out /tmp/nodes   # a many-core machine
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from prometheus_client.parser import text_string_to_metric_families

import capacity_model
from broker.devsupport import cluster as local_cluster
from broker.devsupport import pg_server, s3_server
from load import create_mailboxes, run_locust, tree_cpu
from nodes_summary import Database, Run, markdown, rounded, scaling

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = "LOAD_TEST"
#: Locust runs this long past the window, so that it is still loading when the window's end is read.
LOCUST_MARGIN_SECONDS = 5
#: Connections a node opens at most: MESH_DB_POOL_MAX (10) and the LISTEN connection of the directory cache.
CONNECTIONS_PER_NODE = 11


@dataclass
class Servers:
    """The PostgreSQL and moto processes every node count shares."""

    root: Path
    postgres_pid: int
    postgres_port: int
    moto_pid: int
    s3_url: str
    statements: bool

    def admin_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.postgres_port}/{database}"


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root (as cluster.py does it)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


async def configure(dsn: str, max_connections: int) -> bool:
    """Room for every node's connections, and pg_stat_statements preloaded where the server has it (it takes
    effect at the restart that follows); returns whether it is there."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ALTER SYSTEM SET max_connections = {int(max_connections)}")
        available = await conn.fetchval(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'"
        )
        if available:
            await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        return bool(available)
    finally:
        await conn.close()


async def create_extension(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    finally:
        await conn.close()


@contextmanager
def servers(root: Path, max_nodes: int) -> Iterator[Servers]:
    """PostgreSQL (cluster.py's, restarted once with this benchmark's settings) and moto; stopped afterwards."""
    pid, port = local_cluster.start_postgres(root)
    moto_pid = 0
    try:
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        statements = asyncio.run(configure(dsn, max(200, CONNECTIONS_PER_NODE * max_nodes + 50)))
        home = (root / "postgres").resolve()
        data = home / "data"
        # -l: the restarted server's output goes to its log, not to this pipe (which would then never close).
        pg_ctl = [pg_server.server_binary("pg_ctl"), "-D", str(data), "-l", str(home / "log")]
        restart = [*pg_ctl, "-m", "fast", "-w", "restart"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        subprocess.run(as_postgres(restart), check=True, capture_output=True, env=env, timeout=120)
        pid = int((data / "postmaster.pid").read_text().split()[0])
        if statements:
            asyncio.run(create_extension(dsn))
        moto_pid, s3_url = local_cluster.start_s3(root)
        yield Servers(root, pid, port, moto_pid, s3_url, statements)
    finally:
        if moto_pid:
            local_cluster.terminate(moto_pid, 10.0)
        local_cluster.stop_postgres(root)


# measuring -------------------------------------------------------------------------------------------------------


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle, summed over its cores."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0))


async def database_readings(
    dsn: str, database: str, statements: bool
) -> tuple[dict[str, tuple[str, int, int]], dict[str, int]]:
    """On one connection, one after the other: pg_stat_statements for the database (queryid -> (query, calls,
    shared blocks dirtied); empty without it), then its transactions and rows written and the cluster's WAL."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = []
        if statements:
            rows = await conn.fetch(
                "SELECT s.queryid, s.query, s.calls, s.shared_blks_dirtied FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
                database,
            )
        row = await conn.fetchrow(
            "SELECT xact_commit + xact_rollback AS transactions, "
            "tup_inserted + tup_updated + tup_deleted AS rows_written FROM pg_stat_database WHERE datname = $1",
            database,
        )
        counts = {"transactions": int(row["transactions"]), "rows_written": int(row["rows_written"])}
        if await conn.fetchval("SELECT current_setting('server_version_num')::int >= 140000"):
            wal = await conn.fetchrow("SELECT wal_bytes, wal_sync FROM pg_stat_wal")
            counts.update(wal_bytes=int(wal["wal_bytes"]), wal_syncs=int(wal["wal_sync"]))
    finally:
        await conn.close()
    by_query = {str(r["queryid"]): (r["query"], int(r["calls"]), int(r["shared_blks_dirtied"])) for r in rows}
    return by_query, counts


def node_counters(node: local_cluster.Node) -> tuple[float, float]:
    """(messages acknowledged, HTTP requests answered) by one node since it started, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    acknowledged = requests = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mesh_messages_acknowledged_total":
                acknowledged += sample.value
            elif sample.name == "mesh_http_request_duration_seconds_count":
                requests += sample.value
    return acknowledged, requests


def locust_pid() -> int:
    """The Locust process load.run_locust started (a child of this one); its workers are its children."""
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if any("locust" in part for part in child.cmdline()[:2]):
                return int(child.pid)
    return 0


@dataclass
class Snapshot:
    """Every counter, read at one moment (within the milliseconds the readings take)."""

    at: float
    cpu: dict[str, float]
    nodes: list[float]
    machine: float
    acknowledged: float
    requests: float
    statements: dict[str, tuple[str, int, int]]
    database: dict[str, int]


def snapshot(servers: Servers, cluster: local_cluster.Cluster, loadgen: int, database: str) -> Snapshot:
    """The slower readings (HTTP, SQL) either side of the CPU counters and the clock, which are read together."""
    counters = [node_counters(node) for node in cluster.nodes]
    nodes = [tree_cpu(node.pid) for node in cluster.nodes]
    cpu = {
        "broker": sum(nodes),
        "postgres": tree_cpu(servers.postgres_pid, reaped=True),
        "moto": tree_cpu(servers.moto_pid),
        "haproxy": tree_cpu(cluster.pids["haproxy"]),
        "loadgen": tree_cpu(loadgen, reaped=True),
    }
    at, machine = time.monotonic(), machine_busy()
    statements, database_counts = asyncio.run(database_readings(servers.admin_dsn(), database, servers.statements))
    return Snapshot(
        at=at,
        cpu=cpu,
        nodes=nodes,
        machine=machine,
        acknowledged=sum(a for a, _ in counters),
        requests=sum(r for _, r in counters),
        statements=statements,
        database=database_counts,
    )


def statement_changes(
    before: dict[str, tuple[str, int, int]], after: dict[str, tuple[str, int, int]]
) -> tuple[int, int, list[tuple[str, int]]]:
    """(calls, blocks dirtied, the statements by calls) between two readings."""
    calls = dirtied = 0
    each = []
    for key, (query, n, blocks) in after.items():
        old = before.get(key, (query, 0, 0))
        calls += n - old[1]
        dirtied += blocks - old[2]
        if n - old[1]:
            each.append((" ".join(query.split())[:160], n - old[1]))
    return calls, dirtied, sorted(each, key=lambda item: -item[1])


# one node count ------------------------------------------------------------------------------------------------


def locust_processes(requested: int, nodes: int) -> int:
    """The worker processes Locust gets: as asked, or one per node up to a quarter of the machine's cores (the
    nodes, PostgreSQL and HAProxy need the rest)."""
    if requested:
        return requested
    return max(1, min(nodes, (os.cpu_count() or 1) // 4))


def load_mailboxes(users: int, processes: int) -> list[str]:
    """About one mailbox per receiver (as load.py), a multiple of the Locust processes, so that receivers in
    different processes never share an inbox (benchmarks/locustfile.py deals them out by worker index)."""
    count = max(2, math.ceil(users * 5 / 11))
    count = math.ceil(count / processes) * processes
    return [f"LOAD{n:03d}" for n in range(1, count + 1)]


def start_nodes(servers: Servers, root: Path, nodes: int, database: str) -> local_cluster.Cluster:
    asyncio.run(create_database(servers.admin_dsn(), database))
    bucket = asyncio.run(s3_server.create_bucket(servers.s3_url))
    root.mkdir(parents=True)
    cluster = local_cluster.Cluster(
        directory=str(root),
        environment={
            "MESH_DATABASE_URL": servers.admin_dsn(database),
            "MESH_BLOB_URL": f"s3://{bucket}/blobs",
            "MESH_S3_ENDPOINT_URL": servers.s3_url,
            "MESH_S3_REGION": s3_server.REGION,
            "MESH_SHARED_KEY": local_cluster.SHARED_KEY,
            **s3_server.fake_credentials(),
        },
        nodes=[
            local_cluster.Node(f"node{n}", local_cluster.free_port(), local_cluster.free_port())
            for n in range(1, nodes + 1)
        ],
        balancer_port=local_cluster.free_port(),
        stats_port=local_cluster.free_port(),
        postgres_port=servers.postgres_port,
        s3_url=servers.s3_url,
    )
    cluster.save()
    try:
        local_cluster.migrate(cluster)
        for node in cluster.nodes:
            local_cluster.start_node(cluster, node)
        cluster.pids["haproxy"] = local_cluster.start_haproxy(cluster)
        cluster.save()
        local_cluster.wait_http(f"{cluster.url}/_ping", cluster.pids["haproxy"], root / "haproxy.log")
    except BaseException:
        stop_nodes(cluster)
        raise
    return cluster


def stop_nodes(cluster: local_cluster.Cluster) -> None:
    for node in cluster.nodes:
        if node.pid:
            local_cluster.stop_node(node)
    if cluster.pids.get("haproxy"):
        local_cluster.terminate(cluster.pids["haproxy"], 10.0)


async def create_database(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def locust_args(args: argparse.Namespace, users: int) -> argparse.Namespace:
    """What load.run_locust reads: one run for the warm-up, the window and a margin after it; the whole load
    starts within about a second (spawn rate = users)."""
    return argparse.Namespace(
        users=users,
        spawn_rate=users,
        duration=args.warmup + args.duration + LOCUST_MARGIN_SECONDS,
        size=args.size,
        chunks=args.chunks,
        think_time=args.think_time,
        processes=1,
    )


def wait_for_load(cluster: local_cluster.Cluster, running: Future[Any]) -> None:
    """Until the nodes answer Locust's first requests (its start takes a few seconds of imports)."""
    before = sum(node_counters(node)[1] for node in cluster.nodes)
    deadline = time.monotonic() + 60
    while sum(node_counters(node)[1] for node in cluster.nodes) <= before:
        if running.done():
            running.result()
            raise RuntimeError("Locust ended before its load reached the nodes")
        if time.monotonic() > deadline:
            raise RuntimeError("no request reached the nodes within 60 s of starting Locust")
        time.sleep(0.2)


def measure(servers: Servers, args: argparse.Namespace, nodes: int, out: Path, stamp: str) -> tuple[Run, Any]:
    """One node count: one Locust run; the window is --duration seconds after --warmup seconds of its load, and
    every counter (CPU of each part, the nodes' acknowledgements and requests, PostgreSQL's) is read at its two
    ends, so all of them cover the same seconds."""
    users = args.users_per_node * nodes if args.users_per_node else args.users
    processes = locust_processes(args.locust_processes, nodes)
    mailboxes = load_mailboxes(users, processes)
    database = f"mesh_nodes_{nodes}"
    cluster = start_nodes(servers, servers.root / f"n{nodes}", nodes, database)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        folder = cluster.root / "load"
        folder.mkdir()
        create_mailboxes({**env, **cluster.environment}, folder, mailboxes)
        print(f"[{nodes} node(s)] {users} users, {processes} Locust process(es), {len(mailboxes)} mailboxes")
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(
                run_locust, f"n{nodes}", cluster.url, mailboxes, locust_args(args, users), stamp, processes, out
            )
            wait_for_load(cluster, running)
            time.sleep(args.warmup)
            loadgen = locust_pid()
            if not loadgen:
                raise RuntimeError("the Locust process load.run_locust started was not found")
            before = snapshot(servers, cluster, loadgen, database)
            time.sleep(args.duration)
            after = snapshot(servers, cluster, loadgen, database)
            if running.done():
                raise RuntimeError("Locust ended inside the window: its figures would not cover it")
            result = running.result()
    finally:
        stop_nodes(cluster)
    calls, dirtied, top = statement_changes(before.statements, after.statements)
    late = {name: after.database[name] - before.database[name] for name in after.database}
    window = after.at - before.at
    cycles = round(after.acknowledged - before.acknowledged)
    requests = round(after.requests - before.requests)
    run = Run(
        nodes=nodes,
        users=users,
        locust_processes=processes,
        elapsed_s=window,
        cycles=cycles,
        requests=requests,
        failures=result.total.failures if result.total else 0,
        cycles_per_s=cycles / window,
        requests_per_s=requests / window,
        worst_p50_ms=max((row.median_ms for row in result.rows.values()), default=0.0),
        worst_p99_ms=max((row.p99_ms for row in result.rows.values()), default=0.0),
        cpu_s={part: after.cpu[part] - before.cpu[part] for part in after.cpu},
        node_cpu_s=[a - b for a, b in zip(after.nodes, before.nodes, strict=True)],
        machine_busy_s=after.machine - before.machine,
        database=Database(
            round_trips=calls if servers.statements else None,
            transactions=late.get("transactions"),
            rows_written=late.get("rows_written"),
            blocks_dirtied=dirtied if servers.statements else None,
            wal_bytes=late.get("wal_bytes"),
            wal_syncs=late.get("wal_syncs"),
        ),
    )
    statements = [
        {"statement": query, "calls": n, "per_cycle": rounded(n / cycles if cycles else math.nan)}
        for query, n in top[:25]
    ]
    return run, statements


def commit() -> str:
    try:
        described = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return described.stdout.strip()


def node_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected node counts such as 1,2,4, not {text!r}") from e
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError("node counts are at least 1")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=node_counts, default=[1, 2, 4], help="node counts to run (1,2,4)")
    parser.add_argument("--duration", type=int, default=30, help="seconds of measured load per node count")
    parser.add_argument("--warmup", type=int, default=10, help="seconds of discarded load first (0: none)")
    parser.add_argument("--users", type=int, default=64, help="Locust users, the same for every node count")
    parser.add_argument("--users-per-node", type=int, default=0, help="instead: this many users per node")
    parser.add_argument("--think-time", type=float, default=0.0, help="each user waits 0..x s between tasks (0)")
    parser.add_argument("--size", type=int, default=1024, help="payload bytes per chunk (1024: kept inline)")
    parser.add_argument("--chunks", type=int, default=3, help="chunks of a chunked message")
    parser.add_argument(
        "--locust-processes", type=int, default=0, help="Locust worker processes (0: one per node, <= cores/4)"
    )
    parser.add_argument(
        "--predict-cores", type=int, default=16, help="predict node scaling on a machine of this many cores (16)"
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for the results (benchmarks/results/nodes-*)")
    args = parser.parse_args()
    try:  # before anything starts: what this machine must have besides the .venv
        pg_server.server_binary("initdb")
        local_cluster.haproxy_binary()
    except (RuntimeError, local_cluster.ClusterError) as e:
        print(f"nodes.py: {e}", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = (args.out or ROOT / "benchmarks" / "results" / f"nodes-{stamp}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    print(
        f"node counts {args.nodes}, {args.duration} s each (+{args.warmup} s warm-up), {args.size} B payload, "
        f"think time {args.think_time} s, {cores} cores; results in {out}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="mesh-nodes-"))
    runs: list[Run] = []
    statements: dict[int, Any] = {}
    try:
        with servers(work, max(args.nodes)) as shared:
            if not shared.statements:
                print("pg_stat_statements is not available: round trips are not counted", flush=True)
            for nodes in args.nodes:
                run, top = measure(shared, args, nodes, out, stamp)
                runs.append(run)
                statements[nodes] = top
                print(markdown([run], cores), flush=True)
    except BaseException:
        print(f"stopped early; the nodes' and HAProxy's logs are kept in {work}", file=sys.stderr)
        raise
    shutil.rmtree(work, ignore_errors=True)
    table = markdown(runs, cores)
    inputs = capacity_model.measured_inputs(runs)
    plan = capacity_model.plan(inputs)
    moto_ms = max(run.cpu_ms_per_cycle("moto") for run in runs)
    predictions = [capacity_model.predict(inputs, n, args.predict_cores, moto_ms) for n in (1, 2, 4, 8)]
    predicted = "\n".join(
        [
            f"Predicted on {args.predict_cores} cores from the CPU per cycle measured here "
            "(benchmarks/capacity_model.py predict):",
            "",
            "| Nodes | cycles/s | x 1 node | bound by |",
            "|---|---|---|---|",
            *(
                f"| {p.nodes} | {p.cycles_per_s:,.0f} | {p.cycles_per_s / predictions[0].cycles_per_s:.2f} | "
                f"{p.bound} |"
                for p in predictions
            ),
        ]
    )
    summary = {
        "date": stamp,
        "commit": commit(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "cores": cores,
        "pg_stat_statements": bool(runs) and runs[0].database.round_trips is not None,
        "runs": [run.to_json() for run in runs],
        "scaling": [
            {"nodes": s.nodes, "ratio": rounded(s.ratio), "efficiency": rounded(s.efficiency)} for s in scaling(runs)
        ],
        "statements_by_calls": statements,
        "capacity_plan": plan.to_json(),
        "predicted": [asdict(p) for p in predictions],
    }
    (out / "nodes.json").write_text(json.dumps(summary, indent=2) + "\n")
    report = f"{table}\n\n{predicted}\n\nCapacity plan (docs/capacity.md):\n\n{plan.markdown()}"
    (out / "nodes.md").write_text(f"# nodes.py, {stamp}, {summary['commit']}\n\n`{summary['command']}`\n\n{report}\n")
    print(f"\n{report}\n\nwritten: {out / 'nodes.json'}, {out / 'nodes.md'}")
    failures = sum(run.failures for run in runs)
    if failures:
        print(f"FAIL: {failures} requests failed (see the Locust reports in {out})")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
