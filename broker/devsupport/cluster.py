"""`make cluster`: deploy/compose.yaml's topology as local processes on 127.0.0.1, with one command.

PostgreSQL (the server binaries, as pg_server finds them), moto's S3 server, `mesh-broker migrate` once, two or
more `mesh-broker serve` nodes (demo mailboxes, metrics and probes on ports of their own), HAProxy with
deploy/haproxy/haproxy.cfg rendered for those ports (health checks on /readyz, draining), and Prometheus with the
alert rules of grafana/alerts when Debian's `prometheus` is installed. Everything lives under one folder
(.cluster/ by default) with a state.json naming every process, so `down` stops exactly what `up` started.

    python -m broker.devsupport.cluster up [--nodes 3] [--dir .cluster]
    python -m broker.devsupport.cluster down [--dir .cluster]

benchmarks/rolling_restart.py drives the same functions, restarting nodes under load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from broker.devsupport import pg_server, s3_server

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
RULES = ROOT / "grafana" / "alerts" / "mesh-rules.yaml"
DEFAULT_DIR = Path(".cluster")
DATABASE = "mesh"
SHARED_KEY = "TestKey"
#: The drain a node gets on SIGTERM here; long enough for any request of a benchmark to finish.
SHUTDOWN_GRACE_SECONDS = 10
START_TIMEOUT = 30.0
STOP_TIMEOUT = SHUTDOWN_GRACE_SECONDS + 10.0


class ClusterError(RuntimeError):
    """A part of the cluster did not start, or the state folder is not a cluster's."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    name: str
    port: int
    metrics_port: int
    pid: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def readyz(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/readyz"


@dataclass
class Cluster:
    """What `up` started: written to <dir>/state.json, read back by `down` and by benchmarks."""

    directory: str
    environment: dict[str, str]
    nodes: list[Node]
    balancer_port: int
    stats_port: int
    postgres_port: int
    s3_url: str
    prometheus_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return Path(self.directory)

    @property
    def url(self) -> str:
        """The load balancer: where clients and `make bench` go."""
        return f"http://127.0.0.1:{self.balancer_port}"

    def save(self) -> None:
        (self.root / "state.json").write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Cluster:
        path = directory / "state.json"
        if not path.exists():
            raise ClusterError(f"no cluster in {directory} (no state.json)")
        data = json.loads(path.read_text())
        data["nodes"] = [Node(**node) for node in data["nodes"]]
        return cls(**data)

    def describe(self) -> str:
        lines = [
            f"MESH API (HAProxy):  {self.url}/messageexchange   demo mailboxes X26ABC1..3, password 'password', "
            f"shared key {SHARED_KEY}",
            f"HAProxy stats:       http://127.0.0.1:{self.stats_port}/",
        ]
        lines += [
            f"{node.name}:              {node.url}  (metrics, /readyz: :{node.metrics_port})" for node in self.nodes
        ]
        if self.prometheus_port:
            lines.append(f"Prometheus:          http://127.0.0.1:{self.prometheus_port}/alerts")
        lines += [
            f"PostgreSQL:          postgresql://postgres@127.0.0.1:{self.postgres_port}/{DATABASE}",
            f"S3 (moto):           {self.s3_url}",
            f"CLI settings:        set -a; . {self.root / 'cluster.env'}; set +a",
            "Load:                make bench BENCH_ARGS='--cluster'",
            "Stop:                make cluster-down",
        ]
        return "\n".join(lines)


# processes -----------------------------------------------------------------------------------------------------


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; the CI machines run as root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _spawn(command: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A process in a session of its own (it outlives `up`, and a Ctrl-C in the shell does not reach it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(command),
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def alive(pid: int) -> bool:
    """Whether pid runs (a zombie, exited but not yet reaped by its parent, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def terminate(pid: int, timeout: float) -> float:
    """SIGTERM, then SIGKILL once timeout has passed; returns the seconds it took to go."""
    started = time.monotonic()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0.0
    while alive(pid):
        if time.monotonic() - started > timeout:
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
        time.sleep(0.05)
    _reap(pid)
    return time.monotonic() - started


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_http(url: str, pid: int, log: Path, timeout: float = START_TIMEOUT) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            raise ClusterError(f"{url}: the process exited; see {log}")
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise ClusterError(f"{url} did not answer 200 within {timeout:.0f} s; see {log}")


# the parts -----------------------------------------------------------------------------------------------------


def start_postgres(root: Path) -> tuple[int, int]:
    """A cluster in a temp folder of its own, linked from root/postgres (PostgreSQL's user must reach its data,
    which a folder inside a private one, such as pytest's, would not let it); returns (postmaster pid, port)."""
    home = Path(tempfile.mkdtemp(prefix="mesh-cluster-pg-"))
    (root / "postgres").symlink_to(home)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(home, entry.pw_uid, entry.pw_gid)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    initdb = [pg_server.server_binary("initdb"), "-D", str(home / "data"), "-U", "postgres", "--auth=trust"]
    subprocess.run(_as_postgres([*initdb, "-E", "UTF8", "--no-sync"]), check=True, capture_output=True, env=env)
    port = free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {home} -c max_connections=200"
    pg_ctl = [pg_server.server_binary("pg_ctl"), "-D", str(home / "data"), "-o", options, "-l", str(home / "log")]
    subprocess.run(_as_postgres([*pg_ctl, "-w", "start"]), check=True, capture_output=True, env=env)
    pid = int((home / "data" / "postmaster.pid").read_text().split()[0])
    createdb = [pg_server.server_binary("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE]
    subprocess.run(createdb, check=True, capture_output=True, env=env)
    return pid, port


def stop_postgres(root: Path) -> None:
    link = root / "postgres"
    if not link.exists():
        return
    home = link.resolve()
    if (home / "data").exists():
        pg_ctl = [pg_server.server_binary("pg_ctl"), "-D", str(home / "data"), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_postgres(pg_ctl), capture_output=True, check=False)
    shutil.rmtree(home, ignore_errors=True)


def start_s3(root: Path) -> tuple[int, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **s3_server.fake_credentials()}
    process = _spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], root / "moto.log", env)
    wait_http(f"{url}/moto-api/", process.pid, root / "moto.log")
    return process.pid, url


def node_environment(cluster: Cluster, node: Node) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("MESH_")}
    env.update(cluster.environment)
    env.update(
        MESH_HOST="127.0.0.1",
        MESH_PORT=str(node.port),
        MESH_METRICS_PORT=str(node.metrics_port),
        MESH_DATA_DIR=str(cluster.root / node.name),
        MESH_DB_MIGRATE="off",
        MESH_DEMO="on",
        MESH_ENV_NAME="cluster",
        MESH_SHUTDOWN_GRACE_SECONDS=str(SHUTDOWN_GRACE_SECONDS),
    )
    return env


def broker_command() -> list[str]:
    script = Path(sys.executable).with_name("mesh-broker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "broker"]


def start_node(cluster: Cluster, node: Node) -> None:
    """Start (or start again) one node on its ports; returns once its /readyz answers 200."""
    log = cluster.root / f"{node.name}.log"
    process = _spawn([*broker_command(), "serve"], log, node_environment(cluster, node))
    node.pid = process.pid
    cluster.save()
    wait_http(node.readyz, node.pid, log)


def stop_node(node: Node) -> float:
    """SIGTERM (the graceful drain); returns how long the node took to exit."""
    return terminate(node.pid, STOP_TIMEOUT)


def render_haproxy(cluster: Cluster) -> str:
    """deploy/haproxy/haproxy.cfg with this cluster's addresses: the same checks, retries and draining."""
    text = HAPROXY_CONFIG.read_text()
    text = text.replace("bind :8700", f"bind 127.0.0.1:{cluster.balancer_port}")
    text = text.replace("bind :8404", f"bind 127.0.0.1:{cluster.stats_port}")
    text = re.sub(r" resolvers docker", "", text)
    text = re.sub(r"\nresolvers docker\n(    .*\n)*", "\n", text)
    servers = "".join(
        f"    server {node.name} 127.0.0.1:{node.port} port {node.metrics_port}\n" for node in cluster.nodes
    )
    text, count = re.subn(r"(    server .*\n)+", servers, text)
    if count != 1:
        raise ClusterError(f"{HAPROXY_CONFIG}: expected one block of server lines")
    return text


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if found is None:
        raise ClusterError("HAProxy is not installed: apt-get install haproxy (make cluster does this)")
    return found


def start_haproxy(cluster: Cluster) -> int:
    config = cluster.root / "haproxy.cfg"
    config.write_text(render_haproxy(cluster))
    log = cluster.root / "haproxy.log"
    process = _spawn([haproxy_binary(), "-db", "-f", str(config)], log)
    wait_http(f"http://127.0.0.1:{cluster.stats_port}/", process.pid, log)
    return process.pid


def start_prometheus(cluster: Cluster) -> int:
    """Prometheus scraping every node and HAProxy, with the alert rules; 0 when Debian's prometheus is missing."""
    binary = shutil.which("prometheus")
    if binary is None:
        return 0
    cluster.prometheus_port = free_port()
    targets = [f"127.0.0.1:{node.metrics_port}" for node in cluster.nodes]
    config = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "mesh-broker", "static_configs": [{"targets": targets}]},
            {"job_name": "haproxy", "static_configs": [{"targets": [f"127.0.0.1:{cluster.stats_port}"]}]},
        ],
    }
    path = cluster.root / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    log = cluster.root / "prometheus.log"
    command = [
        binary,
        f"--config.file={path}",
        f"--storage.tsdb.path={cluster.root / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{cluster.prometheus_port}",
    ]
    process = _spawn(command, log)
    wait_http(f"http://127.0.0.1:{cluster.prometheus_port}/-/ready", process.pid, log)
    return process.pid


def migrate(cluster: Cluster) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("MESH_")}
    env.update(cluster.environment, MESH_DATA_DIR=str(cluster.root / "cli"))
    subprocess.run([*broker_command(), "migrate"], env=env, check=True, capture_output=True, timeout=120)


# up and down ---------------------------------------------------------------------------------------------------


def up(directory: Path, nodes: int = 2) -> Cluster:
    """Start every part, in order; on any failure, stop what had started and raise."""
    root = directory.resolve()
    if (root / "state.json").exists():
        raise ClusterError(f"a cluster already runs from {root}: make cluster-down first")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    postgres_pid, postgres_port = start_postgres(root)
    cluster = Cluster(
        directory=str(root),
        environment={},
        nodes=[Node(f"node{n}", free_port(), free_port()) for n in range(1, nodes + 1)],
        balancer_port=free_port(),
        stats_port=free_port(),
        postgres_port=postgres_port,
        s3_url="",
        pids={"postgres": postgres_pid},
    )
    cluster.save()
    try:
        cluster.pids["moto"], cluster.s3_url = start_s3(root)
        bucket = asyncio.run(s3_server.create_bucket(cluster.s3_url))
        cluster.environment = {
            "MESH_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{postgres_port}/{DATABASE}",
            "MESH_BLOB_URL": f"s3://{bucket}/blobs",
            "MESH_S3_ENDPOINT_URL": cluster.s3_url,
            "MESH_S3_REGION": s3_server.REGION,
            "MESH_SHARED_KEY": SHARED_KEY,
            **s3_server.fake_credentials(),
        }
        (root / "cluster.env").write_text("".join(f"{k}={v}\n" for k, v in cluster.environment.items()))
        cluster.save()
        migrate(cluster)
        for node in cluster.nodes:
            start_node(cluster, node)
        cluster.pids["haproxy"] = start_haproxy(cluster)
        cluster.save()
        prometheus = start_prometheus(cluster)
        if prometheus:
            cluster.pids["prometheus"] = prometheus
        cluster.save()
        # HAProxy has to see each node's /readyz pass (rise 2) before it sends it anything.
        wait_http(f"{cluster.url}/_ping", cluster.pids["haproxy"], root / "haproxy.log")
    except BaseException:
        down(root)
        raise
    return cluster


def down(directory: Path) -> None:
    """Stop every process the state names (nodes first, so they drain while the rest still answers) and remove
    the folder."""
    root = directory.resolve()
    try:
        cluster = Cluster.load(root)
    except ClusterError:
        if root.exists():
            stop_postgres(root)
            shutil.rmtree(root, ignore_errors=True)
        return
    for node in cluster.nodes:
        if node.pid:
            terminate(node.pid, STOP_TIMEOUT)
    for name in ("haproxy", "prometheus", "moto"):
        if cluster.pids.get(name):
            terminate(cluster.pids[name], 10.0)
    stop_postgres(root)
    shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker.devsupport.cluster", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--nodes", type=int, default=2, help="broker nodes (default 2)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state folder (default .cluster)")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            if args.nodes < 1:
                parser.error("--nodes must be at least 1")
            print(up(args.dir, args.nodes).describe())
        elif args.action == "down":
            down(args.dir)
            print(f"cluster in {args.dir} stopped and removed")
        else:
            cluster = Cluster.load(args.dir.resolve())
            print(cluster.describe())
            for node in cluster.nodes:
                print(f"{node.name}: {'running' if alive(node.pid) else 'stopped'} (pid {node.pid})")
    except (ClusterError, subprocess.CalledProcessError, OSError) as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
