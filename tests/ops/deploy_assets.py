"""Where deploy/ lives, and the tools its tests run (from .venv's bin folder or PATH, installed by make test)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MESH_NAME = re.compile(r"\bMESH_[A-Z0-9_]+\b")


def tool(name: str, install: str) -> str:
    """The program beside this interpreter (a console script of the dev extra) or on PATH; fails with how to get it."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    # /usr/sbin (Debian's haproxy) is on root's PATH but not everyone's.
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        pytest.fail(f"{name} is not installed: {install} (make test does this)")
    return found


def run(command: list[str], *, cwd: Path | None = None) -> str:
    """Run to completion; fail the test with its output unless it exits 0. Returns stdout and stderr together."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=cwd)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{output}"
    return output


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an environment file (systemd's EnvironmentFile, kustomize's envs), comments skipped."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values
