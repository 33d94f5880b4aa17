"""A rolling restart under load: every node of a `make cluster` topology is stopped with SIGTERM (the graceful
drain) and started again, one after the other, while senders and receivers keep going through HAProxy.

Starts its own cluster (broker/devsupport/cluster.py: PostgreSQL, moto's S3, N nodes, HAProxy with
deploy/haproxy/haproxy.cfg) in a temporary folder, creates the load mailboxes, and runs asyncio senders (one
message a request, a fresh NHSMESH token each) and one receiver per mailbox (list, download, acknowledge). After
a warm-up it restarts the nodes in turn, waiting for each to be ready and for HAProxy to take it back before the
next. Then the senders stop, the receivers empty every inbox, and the run reports:

- failed requests: any answer other than the one MESH promises (202 send, 200 list/download/acknowledge), or no
  answer at all;
- lost messages: accepted (202) but never received; extra ones: received but never accepted (a send that failed
  and was stored all the same) and received twice.

Exits 1 unless both are zero. Bounded: the load runs for the restarts plus --settle seconds either side.

    .venv/bin/python benchmarks/rolling_restart.py --nodes 3 --senders 16
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from broker.auth import make_token
from broker.devsupport import cluster as local_cluster

V2 = "application/vnd.mesh.v2+json"
WORKFLOW = "ROLLING_TEST"
PASSWORD = "password"
DRAIN_TIMEOUT = 60.0


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    sent: set[str] = field(default_factory=set)
    received: Counter[str] = field(default_factory=Counter)

    def fail(self, what: str, detail: str) -> None:
        self.failures[what] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{datetime.now(UTC):%H:%M:%S.%f} {what}: {detail}")


class Mailbox:
    """One mailbox's credentials: every request gets a token of its own (the broker accepts each once)."""

    def __init__(self, mailbox_id: str, key: bytes):
        self.mailbox_id = mailbox_id
        self.key = key
        self.nonce = str(uuid.uuid4())
        self.counter = itertools.count()

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        token = make_token(
            self.key, self.mailbox_id, PASSWORD, nonce=self.nonce, nonce_count=next(self.counter), at=datetime.now(UTC)
        )
        return {"Authorization": token, "Accept": V2, **(extra or {})}


async def call(
    session: aiohttp.ClientSession, tally: Tally, what: str, method: str, url: str, expect: int, **kw: object
) -> bytes | None:
    """One request; the body when the status is the expected one, else None with the failure counted."""
    tally.requests[what] += 1
    try:
        async with session.request(method, url, **kw) as response:  # type: ignore[arg-type]
            body = await response.read()
            if response.status != expect:
                tally.fail(what, f"{response.status} {body[:200]!r}")
                return None
            return body
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.fail(what, f"{type(exc).__name__}: {exc}")
        return None


async def sender(
    session: aiohttp.ClientSession, base: str, me: Mailbox, to: list[str], tally: Tally, stop: asyncio.Event, size: int
) -> None:
    payload = os.urandom(size)
    while not stop.is_set():
        headers = me.headers(
            {
                "mex-From": me.mailbox_id,
                "mex-To": random.choice(to),
                "mex-WorkflowID": WORKFLOW,
                "Content-Type": "application/octet-stream",
            }
        )
        body = await call(
            session, tally, "send", "POST", f"{base}/{me.mailbox_id}/outbox", 202, data=payload, headers=headers
        )
        if body is not None:
            tally.sent.add(json.loads(body)["message_id"])


async def receiver(session: aiohttp.ClientSession, base: str, me: Mailbox, tally: Tally, done: asyncio.Event) -> None:
    """List, download and acknowledge until `done` is set and a listing comes back empty."""
    inbox = f"{base}/{me.mailbox_id}/inbox"
    while True:
        listed = await call(session, tally, "list", "GET", f"{inbox}?max_results=100", 200, headers=me.headers())
        ids = [] if listed is None else json.loads(listed)["messages"]
        for message_id in ids:
            got = await call(session, tally, "download", "GET", f"{inbox}/{message_id}", 200, headers=me.headers())
            if got is None:
                continue
            acked = await call(
                session,
                tally,
                "acknowledge",
                "PUT",
                f"{inbox}/{message_id}/status/acknowledged",
                200,
                headers=me.headers(),
            )
            if acked is not None:
                tally.received[message_id] += 1
        if not ids:
            if done.is_set() and listed is not None:
                return
            await asyncio.sleep(0.05)


def create_mailboxes(cluster: local_cluster.Cluster, names: list[str]) -> None:
    folder = cluster.root / "load"
    folder.mkdir(exist_ok=True)
    (folder / "mailboxes.jsonl").write_text(
        "".join(json.dumps({"mailbox_id": m, "ods_code": "X26", "password": PASSWORD}) + "\n" for m in names)
    )
    (folder / "workflows.jsonl").write_text(json.dumps({"workflow_id": WORKFLOW, "senders": names, "receivers": names}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(cluster.environment, MESH_DATA_DIR=str(folder))
    command = [*local_cluster.broker_command(), "import-sandbox", str(folder / "mailboxes.jsonl")]
    subprocess.run([*command, str(folder / "workflows.jsonl")], env=env, check=True, capture_output=True, timeout=60)


def haproxy_counters(cluster: local_cluster.Cluster) -> dict[str, int]:
    """The backend's retries and redispatches, from HAProxy's stats CSV."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{cluster.stats_port}/;csv", timeout=5) as response:
        lines = response.read().decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "mesh-nodes" and row.get("svname") == "BACKEND":
            return {name: int(row.get(name) or 0) for name in ("wretr", "wredis", "hrsp_5xx", "eresp", "econ")}
    return {}


async def run_load(
    cluster: local_cluster.Cluster, args: argparse.Namespace, names: list[str]
) -> tuple[Tally, dict[str, object]]:
    tally = Tally()
    stop, done = asyncio.Event(), asyncio.Event()
    base = f"{cluster.url}/messageexchange"
    key = local_cluster.SHARED_KEY.encode()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    restarts: list[dict[str, float | str]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        receivers = [asyncio.create_task(receiver(session, base, Mailbox(m, key), tally, done)) for m in names]
        senders = [
            asyncio.create_task(
                sender(session, base, Mailbox(names[n % len(names)], key), names, tally, stop, args.size)
            )
            for n in range(args.senders)
        ]
        started = time.monotonic()
        await asyncio.sleep(args.settle)
        for node in cluster.nodes:
            before = len(tally.sent)
            drained = await asyncio.to_thread(local_cluster.stop_node, node)
            down_at = time.monotonic()
            await asyncio.to_thread(local_cluster.start_node, cluster, node)
            restarts.append(
                {"node": node.name, "drain_s": round(drained, 2), "down_s": round(time.monotonic() - down_at, 2)}
            )
            print(f"  {node.name}: drained in {drained:.2f} s, back after {restarts[-1]['down_s']} s", flush=True)
            await asyncio.sleep(args.settle)
            restarts[-1]["sent_meanwhile"] = len(tally.sent) - before
        stop.set()
        await asyncio.gather(*senders)
        load_seconds = time.monotonic() - started
        done.set()
        await asyncio.wait_for(asyncio.gather(*receivers), DRAIN_TIMEOUT)
    return tally, {"load_seconds": load_seconds, "restarts": restarts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, help="broker nodes behind HAProxy (default 3)")
    parser.add_argument("--senders", type=int, default=16, help="concurrent senders (default 16)")
    parser.add_argument("--mailboxes", type=int, default=8, help="load mailboxes, one receiver each (default 8)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per message (default 1024)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of load before, between and after restarts")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    names = [f"ROLL{n:03d}" for n in range(1, args.mailboxes + 1)]
    with tempfile.TemporaryDirectory(prefix="mesh-rolling-") as folder:
        print(f"starting a cluster of {args.nodes} nodes in {folder} ...", flush=True)
        cluster = local_cluster.up(Path(folder) / "cluster", args.nodes)
        try:
            create_mailboxes(cluster, names)
            print(
                f"load: {args.senders} senders, {len(names)} receivers, {args.size} B messages, through {cluster.url}",
                flush=True,
            )
            tally, figures = asyncio.run(run_load(cluster, args, names))
            figures["haproxy"] = haproxy_counters(cluster)
        finally:
            local_cluster.down(cluster.root)

    lost = tally.sent - set(tally.received)
    extra = set(tally.received) - tally.sent
    twice = [m for m, n in tally.received.items() if n > 1]
    requests = sum(tally.requests.values())
    failed = sum(tally.failures.values())
    result = {
        "nodes": args.nodes,
        "senders": args.senders,
        "requests": requests,
        "requests_by_kind": dict(tally.requests),
        "requests_per_s": round(requests / float(figures["load_seconds"]), 1),  # type: ignore[arg-type]
        "failed_requests": failed,
        "failures_by_kind": dict(tally.failures),
        "messages_accepted": len(tally.sent),
        "messages_received": len(tally.received),
        "lost_messages": len(lost),
        "received_but_not_accepted": len(extra),
        "received_twice": len(twice),
        **figures,
    }
    print(json.dumps(result, indent=2))
    for example in tally.examples:
        print(f"  failure: {example}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = failed == 0 and not lost and not extra and not twice
    print("rolling restart: 0 failed requests, 0 lost messages" if ok else "rolling restart: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
