"""Latency of the hot path (send, list, download, acknowledge) against a real `mesh-broker serve` process.

Starts a broker on a throwaway data dir (HTTP on 127.0.0.1, demo mailboxes), then drives it from one
aiohttp client with a fixed number of concurrent workers, each with its own mailbox token stream, and prints
p50/p90/p99 per operation. Bounded: it stops after --messages messages.

    .venv/bin/python benchmarks/latency.py --messages 2000 --concurrency 8 --size 1024 --backend both
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import aiohttp

from broker.auth import make_token

KEY = b"TestKey"
V2 = "application/vnd.mesh.v2+json"


class Tokens:
    def __init__(self, mailbox: str):
        self.mailbox = mailbox
        self.nonce = str(uuid.uuid4())
        self.counter = count()

    def headers(self) -> dict[str, str]:
        token = make_token(
            KEY, self.mailbox, "password", nonce=self.nonce, nonce_count=next(self.counter), at=datetime.now(UTC)
        )
        return {"Authorization": token, "Accept": V2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(data_dir: Path, port: int, backend_env: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(MESH_DEMO="on", MESH_DATA_DIR=str(data_dir), MESH_PORT=str(port), MESH_SHARED_KEY="TestKey")
    env.update(backend_env)
    return subprocess.Popen(
        [sys.executable, "-m", "broker", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"{base}/_ping") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("broker did not start")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"n": len(ordered), "p50": cuts[49] * 1000, "p90": cuts[89] * 1000, "p99": cuts[98] * 1000}


async def run(base: str, messages: int, concurrency: int, size: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"send": [], "list": [], "download": [], "acknowledge": []}
    payload = os.urandom(size)
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def timed(op: str, method: str, url: str, tokens: Tokens, **kw: object) -> aiohttp.ClientResponse:
            headers = tokens.headers()
            headers.update(kw.pop("headers", {}))  # type: ignore[arg-type]
            started = time.perf_counter()
            async with session.request(method, url, headers=headers, **kw) as response:  # type: ignore[arg-type]
                await response.read()
            timings[op].append(time.perf_counter() - started)
            if response.status >= 300:
                raise RuntimeError(f"{op} answered {response.status}")
            return response

        sender_ids = ["X26ABC1", "X26ABC3"]
        per_worker = messages // concurrency

        async def sender(worker: int) -> None:
            tokens = Tokens(sender_ids[worker % 2])
            send_headers = {"mex-To": "X26ABC2", "mex-WorkflowID": "BENCH", "Content-Type": "application/octet-stream"}
            for _ in range(per_worker):
                url = f"{base}/{tokens.mailbox}/outbox"
                await timed("send", "POST", url, tokens, data=payload, headers=send_headers)

        await asyncio.gather(*(sender(w) for w in range(concurrency)))

        # The recipient drains its inbox: list pages of 100, download and acknowledge each message.
        queue: asyncio.Queue[str] = asyncio.Queue()
        lister = Tokens("X26ABC2")
        next_url: str | None = f"{base}/X26ABC2/inbox?max_results=100"
        while next_url:
            headers = lister.headers()
            started = time.perf_counter()
            async with session.get(next_url, headers=headers) as response:
                body = await response.json(content_type=None)
            timings["list"].append(time.perf_counter() - started)
            for message_id in body["messages"]:
                queue.put_nowait(message_id)
            link = body.get("links", {}).get("next")
            next_url = f"{base.rsplit('/messageexchange', 1)[0]}{link}" if link else None

        async def receiver() -> None:
            tokens = Tokens("X26ABC2")
            while not queue.empty():
                message_id = queue.get_nowait()
                await timed(
                    "download",
                    "GET",
                    f"{base}/X26ABC2/inbox/{message_id}",
                    tokens,
                    headers={"Accept-Encoding": "identity"},
                )
                await timed("acknowledge", "PUT", f"{base}/X26ABC2/inbox/{message_id}/status/acknowledged", tokens)

        await asyncio.gather(*(receiver() for _ in range(concurrency)))
    return timings


@contextmanager
def backend(name: str) -> Iterator[dict[str, str]]:
    """Environment for the broker: nothing for the embedded default; a throwaway PostgreSQL cluster and
    moto's S3 server for postgres+s3 (broker.devsupport, which the test suite uses too)."""
    if name == "embedded":
        yield {}
        return
    from broker.devsupport import pg_server, s3_server

    with pg_server.cluster() as admin_dsn, s3_server.moto_server() as endpoint:
        pg_server.prepare_template(admin_dsn)
        dsn = asyncio.run(pg_server.clone_database(admin_dsn))
        bucket = asyncio.run(s3_server.create_bucket(endpoint))
        yield {
            "MESH_DATABASE_URL": dsn,
            "MESH_BLOB_URL": f"s3://{bucket}/bench",
            "MESH_S3_ENDPOINT_URL": endpoint,
            "MESH_S3_REGION": s3_server.REGION,
            **s3_server.fake_credentials(),
        }


def measure(name: str, args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mesh-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}/messageexchange"
    with backend(name) as backend_env:
        broker = start_broker(data_dir, port, backend_env)
        try:
            asyncio.run(wait_ready(base))
            started = time.perf_counter()
            timings = asyncio.run(run(base, args.messages, args.concurrency, args.size))
            elapsed = time.perf_counter() - started
        finally:
            broker.send_signal(signal.SIGTERM)
            try:
                broker.wait(10)
            except subprocess.TimeoutExpired:
                broker.kill()
            shutil.rmtree(data_dir, ignore_errors=True)

    rate = args.messages / elapsed
    print(f"\n[{name}] messages={args.messages} concurrency={args.concurrency} size={args.size} B")
    print(f"send+list+download+acknowledge loop: wall={elapsed:.1f} s, {rate:.0f} messages/s")
    print(f"{'operation':<12} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for op, samples in timings.items():
        stats = percentiles(samples) if len(samples) > 1 else {"n": len(samples), "p50": 0, "p90": 0, "p99": 0}
        print(f"{op:<12} {stats['n']:>6} {stats['p50']:>8.2f} {stats['p90']:>8.2f} {stats['p99']:>8.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024, help="payload bytes per message")
    parser.add_argument("--backend", choices=("embedded", "postgres+s3", "both"), default="embedded")
    args = parser.parse_args()
    for name in ("embedded", "postgres+s3") if args.backend == "both" else (args.backend,):
        measure(name, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
