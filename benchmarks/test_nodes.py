"""The node-scaling benchmark's arithmetic (benchmarks/nodes_summary.py), the capacity model built on it
(benchmarks/capacity_model.py), nodes.py's own helpers, and (marked slow) a short run of nodes.py itself.

Collected by the project's pytest run (testpaths), like test_budget.py; the helpers and the smoke run need the
bench extra (psutil, Locust), so they are skipped where it is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from capacity_model import Assumptions, Inputs, SizeClass, measured_inputs, plan, predict
from nodes_summary import Database, Run, markdown, scaling

HERE = Path(__file__).resolve().parent


def run(nodes: int = 1, cycles: int = 1000, cycles_per_s: float = 100.0, **changes: object) -> Run:
    fields: dict[str, object] = {
        "nodes": nodes,
        "users": 64,
        "locust_processes": 1,
        "elapsed_s": 10.0,
        "cycles": cycles,
        "requests": 6 * cycles,
        "failures": 0,
        "cycles_per_s": cycles_per_s,
        "requests_per_s": 6 * cycles_per_s,
        "worst_p50_ms": 5.0,
        "worst_p99_ms": 50.0,
        "cpu_s": {"broker": 3.0, "postgres": 2.0, "moto": 0.1, "haproxy": 0.5, "loadgen": 1.0},
        "node_cpu_s": [3.0 / nodes] * nodes,
        "machine_busy_s": 7.0,
        "database": Database(round_trips=21_000, transactions=20_000, wal_syncs=5000, blocks_dirtied=900),
    }
    fields.update(changes)
    return Run(**fields)  # type: ignore[arg-type]


def test_costs_are_divided_by_the_cycles_of_the_same_window() -> None:
    r = run(cycles=1000)
    assert r.cpu_ms_per_cycle("broker") == pytest.approx(3.0)  # 3 s of CPU over 1,000 cycles
    assert r.cpu_ms_per_cycle("postgres") == pytest.approx(2.0)
    assert r.database_per_cycle("round_trips") == pytest.approx(21.0)
    assert r.round_trips_per_request == pytest.approx(3.5)  # 21,000 over 6,000 requests
    assert r.requests_per_cycle == pytest.approx(6.0)
    assert r.cores("broker") == pytest.approx(0.3)  # 3 s of CPU in a 10 s window
    assert r.database_per_cycle("wal_bytes") is None  # not measured is not zero


def test_no_cycles_is_not_free() -> None:
    r = run(cycles=0)
    assert math.isnan(r.cpu_ms_per_cycle("broker"))
    assert "n/a" in markdown([r], cores=2)


def test_node_imbalance_is_the_busiest_over_the_mean() -> None:
    assert run(nodes=2, node_cpu_s=[1.5, 1.5]).node_imbalance == pytest.approx(1.0)
    uneven = run(nodes=2, node_cpu_s=[2.0, 1.0])
    assert uneven.node_imbalance == pytest.approx(2.0 / 1.5)
    assert uneven.busiest_node_cores == pytest.approx(0.2)


def test_scaling_is_against_the_run_with_fewest_nodes() -> None:
    ratios = scaling([run(4, cycles_per_s=280.0), run(1, cycles_per_s=100.0), run(2, cycles_per_s=170.0)])
    assert [s.nodes for s in ratios] == [1, 2, 4]
    assert [s.ratio for s in ratios] == pytest.approx([1.0, 1.7, 2.8])
    assert [s.efficiency for s in ratios] == pytest.approx([1.0, 0.85, 0.7])
    table = markdown([run(1, cycles_per_s=100.0), run(2, cycles_per_s=170.0)], cores=16)
    assert "1.70x (85 %)" in table


def test_a_run_survives_its_json() -> None:
    r = run(nodes=2)
    data = json.loads(json.dumps(r.to_json()))
    assert data["per_cycle"]["broker_cpu_ms"] == pytest.approx(3.0)
    assert data["per_cycle"]["round_trips"] == pytest.approx(21.0)
    assert Run.from_json(data) == r


def inputs(**changes: object) -> Inputs:
    fields: dict[str, object] = {
        "broker_ms_per_cycle": 4.0,
        "requests_per_cycle": 8.0,
        "postgres_ms_per_cycle": 2.0,
        "round_trips_per_cycle": 20.0,
        "transactions_per_cycle": 20.0,
        "wal_syncs_per_cycle": 5.0,
        "wal_bytes_per_cycle": 10_240.0,
        "blocks_dirtied_per_cycle": 1.0,
        "haproxy_ms_per_cycle": 0.5,
        "loadgen_ms_per_cycle": 1.5,
        "source": "test",
        "metadata_bytes_per_message": 2000,
        "node_upload_mib_s": 100.0,
        "node_download_mib_s": 500.0,
    }
    fields.update(changes)
    return Inputs(**fields)  # type: ignore[arg-type]


def test_the_plan_from_its_inputs() -> None:
    # 86.4M a month is 1,000/s at a peak factor of 30 (30 days); 10 % of the messages are 10 MiB in S3.
    assumptions = Assumptions(
        messages_per_month=86.4e6,
        peak_factor=30.0,
        mailboxes=0,
        sizes=[SizeClass("small", 0.9, 1024), SizeClass("big", 0.1, 10 * 1024 * 1024)],
        report_share=0.0,
    )
    result = plan(inputs(), assumptions)
    found = {line.quantity: line.result for line in result.lines}
    assert found["Messages/s, average"] == "33.3"
    assert found["Messages/s, peak"] == "1,000.0"
    # Nodes: 1,000 x 4 ms = 4 cores; bodies 1,000 x 1,024.9 KiB = 1,000.9 MiB/s in and out: /100 + /500 = 12.01
    # node-equivalents; (4 + 12.01) / 0.7 = 22.9 -> 23, + 1 spare.
    assert result.nodes == 24
    # Database: 1,000 x 2 ms = 2 cores busy, / 0.5 = 4 vCPU.
    assert result.database_cores == 4
    assert result.database_iops == pytest.approx(1000 * 5 + 1000 * 1)
    assert found["Database round trips/s"] == "20,000"
    # Metadata: 2,000 bytes of rows + 0.9 x 1,024 inline = 2,921.6 bytes; 2.88M a day; 5 and 30 days, x 2.
    per_day = 86.4e6 / 30
    assert result.metadata_gib["5 days"] == pytest.approx(per_day * 5 * 2921.6 * 2 / 2**30, abs=0.1)
    assert result.metadata_gib["30 days"] == pytest.approx(per_day * 30 * 2921.6 * 2 / 2**30, abs=0.1)
    assert result.s3_tib == pytest.approx(per_day * 30 * 0.1 * 10 * 2**20 / 2**40, abs=0.1)
    assert found["S3 requests/s at peak"] == "200 PUT, 100 GET"  # 10 MiB is two 8 MiB parts
    assert result.connections == 24 * 11 + 10
    assert "| Nodes |" in result.markdown()


def test_the_plan_never_has_fewer_than_two_nodes_and_a_spare() -> None:
    assumptions = Assumptions(messages_per_month=1000, mailboxes=0, sizes=[SizeClass("tiny", 1.0, 100)])
    assert plan(inputs(), assumptions).nodes == 3
    assert plan(inputs(), assumptions).database_cores == 2


def test_the_plan_rests_on_the_worst_run() -> None:
    cheap = run(1, cpu_s={"broker": 2.0, "postgres": 3.0, "moto": 0.0, "haproxy": 0.1, "loadgen": 0.2})
    dear = run(2, cpu_s={"broker": 5.0, "postgres": 1.0, "moto": 0.0, "haproxy": 0.1, "loadgen": 0.2})
    taken = measured_inputs([cheap, dear])
    assert taken.broker_ms_per_cycle == pytest.approx(5.0)
    assert taken.postgres_ms_per_cycle == pytest.approx(3.0)
    assert taken.round_trips_per_cycle == pytest.approx(21.0)
    assert taken.wal_bytes_per_cycle is None


def test_prediction_is_bound_by_nodes_then_by_the_machine() -> None:
    # 4 ms a cycle on a node: 250 cycles/s each; every part together 8 ms: 16 cores carry 2,000 cycles/s.
    one = predict(inputs(), 1, cores=16)
    assert one.cycles_per_s == pytest.approx(250.0)
    assert one.bound.startswith("nodes")
    eight = predict(inputs(), 10, cores=16)  # 10 nodes could do 2,500
    assert eight.cycles_per_s == pytest.approx(2000.0)
    assert eight.bound == "machine cores"


def test_nodes_helpers() -> None:
    pytest.importorskip("psutil")
    import nodes

    mailboxes = nodes.load_mailboxes(users=64, processes=4)
    assert len(mailboxes) % 4 == 0 and len(mailboxes) >= 64 * 5 / 11
    assert nodes.locust_processes(3, nodes=8) == 3
    assert nodes.locust_processes(0, nodes=1) == 1
    assert nodes.node_counts("4,1,2,2") == [1, 2, 4]
    calls, dirtied, top = nodes.statement_changes(
        {"a": ("SELECT 1", 10, 1), "b": ("SELECT 2", 5, 0)},
        {"a": ("SELECT 1", 40, 4), "b": ("SELECT 2", 5, 0), "c": ("INSERT", 7, 2)},
    )
    assert (calls, dirtied) == (37, 5)
    assert top == [("SELECT 1", 30), ("INSERT", 7)]


@pytest.mark.slow
def test_nodes_runs_end_to_end(tmp_path: Path) -> None:
    """One and two nodes for a few seconds each: the script starts and stops everything and writes figures that
    add up. Needs PostgreSQL's server programs, HAProxy and the bench extra."""
    # Looked up, not imported: importing Locust here would patch this process's sockets and ssl with gevent's.
    if importlib.util.find_spec("locust") is None or importlib.util.find_spec("psutil") is None:
        pytest.skip("needs the bench extra (Locust, psutil)")
    out = tmp_path / "out"
    command = [sys.executable, str(HERE / "nodes.py"), "--nodes", "1,2", "--duration", "5", "--warmup", "2"]
    done = subprocess.run([*command, "--users", "8", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "nodes.json").read_text())
    assert [r["nodes"] for r in summary["runs"]] == [1, 2]
    for r in summary["runs"]:
        assert r["cycles"] > 0 and r["failures"] == 0
        assert r["cpu_s"]["broker"] > 0 and r["cpu_s"]["postgres"] > 0 and r["cpu_s"]["loadgen"] > 0
        assert len(r["node_cpu_s"]) == r["nodes"] and all(cpu > 0 for cpu in r["node_cpu_s"])
        if summary["pg_stat_statements"]:
            assert r["per_cycle"]["round_trips"] > 1
    assert (out / "nodes.md").read_text().count("| 2 |") >= 2
    assert summary["capacity_plan"]["nodes"] >= 3
