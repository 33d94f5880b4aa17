"""The client side's targets (issue 15), measured against a real `mesh-broker serve` (embedded backend):

- latency: a 1 KiB file dropped into agent A's OUT until it is in agent B's IN (PollPeriod 1 minute: arrivals
  come through the long poll), median and p95 over --samples files;
- idle: HTTP requests the two idle agents make to the broker per mailbox over --idle-seconds with a long-poll wait
  of --wait seconds (from the broker's own request counter);
- throughput: --files small files through the pair, files/s from the first drop to the last file in IN, every
  file checked (none lost, none twice);
- large: one --large-size file through the pair, each agent's peak RSS (VmHWM);
- client: MeshClient upload and download of one --client-size message in 100 MB chunks, MiB/s (compare with
  large_transfer.py's raw figures for the same size and chunk).

    .venv/bin/python benchmarks/agent.py --files 2000 --large-size 1GiB --client-size 1GiB
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from broker.client.client import Credentials, MeshClient
from large_transfer import parse_size
from latency import free_port, start_broker, wait_ready

KEY = "TestKey"
DTS = (
    "<DTSControl><Version>1.0</Version><AddressType>DTS</AddressType><MessageType>Data</MessageType>"
    "<WorkflowId>TEST_WORKFLOW</WorkflowId><To_DTS>{to}</To_DTS><LocalId>{local}</LocalId>"
    "<AllowChunking>Y</AllowChunking></DTSControl>"
)


def agent(home: Path, url: str, mailbox: str, wait: int) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "agent.toml"
    config.write_text(
        f'url = "{url}"\nshared_key = "{KEY}"\npoll_period_minutes = 1\nwait_seconds = {wait}\nparallel = 16\n'
        f'[[mailbox]]\nid = "{mailbox}"\npassword = "password"\nroot = "{home / mailbox}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    log = (home / "agent.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "broker", "agent", "--config", str(config)], env=env, stdout=log, stderr=log
    )
    deadline = time.monotonic() + 60
    while not (home / mailbox / "TEMP").is_dir() or not (home / "agent.log").read_bytes().count(b"agent_started"):
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"agent for {mailbox} did not start: {(home / 'agent.log').read_text()}")
        time.sleep(0.05)
    return process


def drop(out: Path, stem: str, data: bytes, to: str) -> None:
    (out / f"{stem}.dat").write_bytes(data)
    (out / f"{stem}.ctl").write_text(DTS.format(to=to, local=stem))


def in_count(folder: Path) -> int:
    return sum(1 for name in os.listdir(folder) if name.endswith(".ctl"))


def vm_hwm_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024  # type: ignore[union-attr]


def inbox_requests(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    route = r'route="/messageexchange/\{mailbox_id\}/inbox"'
    pattern = r"mesh_http_request_duration_seconds_count\{[^}]*" + route + r"[^}]*\} ([0-9.e+]+)"
    return sum(float(v) for v in re.findall(pattern, text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--wait", type=int, default=20, help="the agents' long-poll wait (seconds)")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--large-size", type=parse_size, default=parse_size("5GiB"))
    parser.add_argument("--client-size", type=parse_size, default=parse_size("1GiB"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-agent-", dir=Path(__file__).parent / "results") as tmp:
        root = Path(tmp)
        port, metrics_port = free_port(), free_port()
        broker = start_broker(root / "broker", port, {"MESH_METRICS_PORT": str(metrics_port)})
        url = f"http://127.0.0.1:{port}"
        asyncio.run(wait_ready(url))
        a = agent(root / "a", url, "X26ABC1", args.wait)
        b = agent(root / "b", url, "X26ABC2", args.wait)
        out, inbox = root / "a" / "X26ABC1" / "OUT", root / "b" / "X26ABC2" / "IN"
        try:
            # latency
            took = []
            for n in range(args.samples):
                before = in_count(inbox)
                started = time.perf_counter()
                drop(out, f"lat-{n}", os.urandom(1024), "X26ABC2")
                while in_count(inbox) == before:
                    time.sleep(0.002)
                took.append(time.perf_counter() - started)
            took.sort()
            print(
                f"latency 1 KiB OUT->IN: median {statistics.median(took) * 1000:.0f} ms, "
                f"p95 {took[int(len(took) * 0.95) - 1] * 1000:.0f} ms, max {took[-1] * 1000:.0f} ms ({len(took)} files)"
            )

            # idle cost
            time.sleep(2.0)
            first = inbox_requests(f"http://127.0.0.1:{metrics_port}/metrics")
            time.sleep(args.idle_seconds)
            idle = inbox_requests(f"http://127.0.0.1:{metrics_port}/metrics") - first
            periods = args.idle_seconds / args.wait
            print(
                f"idle: {idle:.0f} inbox requests from 2 mailboxes in {args.idle_seconds:.0f} s with wait={args.wait}: "
                f"{idle / 2 / periods:.2f} per mailbox per wait period"
            )

            # throughput
            before = in_count(inbox)
            payloads = {f"many-{n:05d}": os.urandom(200) + n.to_bytes(4, "big") for n in range(args.files)}
            started = time.perf_counter()
            for stem, data in payloads.items():
                drop(out, stem, data, "X26ABC2")
            while in_count(inbox) < before + args.files:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            time.sleep(1.0)
            received = {}
            for control in inbox.glob("*.ctl"):
                local = re.search(r"<LocalId>(.*?)</LocalId>", control.read_text()).group(1)  # type: ignore[union-attr]
                if local.startswith("many-"):
                    assert local not in received, f"{local} delivered twice"
                    received[local] = control.with_suffix(".dat").read_bytes()
            assert received == payloads, "lost or changed files"
            print(
                f"throughput: {args.files} files in {elapsed:.1f} s = {args.files / elapsed:.0f} files/s, "
                "none lost or twice"
            )

            # large file, agents' peak RSS
            big = out / "big.dat"
            with big.open("wb") as f:
                block = os.urandom(1024 * 1024)
                for _ in range(args.large_size // len(block)):
                    f.write(block)
            started = time.perf_counter()
            (out / "big.ctl").write_text(DTS.format(to="X26ABC2", local="big"))
            while not any(True for c in inbox.glob("*.ctl") if "<LocalId>big<" in c.read_text()):
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            print(
                f"large: {args.large_size / 2**30:.2f} GiB OUT->IN in {elapsed:.1f} s; peak RSS sender agent "
                f"{vm_hwm_mib(a.pid):.0f} MiB, receiver agent {vm_hwm_mib(b.pid):.0f} MiB"
            )
            for path in inbox.glob("*.dat"):
                if path.stat().st_size == args.large_size:
                    path.unlink()
            (root / "a" / "X26ABC1" / "SENT" / "big.dat").unlink(missing_ok=True)
        finally:
            a.terminate()
            b.terminate()
            a.wait(30)
            b.wait(30)

        # client upload and download
        source = root / "client.bin"
        with source.open("wb") as f:
            block = os.urandom(1024 * 1024)
            for _ in range(args.client_size // len(block)):
                f.write(block)

        async def client() -> None:
            creds = Credentials(url, "X26ABC1", "password", KEY.encode())
            async with MeshClient(creds, chunk_size=100_000_000) as alice:
                await alice.handshake()
                started = time.perf_counter()
                message_id = await alice.send("X26ABC3", source, workflow_id="TEST_WORKFLOW")
                up = time.perf_counter() - started
            async with MeshClient(Credentials(url, "X26ABC3", "password", KEY.encode())) as carol:
                started = time.perf_counter()
                await carol.download(message_id, root / "client-got.bin")
                down = time.perf_counter() - started
            mib = args.client_size / 2**20
            print(
                f"client: {mib:.0f} MiB in 100 MB chunks: upload {mib / up:.0f} MiB/s, download {mib / down:.0f} MiB/s"
            )

        try:
            asyncio.run(client())
        finally:
            broker.terminate()
            broker.wait(30)


if __name__ == "__main__":
    main()
