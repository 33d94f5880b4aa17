"""The capacity model of docs/capacity.md: nodes and database size for a message rate, from measured figures.

Inputs are what benchmarks/nodes.py measured (CPU per message cycle of the broker and of PostgreSQL, PostgreSQL's
round trips, transactions, WAL fsyncs and pages dirtied per cycle), what benchmarks/capacity.py measured (metadata
bytes per message) and what benchmarks/large_transfer.py measured (one node's upload and download MiB/s on
PostgreSQL + S3). Assumptions (the live service's volume, its peak, sizes, polling) are explicit and can be
changed on the command line. Every figure of the plan carries its arithmetic and what it rests on.

    .venv/bin/python benchmarks/capacity_model.py benchmarks/results/nodes-*/nodes.json
    .venv/bin/python benchmarks/capacity_model.py nodes.json --messages-per-month 60e6 --peak-factor 10
    .venv/bin/python benchmarks/capacity_model.py nodes.json --predict 16   # throughput per node count, 16 cores
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nodes_summary import Run

KIB, MIB = 1024, 1024 * 1024
#: MESH_INLINE_CHUNK_BYTES's default: a chunk up to this size is kept in its metadata row, not in S3.
INLINE_BYTES = 64 * KIB
#: The S3 client's multipart part size: an upload above it is one request per part.
S3_PART_BYTES = 8 * MIB


@dataclass
class SizeClass:
    name: str
    share: float
    mean_bytes: int

    @property
    def inline(self) -> bool:
        return self.mean_bytes <= INLINE_BYTES

    @property
    def s3_requests(self) -> int:
        """S3 requests to store one message of this class (one PUT, or one per multipart part)."""
        return 0 if self.inline else max(1, math.ceil(self.mean_bytes / S3_PART_BYTES))


def default_sizes() -> list[SizeClass]:
    """An assumed distribution (no public figures of live MESH's sizes were found): most messages are small
    documents and reports, a fifth are pathology or imaging-sized files, a few are bulk extracts."""
    return [
        SizeClass("small (<= 64 KiB, inline)", 0.75, 10 * KIB),
        SizeClass("medium (64 KiB - 5 MiB)", 0.20, 1 * MIB),
        SizeClass("large (5 - 100 MiB)", 0.05, 20 * MIB),
    ]


@dataclass
class Inputs:
    """The measured figures the plan rests on, and where each came from."""

    broker_ms_per_cycle: float
    requests_per_cycle: float
    postgres_ms_per_cycle: float
    round_trips_per_cycle: float | None
    transactions_per_cycle: float | None
    wal_syncs_per_cycle: float | None
    wal_bytes_per_cycle: float | None
    blocks_dirtied_per_cycle: float | None
    haproxy_ms_per_cycle: float
    loadgen_ms_per_cycle: float
    source: str
    #: benchmarks/capacity.py, 2026-11-30: a 100 KiB message's rows in PostgreSQL (its body in S3); a 1 KiB
    #: message kept inline took 3,473, i.e. the same rows plus its body.
    metadata_bytes_per_message: int = 2458
    #: benchmarks/large_transfer.py --backend postgres+s3, 2026-11-25: the slowest of one node's uploads and
    #: downloads of 256 MiB (moto on the same 2 cores, so a floor).
    node_upload_mib_s: float = 110.2
    node_download_mib_s: float = 497.0

    @property
    def broker_ms_per_request(self) -> float:
        return self.broker_ms_per_cycle / self.requests_per_cycle

    @property
    def postgres_ms_per_request(self) -> float:
        return self.postgres_ms_per_cycle / self.requests_per_cycle


def measured_inputs(runs: list[Run]) -> Inputs:
    """From nodes.py's runs: each per-cycle figure is the largest any node count measured (the plan should not
    rest on the luckiest run)."""
    if not runs:
        raise ValueError("no runs to take the inputs from")

    def worst(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None and not math.isnan(v)]
        return max(known) if known else None

    def cpu(part: str) -> float:
        return worst([run.cpu_ms_per_cycle(part) for run in runs]) or math.nan

    return Inputs(
        broker_ms_per_cycle=cpu("broker"),
        requests_per_cycle=worst([run.requests_per_cycle for run in runs]) or math.nan,
        postgres_ms_per_cycle=cpu("postgres"),
        round_trips_per_cycle=worst([run.database_per_cycle("round_trips") for run in runs]),
        transactions_per_cycle=worst([run.database_per_cycle("transactions") for run in runs]),
        wal_syncs_per_cycle=worst([run.database_per_cycle("wal_syncs") for run in runs]),
        wal_bytes_per_cycle=worst([run.database_per_cycle("wal_bytes") for run in runs]),
        blocks_dirtied_per_cycle=worst([run.database_per_cycle("blocks_dirtied") for run in runs]),
        haproxy_ms_per_cycle=cpu("haproxy"),
        loadgen_ms_per_cycle=cpu("loadgen"),
        source="benchmarks/nodes.py, node counts " + ",".join(str(run.nodes) for run in runs),
    )


@dataclass
class Assumptions:
    messages_per_month: float = 60e6
    peak_factor: float = 10.0
    days_per_month: float = 30.0
    #: Live MESH: about 22,000 active mailboxes, told to poll at most every 5 minutes.
    mailboxes: int = 22_000
    poll_seconds: float = 300.0
    sizes: list[SizeClass] = field(default_factory=default_sizes)
    #: Messages that end in a non-delivery REPORT (one more small message each).
    report_share: float = 0.01
    #: MESH_INBOX_EXPIRY (the working set) and MESH_RETENTION (how long rows and bodies are kept).
    inbox_days: float = 5.0
    retention_days: float = 30.0
    #: CPU a node is planned to (the HorizontalPodAutoscaler's target), and the database's.
    node_cpu_target: float = 0.7
    database_cpu_target: float = 0.5
    #: Nodes kept spare for a rolling restart or a lost node.
    spare_nodes: int = 1
    #: MESH_DB_POOL_MAX, plus the directory cache's LISTEN connection, per node; and room for operators.
    pool_max: int = 10
    admin_connections: int = 10
    #: Indexes' slack, bloat between vacuums and WAL kept for replicas, over pg_database_size's growth.
    storage_headroom: float = 2.0


@dataclass
class Line:
    quantity: str
    arithmetic: str
    result: str
    rests_on: str


@dataclass
class Plan:
    lines: list[Line]
    nodes: int
    database_cores: int
    database_iops: float | None
    metadata_gib: dict[str, float]
    s3_tib: float
    connections: int

    def markdown(self) -> str:
        rows = ["| Quantity | Arithmetic | Result | Rests on |", "|---|---|---|---|"]
        rows += [f"| {x.quantity} | {x.arithmetic} | **{x.result}** | {x.rests_on} |" for x in self.lines]
        return "\n".join(rows)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _n(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def plan(inputs: Inputs, a: Assumptions | None = None) -> Plan:
    a = a or Assumptions()
    lines: list[Line] = []
    measured = f"measured: {inputs.source}"

    def add(quantity: str, arithmetic: str, result: str, rests_on: str) -> None:
        lines.append(Line(quantity, arithmetic, result, rests_on))

    average = a.messages_per_month / (a.days_per_month * 86_400)
    peak = average * a.peak_factor
    add(
        "Messages/s, average",
        f"{a.messages_per_month:,.0f} / ({a.days_per_month:g} d x 86,400 s)",
        _n(average),
        "assumed: live MESH's volume",
    )
    add("Messages/s, peak", f"{_n(average)} x {a.peak_factor:g}", _n(peak), "assumed: peak factor")
    polls = a.mailboxes / a.poll_seconds
    add(
        "Inbox polls/s (beyond the cycles' own lists)",
        f"{a.mailboxes:,} mailboxes / {a.poll_seconds:g} s",
        _n(polls),
        "assumed: every mailbox polls as often as allowed",
    )

    # Nodes: CPU for the cycles and polls at the measured cost, plus the bytes of larger bodies at the measured
    # per-node transfer rate.
    cycle_cores = peak * inputs.broker_ms_per_cycle / 1000
    poll_cores = polls * inputs.broker_ms_per_request / 1000
    add(
        "Node cores for cycles and polls",
        f"{_n(peak)} x {inputs.broker_ms_per_cycle:.2f} ms + {_n(polls)} x {inputs.broker_ms_per_request:.2f} ms",
        _n(cycle_cores + poll_cores, 2),
        f"{measured} (broker CPU per cycle, all nodes; per request = per cycle / "
        f"{inputs.requests_per_cycle:.2f} requests)",
    )
    mean_bytes = sum(size.share * size.mean_bytes for size in a.sizes)
    body_in = peak * mean_bytes / MIB
    add(
        "Body MiB/s in (and the same out)",
        f"{_n(peak)} x {_n(mean_bytes / KIB, 0)} KiB mean ("
        + ", ".join(f"{100 * s.share:g} % at {_n(s.mean_bytes / KIB, 0)} KiB" for s in a.sizes)
        + ")",
        _n(body_in),
        "assumed: size distribution",
    )
    transfer_nodes = body_in / inputs.node_upload_mib_s + body_in / inputs.node_download_mib_s
    add(
        "Node-equivalents moving bodies",
        f"{_n(body_in)} / {inputs.node_upload_mib_s:g} + {_n(body_in)} / {inputs.node_download_mib_s:g} MiB/s",
        _n(transfer_nodes, 2),
        "measured: benchmarks/large_transfer.py, one node's upload / download on PostgreSQL + S3 (moto)",
    )
    busy = cycle_cores + poll_cores + transfer_nodes
    nodes = max(2, math.ceil(round(busy / a.node_cpu_target, 9))) + a.spare_nodes
    add(
        "Nodes",
        f"max(2, ceil({_n(busy, 2)} / {a.node_cpu_target:g})) + {a.spare_nodes} spare",
        str(nodes),
        "one core per node (one Python process); planned to the autoscaler's CPU target",
    )

    # The database.
    db_busy = peak * inputs.postgres_ms_per_cycle / 1000 + polls * inputs.postgres_ms_per_request / 1000
    # Rounded to 9 places first, so that 4.0000000001 cores (float arithmetic) asks for 4, not 8.
    cores = max(2, 2 ** math.ceil(round(math.log2(max(db_busy / a.database_cpu_target, 1)), 9)))
    add(
        "Database CPU",
        f"({_n(peak)} x {inputs.postgres_ms_per_cycle:.2f} ms + {_n(polls)} x "
        f"{inputs.postgres_ms_per_request:.2f} ms) / {a.database_cpu_target:g} target",
        f"{_n(db_busy, 2)} cores busy: {cores} vCPU",
        f"{measured} (PostgreSQL's processes' CPU per cycle)",
    )
    if inputs.round_trips_per_cycle is not None:
        trips = peak * inputs.round_trips_per_cycle + polls * inputs.round_trips_per_cycle / inputs.requests_per_cycle
        add(
            "Database round trips/s",
            f"{_n(peak)} x {inputs.round_trips_per_cycle:.1f} + {_n(polls)} x "
            f"{inputs.round_trips_per_cycle / inputs.requests_per_cycle:.2f}",
            _n(trips, 0),
            f"{measured} (pg_stat_statements calls per cycle)",
        )
    iops = None
    if inputs.wal_syncs_per_cycle is not None and inputs.blocks_dirtied_per_cycle is not None:
        wal = peak * inputs.wal_syncs_per_cycle
        pages = peak * inputs.blocks_dirtied_per_cycle
        iops = wal + pages
        add(
            "Database write IOPS (upper bound)",
            f"{_n(peak)} x {inputs.wal_syncs_per_cycle:.2f} WAL fsyncs + {_n(peak)} x "
            f"{inputs.blocks_dirtied_per_cycle:.2f} pages dirtied",
            _n(iops, 0),
            f"{measured} (pg_stat_wal, pg_stat_statements; a page dirtied again before a checkpoint is written once)",
        )
    if inputs.wal_bytes_per_cycle is not None:
        add(
            "WAL MiB/s",
            f"{_n(peak)} x {_n(inputs.wal_bytes_per_cycle / KIB)} KiB",
            _n(peak * inputs.wal_bytes_per_cycle / MIB, 2),
            f"{measured} (pg_stat_wal)",
        )

    per_day = a.messages_per_month / a.days_per_month
    overhead = inputs.metadata_bytes_per_message
    inline_body = sum(s.share * s.mean_bytes for s in a.sizes if s.inline)
    per_message = overhead * (1 + a.report_share) + inline_body
    add(
        "Metadata bytes/message",
        f"{overhead:,} x (1 + {a.report_share:g} reports) + {_n(inline_body, 0)} inline body",
        f"{_n(per_message / KIB)} KiB",
        "measured: benchmarks/capacity.py (rows of a message, events and tokens included); inline share assumed",
    )
    metadata = {}
    kept = (
        ("inbox window", a.inbox_days, "MESH_INBOX_EXPIRY: the most an unacknowledged message waits; a floor"),
        ("retention", a.retention_days, "MESH_RETENTION: how long every message's rows are kept (the default)"),
    )
    for label, days, why in kept:
        gib = per_day * days * per_message * a.storage_headroom / 2**30
        metadata[f"{days:g} days"] = round(gib, 1)
        add(
            f"Database storage, {label} ({days:g} days)",
            f"{per_day:,.0f}/day x {days:g} x {_n(per_message / KIB)} KiB x {a.storage_headroom:g} headroom",
            f"{_n(gib, 0)} GiB",
            why,
        )
    blob_bytes = sum(s.share * s.mean_bytes for s in a.sizes if not s.inline)
    s3 = per_day * a.retention_days * blob_bytes / 2**40
    add(
        f"S3 storage ({a.retention_days:g} days)",
        f"{per_day:,.0f}/day x {a.retention_days:g} x {_n(blob_bytes / KIB, 0)} KiB mean in S3",
        f"{_n(s3)} TiB",
        "assumed size distribution; S3 holds exactly the bodies (benchmarks/capacity.py)",
    )
    puts = peak * sum(s.share * s.s3_requests for s in a.sizes)
    gets = peak * sum(s.share for s in a.sizes if not s.inline)
    add(
        "S3 requests/s at peak",
        f"PUT {_n(peak)} x parts per message; GET {_n(peak)} x share in S3",
        f"{_n(puts, 0)} PUT, {_n(gets, 0)} GET",
        "measured: benchmarks/capacity.py (1 PUT, 1 GET per stored chunk; multipart per 8 MiB part)",
    )
    connections = nodes * (a.pool_max + 1) + a.admin_connections
    add(
        "Database connections",
        f"{nodes} x ({a.pool_max} pool + 1 LISTEN) + {a.admin_connections}",
        f"max_connections >= {connections}",
        "MESH_DB_POOL_MAX; each node's directory cache holds one more",
    )
    return Plan(lines, nodes, cores, iops, metadata, round(s3, 1), connections)


@dataclass
class Prediction:
    nodes: int
    cycles_per_s: float
    bound: str


def predict(inputs: Inputs, nodes: int, cores: int, moto_ms_per_cycle: float = 0.0) -> Prediction:
    """Cycles/s of N nodes on a machine of `cores` that also runs PostgreSQL, HAProxy and Locust: the lesser of
    N nodes at one core each and the whole machine's cores over every part's CPU per cycle."""
    node_bound = nodes * 1000 / inputs.broker_ms_per_cycle
    total_ms = (
        inputs.broker_ms_per_cycle
        + inputs.postgres_ms_per_cycle
        + inputs.haproxy_ms_per_cycle
        + inputs.loadgen_ms_per_cycle
        + moto_ms_per_cycle
    )
    machine_bound = cores * 1000 / total_ms
    if node_bound <= machine_bound:
        return Prediction(nodes, node_bound, "nodes (one core each)")
    return Prediction(nodes, machine_bound, "machine cores")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summary", type=Path, help="nodes.json written by benchmarks/nodes.py")
    parser.add_argument("--messages-per-month", type=float, default=Assumptions.messages_per_month)
    parser.add_argument("--peak-factor", type=float, default=Assumptions.peak_factor)
    parser.add_argument("--predict", type=int, default=0, metavar="CORES", help="also predict node scaling")
    parser.add_argument(
        "--broker-ms-per-cycle", type=float, default=0, help="instead of the measured figure (a sensitivity check)"
    )
    parser.add_argument("--postgres-ms-per-cycle", type=float, default=0, help="likewise")
    args = parser.parse_args()
    data = json.loads(args.summary.read_text())
    runs = [Run.from_json(run) for run in data["runs"]]
    inputs = measured_inputs(runs)
    if args.broker_ms_per_cycle:
        inputs.broker_ms_per_cycle = args.broker_ms_per_cycle
        inputs.source += f" (broker CPU per cycle given: {args.broker_ms_per_cycle:g} ms)"
    if args.postgres_ms_per_cycle:
        inputs.postgres_ms_per_cycle = args.postgres_ms_per_cycle
        inputs.source += f" (PostgreSQL CPU per cycle given: {args.postgres_ms_per_cycle:g} ms)"
    assumptions = Assumptions(messages_per_month=args.messages_per_month, peak_factor=args.peak_factor)
    print(plan(inputs, assumptions).markdown())
    if args.predict:
        moto = max(run.cpu_ms_per_cycle("moto") for run in runs)
        print(f"\nPredicted on {args.predict} cores (CPU per cycle as measured):\n")
        print("| Nodes | cycles/s | x 1 node | bound by |\n|---|---|---|---|")
        one = predict(inputs, 1, args.predict, moto).cycles_per_s
        for n in (1, 2, 4, 8, 16):
            p = predict(inputs, n, args.predict, moto)
            print(f"| {n} | {p.cycles_per_s:,.0f} | {p.cycles_per_s / one:.2f} | {p.bound} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
