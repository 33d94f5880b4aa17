"""Fixtures shared by every test tier: a clean environment and Settings built directly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.settings import Settings

SHARED_KEY = "TestKey"


@pytest.fixture(autouse=True)
def _no_mesh_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests build Settings directly; stray MESH_* variables from the shell must not leak in."""
    for name in list(os.environ):
        if name.startswith("MESH_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", shared_key=SHARED_KEY, demo=True, sandbox_admin=True)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session (started only by tests that ask for it)."""
    from tests import pg_server

    with pg_server.cluster() as admin_dsn:
        pg_server.prepare_template(admin_dsn)
        yield admin_dsn
