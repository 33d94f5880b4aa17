"""What each of the broker's own features costs a message cycle: the broker measured with one feature taken out at a
time, alternated with the whole broker in one run (issue 18's ledger; `cpu_ab.py`'s client and measure).

    .venv/bin/python benchmarks/removal.py --tree . --rounds 5 --cycles 1500
    .venv/bin/python benchmarks/removal.py --tree . --remove token --remove metrics,token,gzip,pace

A removal is a what-if, never a build to run: each copy of the tree gets a `sitecustomize.py` (imported at the
broker's start, as it is on `PYTHONPATH`) that replaces one feature with nothing:
- `metrics`: every Prometheus counter, gauge and histogram update does nothing;
- `token`: the replay cache (every request's token recorded before it is served) answers "unused" at once;
- `gzip`: no download is gzipped on the fly (as for a client that does not ask for gzip);
- `pace`: a transfer's answer is not watched as it leaves (broker/pacing.py).
`benchmarks/test_removal.py` checks that each patch lands on what it names.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from cpu_ab import measure

#: The body of each removal, applied by the copy's sitecustomize.py.
PATCHES = {
    "metrics": """
import prometheus_client.metrics
import prometheus_client.values
prometheus_client.values.MutexValue.inc = lambda self, amount: None
prometheus_client.values.MutexValue.set = lambda self, value: None
prometheus_client.metrics.Histogram.observe = lambda self, amount, exemplar=None: None
""",
    "token": """
import broker.store.sql_store
import broker.store.postgres
async def _unused(self, token_key, expires_at):
    return True
broker.store.sql_store.SqlStore.use_token = _unused
broker.store.postgres.PostgresStore.use_token = _unused
""",
    "gzip": """
import broker.headers
broker.headers.accepts_gzip = lambda value: False
""",
    "pace": """
import broker.middlewares
broker.middlewares._paced = lambda request, handler: handler(request)
""",
}


def sitecustomize(removals: list[str]) -> str:
    """The sitecustomize.py that takes out the named features."""
    unknown = set(removals) - set(PATCHES)
    if unknown:
        raise ValueError(f"no such removal: {', '.join(sorted(unknown))} (known: {', '.join(PATCHES)})")
    return "# A what-if of benchmarks/removal.py: features taken out.\n" + "".join(PATCHES[r] for r in removals)


def copy_without(tree: Path, removals: list[str], into: Path) -> Path:
    """A copy of tree's broker package with the removals' sitecustomize.py beside it (none: the whole broker)."""
    copy = into / ("+".join(removals) or "whole")
    shutil.copytree(tree / "broker", copy / "broker", ignore=shutil.ignore_patterns("__pycache__"))
    if removals:
        (copy / "sitecustomize.py").write_text(sitecustomize(removals))
    return copy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", default=".", help="the broker's source tree (default: this checkout)")
    parser.add_argument(
        "--remove",
        action="append",
        help="features to take out together, comma-separated (repeatable; default: each alone, then all)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    tree = Path(args.tree).resolve()
    groups = [g.split(",") for g in args.remove] if args.remove else [[name] for name in PATCHES] + [list(PATCHES)]
    with tempfile.TemporaryDirectory(prefix="mesh-removal-") as scratch:
        variants = {"whole broker": copy_without(tree, [], Path(scratch))} | {
            "without " + "+".join(g): copy_without(tree, g, Path(scratch)) for g in groups
        }
        cpu: dict[str, list[float]] = {label: [] for label in variants}
        for round_number in range(1, args.rounds + 1):
            order = list(variants.items())
            for label, path in order if round_number % 2 else reversed(order):
                ms, loop_ms, rate = measure(path, args.cycles, args.concurrency, args.warmup)
                cpu[label].append(ms)
                print(f"round {round_number} {label}: {ms:.3f} ms CPU per cycle ({loop_ms:.3f} loop), {rate:.0f}/s")
    whole = statistics.mean(cpu["whole broker"])
    print()
    print("| Broker | CPU ms a cycle | Change | Spread |")
    print("|---|---|---|---|")
    for label, values in cpu.items():
        mean = statistics.mean(values)
        change = f"{100 * (mean / whole - 1):+.1f} %" if label != "whole broker" else ""
        print(f"| {label} | {mean:.3f} | {change} | {min(values):.3f}-{max(values):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
