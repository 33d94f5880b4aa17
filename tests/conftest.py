"""Fixtures shared by every test tier: a clean environment and Settings built directly."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from broker.settings import Settings

SHARED_KEY = "TestKey"
T = TypeVar("T")


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
    from broker.devsupport import pg_server

    with pg_server.cluster() as admin_dsn:
        pg_server.prepare_template(admin_dsn)
        yield admin_dsn


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 for the session (started only by tests that ask for it)."""
    from broker.devsupport import s3_server

    with s3_server.moto_server() as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _one_botocore_session() -> Iterator[None]:
    """Every S3 client this test process builds comes from one aiobotocore session.

    The broker builds its S3 client from a fresh session, once per process in production. The suite builds a broker
    per test, and a fresh session parses botocore's S3 model and endpoint rules again: 0.2-0.6 s of CPU for each
    of several hundred PostgreSQL + S3 tests. A shared session keeps what it parsed (a client then takes about 20 ms);
    credentials stay per client (the fake ones of aws_credentials)."""
    try:
        import aiobotocore.session
    except ImportError:  # the s3 extra is not installed: no test here builds an S3 client
        yield
        return
    shared = aiobotocore.session.get_session()
    original = aiobotocore.session.get_session
    aiobotocore.session.get_session = lambda env_vars=None: shared  # type: ignore[assignment]
    try:
        yield
    finally:
        aiobotocore.session.get_session = original


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials for botocore's chain; a developer's real profile must never be used."""
    from broker.devsupport import s3_server

    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name, value in s3_server.fake_credentials().items():
        monkeypatch.setenv(name, value)


#: The backend pairs the API and compatibility tiers run on: the embedded default and production.
BACKENDS = ("embedded", "postgres+s3")


async def production_settings(base: Settings, request: pytest.FixtureRequest) -> Settings:
    """base pointed at a fresh PostgreSQL database and a fresh S3 bucket (moto)."""
    from broker.devsupport import pg_server, s3_server

    request.getfixturevalue("aws_credentials")
    admin_dsn = request.getfixturevalue("pg_admin_dsn")
    dsn = await pg_server.clone_database(admin_dsn)
    # Dropped when the fixture that asked for it ends (its app closed by then), so a worker's cluster, which lives in
    # memory (pg_server.scratch_folder), holds the databases of the tests running now, not of every test it ran.
    request.addfinalizer(lambda: _on_own_loop(pg_server.drop_database(admin_dsn, dsn)))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = await s3_server.create_bucket(endpoint)
    return base.with_(
        database_url=dsn, blob_url=f"s3://{bucket}/blobs", s3_endpoint_url=endpoint, s3_region=s3_server.REGION
    )


def _on_own_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end from synchronous code that may itself be inside a running event loop."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


def production_environment(request: pytest.FixtureRequest) -> dict[str, str]:
    """MESH_* and AWS variables that point a broker subprocess at a fresh database and bucket.

    Synchronous (for session fixtures and subprocess brokers); the async set-up runs on its own thread.
    """
    from broker.devsupport import pg_server, s3_server

    admin_dsn = request.getfixturevalue("pg_admin_dsn")
    endpoint = request.getfixturevalue("s3_endpoint")
    dsn = _on_own_loop(pg_server.clone_database(admin_dsn))
    bucket = _on_own_loop(s3_server.create_bucket(endpoint))
    return {
        "MESH_DATABASE_URL": dsn,
        "MESH_BLOB_URL": f"s3://{bucket}/blobs",
        "MESH_S3_ENDPOINT_URL": endpoint,
        "MESH_S3_REGION": s3_server.REGION,
        **s3_server.fake_credentials(),
    }
