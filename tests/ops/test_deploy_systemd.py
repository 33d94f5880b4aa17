"""deploy/systemd: `systemd-analyze verify` accepts both units (in a scratch root where the broker's path exists),
each runs as a dedicated user under the hardening options, and the broker's stop timeout outlasts its drain."""

from __future__ import annotations

import configparser
import os
import shutil
from pathlib import Path

import pytest

from tests.ops.deploy_assets import DEPLOY, env_file, run, tool

SYSTEMD = DEPLOY / "systemd"
UNITS = ("mesh-broker.service", "mesh-broker-agent.service")
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
}


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string((SYSTEMD / name).read_text())
    return parser


def verify(root: Path, units: list[Path]) -> list[str]:
    """systemd-analyze verify's complaints about these units (its noise about the host's own units dropped)."""
    analyze = tool("systemd-analyze", "apt-get install systemd")
    output = run([analyze, "verify", f"--root={root}", *map(str, units)])
    return [line for line in output.splitlines() if any(u.name in line for u in units)]


@pytest.fixture
def scratch_root(tmp_path: Path) -> Path:
    """A root holding the units, the host's unit library and an executable at the units' ExecStart path."""
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    binary = root / "opt" / "mesh-broker" / "bin" / "mesh-broker"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    library = root / "usr" / "lib" / "systemd"
    library.mkdir(parents=True)
    os.symlink("/usr/lib/systemd/system", library / "system")
    for name in UNITS:
        shutil.copy(SYSTEMD / name, root / "etc" / "systemd" / "system" / name)
    return root


def test_systemd_accepts_the_units(scratch_root: Path) -> None:
    units = [scratch_root / "etc" / "systemd" / "system" / name for name in UNITS]
    assert verify(scratch_root, units) == []


def test_verify_reports_a_broken_unit(scratch_root: Path) -> None:
    broken = scratch_root / "etc" / "systemd" / "system" / "mesh-broker.service"
    broken.write_text(broken.read_text().replace("ProtectSystem=strict", "ProtectSystem=stricter"))
    assert verify(scratch_root, [broken])


@pytest.mark.parametrize("name", UNITS)
def test_hardening_and_a_dedicated_user(name: str) -> None:
    service = unit(name)["Service"]
    assert service["User"] not in ("", "root") and service["User"] == service["Group"]
    for option, value in HARDENING.items():
        assert service.get(option) == value, f"{name}: {option}={service.get(option)!r}, want {value!r}"
    assert service["ExecStart"].startswith("/opt/mesh-broker/bin/mesh-broker ")


def test_the_broker_unit_serves_with_its_environment_file_and_outlasts_the_drain() -> None:
    service = unit("mesh-broker.service")["Service"]
    assert service["ExecStart"].endswith(" serve")
    assert service["EnvironmentFile"] == "/etc/mesh-broker/mesh-broker.env"
    environment = env_file(SYSTEMD / "mesh-broker.env")
    assert environment["MESH_DATA_DIR"] == f"/var/lib/{service['StateDirectory']}"
    assert float(service["TimeoutStopSec"]) > float(environment["MESH_SHUTDOWN_GRACE_SECONDS"])
    assert service["KillSignal"] == "SIGTERM"


def test_the_agent_unit_runs_the_folder_agent() -> None:
    service = unit("mesh-broker-agent.service")["Service"]
    assert " agent --config " in service["ExecStart"]
