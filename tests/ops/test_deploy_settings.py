"""Every MESH_* name anywhere in deploy/ is a setting of broker/settings.py, and every environment deploy/ sets
(compose, the Kubernetes overlays, the systemd environment file) is one a node accepts."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from broker.settings import Settings
from tests.ops.deploy_assets import DEPLOY, MESH_NAME, env_file

SETTINGS = {f"MESH_{field.name.upper()}" for field in fields(Settings)}
#: ${NAME:-default} and ${NAME:?message} in compose: the value a fresh checkout gets.
INTERPOLATION = re.compile(r"\$\{[A-Z0-9_]+(?::?-([^}]*))?(?::?\?[^}]*)?\}")


def deploy_files() -> list[Path]:
    return [path for path in sorted(DEPLOY.rglob("*")) if path.is_file() and path.suffix not in (".lock",)]


def test_every_mesh_name_in_deploy_is_a_setting() -> None:
    used: dict[str, set[str]] = {}
    for path in deploy_files():
        for name in MESH_NAME.findall(path.read_text(errors="replace")):
            used.setdefault(name, set()).add(str(path.relative_to(DEPLOY)))
    assert len(used) >= 10, f"expected deploy/ to set many settings, found {sorted(used)}"
    unknown = {name: sorted(where) for name, where in used.items() if name not in SETTINGS}
    assert not unknown, f"not fields of Settings (broker/settings.py): {unknown}"


def compose_environment() -> dict[str, str]:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    raw = compose["services"]["broker-1"]["environment"]
    return {name: INTERPOLATION.sub(lambda m: m.group(1) or "", str(value)) for name, value in raw.items()}


def overlay_environment(overlay: str) -> dict[str, str]:
    root = DEPLOY / "k8s"
    base = yaml.safe_load((root / "base" / "kustomization.yaml").read_text())
    values = dict(line.split("=", 1) for line in base["configMapGenerator"][0]["literals"])
    values.update(env_file(root / "overlays" / overlay / "settings.env"))
    values.update(env_file(root / "overlays" / overlay / "secrets.env.example"))
    return values


ENVIRONMENTS = {
    "compose": compose_environment,
    "k8s small": lambda: overlay_environment("small"),
    "k8s production": lambda: overlay_environment("production"),
    "systemd": lambda: env_file(DEPLOY / "systemd" / "mesh-broker.env"),
}


@pytest.mark.parametrize("where", ENVIRONMENTS)
def test_each_environment_is_accepted(where: str) -> None:
    environment = ENVIRONMENTS[where]()
    assert any(name.startswith("MESH_") for name in environment)
    # The secrets are left empty in the committed files: a node given them only as placeholders must still parse
    # everything else; the shared key is the one an operator has to supply.
    settings = Settings.from_env({**environment, "MESH_SHARED_KEY": "k"})
    assert settings.shutdown_grace_seconds > 0
