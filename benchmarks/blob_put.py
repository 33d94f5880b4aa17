"""The file blob store's write path alone: 1 GiB put as 100 MB blobs (one per MESH chunk) from an in-memory source,
fsync'd as the broker does, beside the data disk's own fsync'd write speed measured in the same run.

large_transfer.py measures the whole broker, where HTTP parsing and SHA-256 share the CPU with the client; on a busy
2-core machine that hides what the store's write path costs. Here the bytes come from memory, either as fast as
the store takes them (--rate 0) or paced like a network link (--rate MiB/s): a store that receives and then flushes
takes 1/rate + 1/disk seconds a MiB, one that overlaps the two takes max(1/rate, 1/disk).

Each variant runs in its own process with PYTHONPATH=PATH (a `git worktree add /tmp/before HEAD` checkout, say), and
variants alternate (A, B, A, B) --rounds times under the same disk weather; the report gives each one's median.

    .venv/bin/python benchmarks/blob_put.py --variant before=/tmp/before --variant after=. --rounds 3
    .venv/bin/python benchmarks/blob_put.py --variant before=/tmp/before --variant after=. --rate 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from large_transfer import MiB, disk_limits, parse_size, parse_variant

#: Pieces as the request body hands them to the store (broker/pacing.py BODY_PIECE).
PIECE = 256 * 1024


async def paced(total: int, rate: float) -> AsyncIterator[bytes]:
    """total bytes in fresh PIECE-sized objects (as a socket gives them), at rate MiB/s if rate > 0."""
    pool = os.urandom(PIECE + 4096)
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    while sent < total:
        take = min(PIECE, total - sent)
        offset = sent % 4096
        yield pool[offset : offset + take]
        sent += take
        if rate:
            ahead = started + sent / (rate * MiB) - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
            else:
                await asyncio.sleep(0)


async def child(folder: Path, size: int, blob: int, rate: float) -> dict[str, float]:
    from broker.blobs.filesystem import FilesystemBlobStore

    store = FilesystemBlobStore(folder)
    await store.open()
    try:
        cpu, started = time.process_time(), time.perf_counter()
        done, number = 0, 0
        while done < size:
            length = min(blob, size - done)
            number += 1
            assert await store.put(f"20261201/bench.{number}.ab12", paced(length, rate)) == length
            done += length
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "mibs": size / MiB / seconds, "cpu_s": time.process_time() - cpu}
    finally:
        await store.close()


def run_variant(path: str, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": path}
    command = [
        sys.executable,
        __file__,
        "--child",
        str(folder),
        "--size",
        str(args.size),
        "--blob",
        str(args.blob),
        "--rate",
        str(args.rate),
    ]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"), help="bytes put per round (1GiB)")
    parser.add_argument("--blob", type=parse_size, default=parse_size("100MB"), help="bytes per blob (100MB)")
    parser.add_argument("--rate", type=float, default=0.0, help="source pace in MiB/s; 0: as fast as possible")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data-parent", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a variant's round may take")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.size, args.blob, args.rate))))
        return 0
    variants = [(label, path) for label, path, _ in args.variant] or [("here", str(Path(__file__).parent.parent))]
    writes: list[float] = []
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in variants}
    folder = Path(tempfile.mkdtemp(prefix="mesh-bench-put-", dir=args.data_parent))
    try:
        for _ in range(args.rounds):
            writes.append(disk_limits(folder, args.size)[0])
            for label, path in variants:
                blobs = folder / label
                results[label].append(run_variant(path, blobs, args))
                shutil.rmtree(blobs, ignore_errors=True)
        writes.append(disk_limits(folder, args.size)[0])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    disk = statistics.median(writes)
    pace = f"{args.rate:g} MiB/s" if args.rate else "as fast as the store takes it"
    print(
        f"data disk ({args.data_parent}): fsync'd write {' / '.join(f'{w:.0f}' for w in writes)} MiB/s "
        f"(median {disk:.0f}); {args.size // MiB} MiB per round in {args.blob / MiB:.0f} MiB blobs, source {pace}"
    )
    base = statistics.median(r["mibs"] for r in results[variants[0][0]])
    for label, runs in results.items():
        mibs = statistics.median(r["mibs"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        each = ", ".join(f"{r['mibs']:.0f}" for r in runs)
        print(
            f"  {label}: put {mibs:.0f} MiB/s median ({each}), {100 * mibs / disk:.0f}% of disk, x{mibs / base:.2f}; "
            f"process CPU {cpu:.2f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
