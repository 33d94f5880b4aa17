"""benchmarks/removal.py's what-ifs take out what they name, in a broker started from the copy (its
sitecustomize.py is imported at start-up): a patch that missed would measure the whole broker under a false label.

Collected by the project's pytest run (testpaths), like benchmarks/test_floor.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from removal import PATCHES, copy_without, sitecustomize

ROOT = Path(__file__).resolve().parents[1]
#: Prints which features are out, as seen by a process started from a copy.
PROBE = """
import json, prometheus_client.metrics, broker.headers, broker.middlewares
from broker.store.sql_store import SqlStore
from broker.store.postgres import PostgresStore
print(json.dumps({
    "metrics": prometheus_client.metrics.Histogram.observe.__name__ == "<lambda>",
    "token": SqlStore.use_token.__name__ == PostgresStore.use_token.__name__ == "_unused",
    "gzip": not broker.headers.accepts_gzip("gzip"),
    "pace": broker.middlewares._paced.__name__ == "<lambda>",
}))
"""


def removed_in(copy: Path) -> dict[str, bool]:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=copy, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize("removal", sorted(PATCHES))
def test_each_removal_takes_out_what_it_names_and_nothing_else(removal: str, tmp_path: Path) -> None:
    copy = copy_without(ROOT, [removal], tmp_path)
    assert removed_in(copy) == {name: name == removal for name in PATCHES}


def test_all_together_and_the_whole_broker(tmp_path: Path) -> None:
    assert removed_in(copy_without(ROOT, list(PATCHES), tmp_path)) == dict.fromkeys(PATCHES, True)
    assert removed_in(copy_without(ROOT, [], tmp_path)) == dict.fromkeys(PATCHES, False)


def test_an_unknown_removal_is_refused() -> None:
    with pytest.raises(ValueError, match="no such removal: tracing"):
        sitecustomize(["tracing"])
