"""`make cluster` (broker/devsupport/cluster.py): the HAProxy configuration it renders from deploy/haproxy is one
HAProxy accepts, with this machine's ports; and, marked slow, a whole cluster started, used through HAProxy while
each node is restarted with SIGTERM, and stopped, without a failed request or a lost message (the full-size
measurement is benchmarks/rolling_restart.py)."""

from __future__ import annotations

import asyncio
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from broker.devsupport import cluster
from tests.ops.deploy_assets import ROOT, run, tool


def sample_cluster(root: Path) -> cluster.Cluster:
    nodes = [cluster.Node(f"node{n}", 20000 + n, 21000 + n) for n in (1, 2, 3)]
    return cluster.Cluster(str(root), {}, nodes, 22000, 22001, 22002, "http://127.0.0.1:22003")


def test_the_rendered_haproxy_configuration_is_valid(tmp_path: Path) -> None:
    text = cluster.render_haproxy(sample_cluster(tmp_path))
    assert "bind 127.0.0.1:22000" in text and "bind 127.0.0.1:22001" in text
    for n in (1, 2, 3):
        assert f"server node{n} 127.0.0.1:{20000 + n} port {21000 + n}\n" in text
    assert "resolvers" not in text and "broker-1" not in text
    # The draining behaviour comes from deploy/haproxy/haproxy.cfg unchanged.
    assert "retry-on conn-failure empty-response" in text and "uri /readyz" in text
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    run([tool("haproxy", "apt-get install haproxy"), "-c", "-f", str(path)])


def test_state_round_trips(tmp_path: Path) -> None:
    state = sample_cluster(tmp_path)
    state.save()
    assert cluster.Cluster.load(tmp_path) == state
    with pytest.raises(cluster.ClusterError):
        cluster.Cluster.load(tmp_path / "nothing")


@pytest.mark.slow
def test_a_cluster_restarted_node_by_node_under_load_loses_nothing(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import rolling_restart

    running = cluster.up(tmp_path / "cluster", nodes=2)
    try:
        names = ["ROLL001", "ROLL002"]
        rolling_restart.create_mailboxes(running, names)
        args = Namespace(senders=4, size=1024, settle=2.0)
        tally, figures = asyncio.run(rolling_restart.run_load(running, args, names))
    finally:
        cluster.down(running.root)
    assert not (tmp_path / "cluster").exists()
    assert sum(tally.failures.values()) == 0, tally.examples
    assert tally.sent and set(tally.received) == tally.sent
    assert len(figures["restarts"]) == 2  # type: ignore[arg-type]
