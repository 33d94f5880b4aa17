"""Fixtures for the fault tests: a real broker process on either backend pair, and callers for its mailboxes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, production_environment
from tests.integration.broker_process import SHARED_KEY, BrokerProcess

ALICE, BOB = "X26ABC1", "X26ABC2"


def broker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"MESH_SHARED_KEY": SHARED_KEY, "MESH_DEMO": "on", **(extra or {})}


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Nothing for the embedded pair (SQLite and files under the data dir); a fresh database and bucket else."""
    return {} if request.param == "embedded" else production_environment(request)


@pytest.fixture
def broker(tmp_path: Path, backend_env: dict[str, str]) -> Iterator[BrokerProcess]:
    process = BrokerProcess(data_dir=tmp_path / "data", env=broker_env(backend_env))
    with process:
        yield process
