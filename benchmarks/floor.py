"""The floor under issue 18's CPU targets: what the least a MESH server can do costs, beside the broker, in one run.

    .venv/bin/python benchmarks/floor.py --rounds 3 --cycles 3000

The targets put the broker's CPU per message cycle at no more than 2.5x the bare server's (`bare_server.py`: answers
from a dict, checks nothing, keeps nothing). This measures, with `cpu_ab.py`'s client (send 1 KiB, list, download,
acknowledge, 16 at a time, a fresh NHSMESH token on every request), four servers alternated each round:

- `bare`: `bare_server.py` itself;
- `auth`: the bare server plus what the MESH contract asks of every request and nothing else: parse the NHSMESH
  header, check the clock window, compute and compare the HMAC, remember the token in a dict (replay);
- `durable`: `auth` plus what the broker promises: the token and the message kept in SQLite (WAL) before the
  answer, the send and the acknowledgement committed with an fsync (`synchronous=FULL`), the token without
  (`NORMAL`, as the broker does), each by a writer thread that commits what is queued as one transaction; lists and
  downloads read on the event loop's thread. No validation, no metrics, no logs, no limits;
- `broker`: the broker from `--tree` (default: this checkout), embedded default settings;
- `sandbox`: mesh-sandbox from PyPI as `load.py --compare-sandbox` runs it (in memory, full auth; its three
  mailboxes; installed into benchmarks/results/.sandbox-venv on first use), one cycle at a time: with two or
  more at once it loses messages (answered 202, then never listed and unknown to tracking). It stores a message after it
  has answered the send (a background task), so its cycles wait SANDBOX_SETTLE after the send and list again
  until the message shows; waiting costs a server no CPU.

Each is a fresh process; CPU is read from the kernel (all threads). The ratios to `bare` say how much of the 2.5x
the contract and the durability alone take, before any of the broker's own work; the sandbox's says where a
tenth of it falls.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import os
import queue
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import uvloop
from aiohttp import web

import bare_server
from cpu_ab import drive, measure
from latency import free_port, wait_ready
from load import SANDBOX_MAILBOXES, sandbox_server, stop, tree_cpu

MX = "/messageexchange"
SHARED_KEY = b"TestKey"
PASSWORD = "password"
WINDOW = timedelta(hours=2)
LEVELS = ("bare", "auth", "durable")
SERVERS = (*LEVELS, "broker", "sandbox")
SANDBOX_SETTLE = 0.005


class Writer:
    """One thread, one connection: whatever is queued when it looks is committed as one transaction, then every
    waiter is told in one wake-up of the loop (the broker's group commit, at its simplest)."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    async def run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put((fn, future))
        return await future

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._conn.close()
                return
            batch = [first]
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # seen once this batch is committed
                    break
                batch.append(more)
            self._conn.execute("BEGIN IMMEDIATE")
            results = [(future, fn(self._conn)) for fn, future in batch]
            self._conn.execute("COMMIT")
            loop = batch[0][1].get_loop()
            loop.call_soon_threadsafe(_settle, results)


def _settle(results: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, result in results:
        if not future.done():
            future.set_result(result)


def open_store(directory: Path) -> tuple[sqlite3.Connection, Writer, Writer]:
    path = directory / "floor.sqlite"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY, seen INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS messages (
            id TEXT PRIMARY KEY, recipient TEXT NOT NULL, status TEXT NOT NULL, body BLOB NOT NULL);
        CREATE INDEX IF NOT EXISTS inbox ON messages (recipient, status, id);
        """
    )
    return conn, Writer(path, "FULL"), Writer(path, "NORMAL")


def build(level: str, directory: Path) -> web.Application:
    if level == "bare":
        return bare_server.build()
    durable = level == "durable"
    seen: set[str] = set()
    reader, messages, tokens = open_store(directory) if durable else (None, None, None)
    counter = itertools.count()
    keyed = hmac.new(SHARED_KEY, digestmod=hashlib.sha256)

    async def authenticate(request: web.Request) -> str | None:
        """The mailbox the request may act for, or None: the whole NHSMESH check, nothing more."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        parts = value.split(":")
        if scheme != "NHSMESH" or len(parts) != 5 or not parts[2].isdigit():
            return None
        mailbox, nonce, count, stamp, digest = parts
        if mailbox != request.match_info.get("mailbox_id", mailbox):
            return None
        at = datetime(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[8:10]), int(stamp[10:]), tzinfo=UTC)
        if abs(datetime.now(UTC) - at) > WINDOW:
            return None
        expected = keyed.copy()
        expected.update(f"{mailbox}:{nonce}:{count}:{PASSWORD}:{stamp}".encode())
        if not hmac.compare_digest(expected.hexdigest(), digest.lower()):
            return None
        if tokens is None:
            if header in seen:
                return None
            seen.add(header)
            return mailbox
        fresh = await tokens.run(
            lambda c: c.execute("INSERT OR IGNORE INTO tokens VALUES (?, ?)", (header, int(at.timestamp()))).rowcount
        )
        return mailbox if fresh else None

    def json(body: object, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    refused = web.Response(status=403, text="refused")

    async def send(request: web.Request) -> web.Response:
        if await authenticate(request) is None:
            return refused
        message_id = f"{datetime.now(UTC):%Y%m%d%H%M%S%f}_{next(counter) % 1_000_000:06d}"
        row = (message_id, request.headers["mex-To"], "accepted", await request.read())
        assert messages is not None
        await messages.run(lambda c: c.execute("INSERT INTO messages VALUES (?, ?, ?, ?)", row))
        return json({"message_id": message_id}, 202)

    async def inbox(request: web.Request) -> web.Response:
        mailbox = await authenticate(request)
        if mailbox is None:
            return refused
        assert reader is not None
        sql = "SELECT id FROM messages WHERE recipient = ? AND status = 'accepted' ORDER BY id LIMIT 100"
        ids = [row[0] for row in reader.execute(sql, (mailbox,))]
        return json({"messages": ids, "approx_inbox_count": len(ids), "links": {}})

    async def download(request: web.Request) -> web.Response:
        mailbox = await authenticate(request)
        if mailbox is None:
            return refused
        message_id = request.match_info["message_id"]
        assert reader is not None
        sql = "SELECT body FROM messages WHERE id = ? AND recipient = ? AND status = 'accepted'"
        row = reader.execute(sql, (message_id, mailbox)).fetchone()
        if row is None:
            return web.Response(status=404)
        return web.Response(body=row[0], headers={"mex-Chunk-Range": "1:1", "mex-MessageID": message_id})

    async def acknowledge(request: web.Request) -> web.Response:
        mailbox = await authenticate(request)
        if mailbox is None:
            return refused
        message_id = request.match_info["message_id"]
        sql = "UPDATE messages SET status = 'acknowledged' WHERE id = ? AND recipient = ?"
        assert messages is not None
        await messages.run(lambda c: c.execute(sql, (message_id, mailbox)))
        return json({"message_id": message_id})

    if not durable:
        # The contract's per-request checks in front of the bare server's in-memory answers.
        inner = bare_server.build()

        @web.middleware
        async def checked(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path != MX + "/_ping" and await authenticate(request) is None:
                return refused
            return await handler(request)

        inner.middlewares.append(checked)
        return inner

    async def ping(request: web.Request) -> web.Response:
        return json({"status": "ok"})

    async def close(app: web.Application) -> None:
        assert messages is not None and tokens is not None and reader is not None
        messages.close()
        tokens.close()
        reader.close()

    app = web.Application()
    app.on_cleanup.append(close)
    mb = MX + "/{mailbox_id}"
    app.router.add_get(MX + "/_ping", ping)
    app.router.add_post(mb + "/outbox", send)
    app.router.add_get(mb + "/inbox", inbox)
    app.router.add_get(mb + "/inbox/{message_id}", download)
    app.router.add_put(mb + "/inbox/{message_id}/status/acknowledged", acknowledge)
    return app


def measure_level(level: str, cycles: int, concurrency: int, warmup: int) -> tuple[float, float]:
    """(CPU ms per cycle, cycles a second) of one fresh floor server at `level`."""
    directory = Path(tempfile.mkdtemp(prefix="mesh-floor-"))
    port = free_port()
    try:
        server = subprocess.Popen(
            [sys.executable, __file__, "serve", level, str(port), str(directory)],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)},
        )
        try:
            base = f"http://127.0.0.1:{port}{MX}"
            uvloop.run(wait_ready(base))
            uvloop.run(drive(base, warmup, concurrency))
            before = tree_cpu(server.pid)
            seconds = uvloop.run(drive(base, cycles, concurrency))
            spent = tree_cpu(server.pid) - before
        finally:
            stop(server)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return spent / cycles * 1000, cycles / seconds


def measure_sandbox(cycles: int, warmup: int) -> tuple[float, float]:
    """(CPU ms per cycle, cycles a second) of one fresh mesh-sandbox, one cycle at a time (see the docstring)."""
    port = free_port()
    with sandbox_server(port, datetime.now(UTC).strftime("floor-%Y%m%d-%H%M%S")) as server:
        base = f"http://127.0.0.1:{port}{MX}"
        uvloop.run(drive(base, warmup, 1, SANDBOX_MAILBOXES, SANDBOX_SETTLE))
        before = tree_cpu(server.pid)
        seconds = uvloop.run(drive(base, cycles, 1, SANDBOX_MAILBOXES, SANDBOX_SETTLE))
        spent = tree_cpu(server.pid) - before
    return spent / cycles * 1000, cycles / seconds


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        _, _, level, port, directory = sys.argv
        uvloop.install()
        web.run_app(build(level, Path(directory)), host="127.0.0.1", port=int(port), access_log=None, print=None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parent.parent), help="the broker's tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"some of {','.join(SERVERS)}")
    args = parser.parse_args()
    order = [name for name in args.servers.split(",") if name]
    if "bare" not in order or not set(order) <= set(SERVERS):
        parser.error(f"--servers: some of {','.join(SERVERS)}, bare among them")
    cpu: dict[str, list[float]] = {name: [] for name in order}
    for round_number in range(1, args.rounds + 1):
        for name in order if round_number % 2 else list(reversed(order)):
            if name == "broker":
                ms, _loop, rate = measure(Path(args.tree).resolve(), args.cycles, args.concurrency, args.warmup)
            elif name == "sandbox":
                ms, rate = measure_sandbox(args.cycles, args.warmup)
            else:
                ms, rate = measure_level(name, args.cycles, args.concurrency, args.warmup)
            cpu[name].append(ms)
            print(f"round {round_number} {name}: {ms:.3f} ms CPU per cycle, {rate:.0f} cycles/s", flush=True)
    bare = statistics.mean(cpu["bare"])
    for name, values in cpu.items():
        mean = statistics.mean(values)
        print(f"{name:8} mean {mean:.3f} ms per cycle ({min(values):.3f}-{max(values):.3f}), {mean / bare:.2f}x bare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
