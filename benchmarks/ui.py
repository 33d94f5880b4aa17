"""The web page (broker/ui) against issue 16's targets, measured here and never asserted in tests.

1. Server time per page under `make bench`'s load: Locust runs benchmarks/locustfile.py against the broker exactly
   as `make bench` does (64 users, 0.5 s think time, 60 s by default) while two signed-in people go round the
   pages (inbox, send, sent, lookup, sign-in). The figure is each page's own Server-Timing header: the time the
   broker spent on it, from the page's middleware to its last byte rendered. Target: median <= 100 ms.
2. A 50 MB upload through the page against the same file sent by the API (one POST /outbox), on an idle broker,
   alternated for --rounds rounds: MB/s each, and the broker's resident memory (VmRSS) before and after each
   kind and its peak (VmHWM). Target: the page at >= 50 % of the API's rate, RSS unchanged.

    .venv/bin/python benchmarks/ui.py                       # both parts
    .venv/bin/python benchmarks/ui.py --duration 30 --rounds 3
    .venv/bin/python benchmarks/ui.py --skip-load           # the upload comparison alone

Results go to stdout; record them in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from broker.auth import make_token
from latency import free_port
from load import RESULTS, Result, broker_env, create_mailboxes, run_locust, stop, wait_http

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
TIMING = re.compile(r"app;dur=([\d.]+)")
PAGES = {
    "X26ABC2": ["/ui/inbox", "/ui/send", "/ui/lookup?ods_code=A99901&workflow_id=TOC_FHIR_IP_DISCH"],
    "X26ABC1": ["/ui/sent", "/ui/inbox", "/ui/send"],
}
MB = 1000 * 1000


@dataclass
class Samples:
    server_ms: dict[str, list[float]] = field(default_factory=dict)
    client_ms: dict[str, list[float]] = field(default_factory=dict)

    def add(self, page: str, server: float, client: float) -> None:
        self.server_ms.setdefault(page, []).append(server)
        self.client_ms.setdefault(page, []).append(client)


class Person:
    """One signed-in person: the page's cookies kept by hand (they are Secure, and this is plain HTTP)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, mailbox_id: str):
        self.session = session
        self.base = base
        self.mailbox_id = mailbox_id
        self.cookies: dict[str, str] = {}

    async def request(self, method: str, path: str, **kwargs: object) -> tuple[aiohttp.ClientResponse, bytes]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        async with self.session.request(
            method, f"{self.base}{path}", headers=headers, allow_redirects=False, **kwargs
        ) as response:
            body = await response.read()
            for name, morsel in response.cookies.items():
                self.cookies[name] = morsel.value
            return response, body

    async def csrf(self, path: str) -> str:
        _response, body = await self.request("GET", path)
        found = CSRF.search(body.decode())
        if found is None:
            raise RuntimeError(f"no form on {path}")
        return found.group(1)

    async def sign_in(self) -> None:
        token = await self.csrf("/ui/sign-in")
        form = {"csrf_token": token, "mailbox_id": self.mailbox_id, "password": "password"}
        response, _ = await self.request("POST", "/ui/sign-in", data=form)
        if response.status != 303:
            raise RuntimeError(f"{self.mailbox_id} could not sign in ({response.status})")


def api_token(mailbox_id: str) -> str:
    return make_token(b"TestKey", mailbox_id, "password", nonce=str(uuid.uuid4()), nonce_count=0, at=datetime.now(UTC))


async def seed_messages(base: str, count: int) -> None:
    """Messages for the pages to list: X26ABC1 -> X26ABC2 on TEST_WORKFLOW, a page's worth and more."""
    async with aiohttp.ClientSession() as session:
        for n in range(count):
            headers = {
                "Authorization": api_token("X26ABC1"),
                "mex-To": "X26ABC2",
                "mex-WorkflowID": "TEST_WORKFLOW",
                "mex-Subject": f"Monthly report {n}",
                "mex-FileName": f"report-{n}.csv",
                "Content-Type": "application/octet-stream",
            }
            async with session.post(f"{base}/messageexchange/X26ABC1/outbox", data=b"x" * 2048, headers=headers) as r:
                if r.status != 202:
                    raise RuntimeError(f"seeding failed: {r.status} {await r.text()}")


async def sample_pages(base: str, until: float, samples: Samples) -> None:
    async with aiohttp.ClientSession() as session:
        people = [Person(session, base, mailbox_id) for mailbox_id in PAGES]
        for person in people:
            await person.sign_in()
        while time.monotonic() < until:
            for person in people:
                for page in [*PAGES[person.mailbox_id], "/ui/sign-in"]:
                    started = time.perf_counter()
                    response, _ = await person.request("GET", page)
                    client = (time.perf_counter() - started) * 1000
                    found = TIMING.search(response.headers.get("Server-Timing", ""))
                    if response.status != 200 or found is None:
                        raise RuntimeError(f"{page}: {response.status}")
                    samples.add(page.split("?")[0], float(found.group(1)), client)
            await asyncio.sleep(0.2)


def proc_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return 0


async def upload_api(base: str, data: bytes) -> float:
    headers = {
        "Authorization": api_token("X26ABC1"),
        "mex-To": "X26ABC2",
        "mex-WorkflowID": "TEST_WORKFLOW",
        "mex-FileName": "big.bin",
        "Content-Type": "application/octet-stream",
    }
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.post(f"{base}/messageexchange/X26ABC1/outbox", data=data, headers=headers) as response:
            await response.read()
            elapsed = time.perf_counter() - started
            if response.status != 202:
                raise RuntimeError(f"API upload: {response.status}")
    return elapsed


async def upload_page(base: str, data: bytes) -> float:
    async with aiohttp.ClientSession() as session:
        person = Person(session, base, "X26ABC1")
        await person.sign_in()
        form = aiohttp.FormData()
        form.add_field("csrf_token", await person.csrf("/ui/send"))
        form.add_field("to", "X26ABC2")
        form.add_field("workflow_id", "TEST_WORKFLOW")
        form.add_field("file", data, filename="big.bin", content_type="application/octet-stream")
        started = time.perf_counter()
        response, _ = await person.request("POST", "/ui/send", data=form)
        elapsed = time.perf_counter() - started
        if response.status != 303:
            raise RuntimeError(f"page upload: {response.status}")
    return elapsed


def upload_comparison(base: str, pid: int, size: int, rounds: int) -> None:
    block = os.urandom(MB)
    data = (block * math.ceil(size / MB))[:size]
    rates: dict[str, list[float]] = {"api": [], "page": []}
    print(f"\nUpload of {size / MB:.0f} MB, {rounds} rounds alternated (MB/s; broker VmRSS MiB before -> after)")
    for n in range(rounds):
        for kind, upload in (("api", upload_api), ("page", upload_page)):
            before = proc_kib(pid, "VmRSS")
            elapsed = asyncio.run(upload(base, data))
            after = proc_kib(pid, "VmRSS")
            rates[kind].append(size / MB / elapsed)
            memory = f"RSS {before / 1024:.1f} -> {after / 1024:.1f}"
            print(f"  round {n + 1} {kind:4}: {rates[kind][-1]:7.1f} MB/s   {memory}")
    api, page = statistics.median(rates["api"]), statistics.median(rates["page"])
    print(f"  median: API {api:.1f} MB/s, page {page:.1f} MB/s = {page / api * 100:.0f} % of the API's rate")
    peak, now = proc_kib(pid, "VmHWM") / 1024, proc_kib(pid, "VmRSS") / 1024
    print(f"  broker VmHWM (peak RSS) {peak:.1f} MiB, VmRSS now {now:.1f} MiB")


def report_pages(samples: Samples) -> None:
    print("\nPage server time under load (Server-Timing, ms)")
    print(f"  {'page':12} {'n':>5} {'median':>8} {'p90':>8} {'max':>8}   client median")
    for page, values in sorted(samples.server_ms.items()):
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
        client = statistics.median(samples.client_ms[page])
        print(
            f"  {page:12} {len(values):5} {statistics.median(values):8.1f} {p90:8.1f} {ordered[-1]:8.1f}   {client:.1f}"
        )


def report_load(result: Result) -> None:
    if result.total is not None:
        total = result.total
        print(
            f"\nLocust alongside: {total.count} requests, {total.failures} failures, {total.rps:.1f} req/s, "
            f"median {total.median_ms:.0f} ms, p99 {total.p99_ms:.0f} ms"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--think-time", type=float, default=0.5)
    parser.add_argument("--upload-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-upload", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    with tempfile.TemporaryDirectory(prefix="mesh-ui-bench-") as folder:
        data_dir = Path(folder) / "data"
        port = free_port()
        env = broker_env(data_dir, port, {"MESH_DEMO": "on"})
        log = RESULTS / f"ui-broker-{stamp}.log"
        with log.open("wb") as out:
            broker = subprocess.Popen([sys.executable, "-m", "broker", "serve"], env=env, stdout=out, stderr=out)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/_ping", broker, log)
            if not args.skip_load:
                mailboxes = [f"LOAD{n:03d}" for n in range(1, max(2, math.ceil(args.users * 5 / 11)) + 1)]
                create_mailboxes(env, data_dir, mailboxes)
                asyncio.run(seed_messages(base, 30))
                load_args = argparse.Namespace(
                    users=args.users,
                    spawn_rate=0,
                    duration=args.duration,
                    processes=1,
                    size=1024,
                    chunks=3,
                    think_time=args.think_time,
                )
                outcome: list[Result] = []
                locust = threading.Thread(
                    target=lambda: outcome.append(run_locust("ui", base, mailboxes, load_args, stamp))
                )
                locust.start()
                time.sleep(min(10, args.duration / 4))  # let the users spawn
                samples = Samples()
                asyncio.run(sample_pages(base, time.monotonic() + args.duration * 0.7, samples))
                locust.join()
                report_pages(samples)
                if outcome:
                    report_load(outcome[0])
            if not args.skip_upload:
                upload_comparison(base, broker.pid, args.upload_mb * MB, args.rounds)
        finally:
            stop(broker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
