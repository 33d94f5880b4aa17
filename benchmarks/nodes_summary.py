"""The arithmetic of benchmarks/nodes.py: one run's counters turned into per-cycle figures, runs compared.

Kept apart from the script that starts processes so that it can be tested without any (benchmarks/test_nodes.py).
A "cycle" is a message sent, downloaded and acknowledged: Locust's count of acknowledgements. Every cost is divided
by the cycles of the same window, so the figures hold whatever Locust's ramp-up or the machine's other load did.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: The processes whose CPU a run counts, in the order the tables show them.
PARTS = ("broker", "postgres", "moto", "haproxy", "loadgen")


@dataclass
class Database:
    """PostgreSQL's counters over the load window (None: not available on this server)."""

    #: Statements the nodes sent (pg_stat_statements calls, BEGIN and COMMIT included): see nodes.py on why this
    #: is the round-trip count.
    round_trips: int | None = None
    #: pg_stat_database xact_commit + xact_rollback.
    transactions: int | None = None
    #: pg_stat_database tup_inserted + tup_updated + tup_deleted.
    rows_written: int | None = None
    #: pg_stat_statements shared_blks_dirtied: 8 KiB pages the statements dirtied, each written back at most once
    #: per checkpoint: an upper bound on data-file writes.
    blocks_dirtied: int | None = None
    #: pg_stat_wal: bytes of WAL, and the fsyncs of it (each a write the disk must make durable).
    wal_bytes: int | None = None
    wal_syncs: int | None = None


@dataclass
class Run:
    """What one node count measured. cpu_s holds CPU seconds (user + system) per part of PARTS over the load
    window; machine_busy_s is the whole machine's, others' work on it included."""

    nodes: int
    users: int
    locust_processes: int
    elapsed_s: float
    cycles: int
    requests: int
    failures: int
    cycles_per_s: float
    requests_per_s: float
    worst_p50_ms: float
    worst_p99_ms: float
    cpu_s: dict[str, float]
    node_cpu_s: list[float]
    machine_busy_s: float
    database: Database = field(default_factory=Database)

    def cpu_ms_per_cycle(self, part: str) -> float:
        return per(1000 * self.cpu_s.get(part, 0.0), self.cycles)

    def cores(self, part: str) -> float:
        """Average cores the part kept busy during the window."""
        return per(self.cpu_s.get(part, 0.0), self.elapsed_s)

    @property
    def busiest_node_cores(self) -> float:
        return per(max(self.node_cpu_s, default=0.0), self.elapsed_s)

    @property
    def node_imbalance(self) -> float:
        """The busiest node's CPU over the nodes' mean: 1.0 when the balancer spread the work evenly."""
        if not self.node_cpu_s:
            return math.nan
        return per(max(self.node_cpu_s), sum(self.node_cpu_s) / len(self.node_cpu_s))

    def database_per_cycle(self, name: str) -> float | None:
        value = getattr(self.database, name)
        return None if value is None else per(value, self.cycles)

    @property
    def round_trips_per_request(self) -> float | None:
        trips = self.database.round_trips
        return None if trips is None else per(trips, self.requests)

    @property
    def requests_per_cycle(self) -> float:
        return per(self.requests, self.cycles)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["per_cycle"] = {
            **{f"{part}_cpu_ms": rounded(self.cpu_ms_per_cycle(part)) for part in PARTS},
            **{name: rounded(self.database_per_cycle(name)) for name in asdict(self.database)},
            "requests": rounded(self.requests_per_cycle),
        }
        data["round_trips_per_request"] = rounded(self.round_trips_per_request)
        data["busiest_node_cores"] = rounded(self.busiest_node_cores)
        data["node_imbalance"] = rounded(self.node_imbalance)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["database"] = Database(**fields.get("database", {}))
        return cls(**fields)


def per(amount: float, count: float) -> float:
    """amount / count; NaN when there is nothing to divide by (no cycles measured is not zero cost)."""
    return amount / count if count else math.nan


def rounded(value: float | None, digits: int = 3) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, digits)


@dataclass
class Scaling:
    nodes: int
    #: Throughput against the run with the fewest nodes (1 node, normally).
    ratio: float
    #: ratio / (nodes / baseline nodes): 1.0 is linear.
    efficiency: float


def scaling(runs: list[Run]) -> list[Scaling]:
    """Each run's cycles/s against the run with the fewest nodes."""
    if not runs:
        return []
    base = min(runs, key=lambda run: run.nodes)
    out = []
    for run in sorted(runs, key=lambda r: r.nodes):
        ratio = per(run.cycles_per_s, base.cycles_per_s)
        out.append(Scaling(run.nodes, ratio, per(ratio, run.nodes / base.nodes)))
    return out


def _f(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def markdown(runs: list[Run], cores: int) -> str:
    """The two tables benchmarks/README.md's journal takes: throughput and CPU, then the database."""
    ratios = {s.nodes: s for s in scaling(runs)}
    lines = [
        f"Throughput and CPU per message cycle ({cores} cores; CPU summed over each part's processes):",
        "",
        "| Nodes | Users | Locust procs | cycles/s | req/s | x fewest nodes | broker ms/cycle (all nodes) | "
        "busiest node (cores) | node imbalance | PostgreSQL ms/cycle | moto ms/cycle | HAProxy ms/cycle | "
        "Locust ms/cycle | machine busy (cores) | worst p50 / p99 ms | failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(runs, key=lambda r: r.nodes):
        s = ratios[run.nodes]
        lines.append(
            f"| {run.nodes} | {run.users} | {run.locust_processes} | {_f(run.cycles_per_s, 1)} | "
            f"{_f(run.requests_per_s, 1)} | {_f(s.ratio)}x ({_f(100 * s.efficiency, 0)} %) | "
            f"{_f(run.cpu_ms_per_cycle('broker'))} | {_f(run.busiest_node_cores)} | {_f(run.node_imbalance)} | "
            f"{_f(run.cpu_ms_per_cycle('postgres'))} | {_f(run.cpu_ms_per_cycle('moto'))} | "
            f"{_f(run.cpu_ms_per_cycle('haproxy'))} | {_f(run.cpu_ms_per_cycle('loadgen'))} | "
            f"{_f(per(run.machine_busy_s, run.elapsed_s))} | {_f(run.worst_p50_ms, 0)} / {_f(run.worst_p99_ms, 0)} | "
            f"{run.failures} |"
        )
    lines += [
        "",
        "PostgreSQL per message cycle (and round trips per request):",
        "",
        "| Nodes | requests/cycle | round trips/cycle | round trips/request | transactions/cycle | "
        "rows written/cycle | pages dirtied/cycle | WAL bytes/cycle | WAL fsyncs/cycle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(runs, key=lambda r: r.nodes):
        c = run.database_per_cycle
        lines.append(
            f"| {run.nodes} | {_f(run.requests_per_cycle)} | {_f(c('round_trips'))} | "
            f"{_f(run.round_trips_per_request)} | {_f(c('transactions'))} | {_f(c('rows_written'))} | "
            f"{_f(c('blocks_dirtied'))} | {_f(c('wal_bytes'), 0)} | {_f(c('wal_syncs'), 3)} |"
        )
    return "\n".join(lines)
