"""The backends the contract suites run against: one factory per implementation, picked by fixture param.

To run the suites on another backend, add a factory to STORES or BLOBS (it may call pytest.skip when its
service is not configured); no test changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from broker.blobs.filesystem import FilesystemBlobStore
from broker.blobs.protocol import BlobStore
from broker.blobs.s3 import S3BlobStore
from broker.devsupport import pg_server, s3_server
from broker.store.postgres import PostgresStore
from broker.store.protocol import MetadataStore
from broker.store.sqlite import SqliteStore

StoreFactory = Callable[[Path, Any], contextlib.AbstractAsyncContextManager[MetadataStore]]
BlobFactory = Callable[[Path, Any], contextlib.AbstractAsyncContextManager[BlobStore]]


@contextlib.asynccontextmanager
async def _sqlite(tmp_path: Path, request: Any) -> AsyncIterator[MetadataStore]:
    store = SqliteStore(tmp_path / "meta" / "mesh.sqlite3")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _filesystem(tmp_path: Path, request: Any) -> AsyncIterator[BlobStore]:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    await blobs.open()
    try:
        yield blobs
    finally:
        await blobs.close()


@contextlib.asynccontextmanager
async def _postgres(tmp_path: Path, request: Any) -> AsyncIterator[MetadataStore]:
    dsn = await pg_server.clone_database(request.getfixturevalue("pg_admin_dsn"))
    store = PostgresStore(dsn, min_size=1, max_size=4)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


STORES: dict[str, StoreFactory] = {"sqlite": _sqlite, "postgres": _postgres}


@contextlib.asynccontextmanager
async def _s3(tmp_path: Path, request: Any) -> AsyncIterator[BlobStore]:
    endpoint = request.getfixturevalue("s3_endpoint")
    blobs = S3BlobStore(
        await s3_server.create_bucket(endpoint),
        "contract",
        endpoint_url=endpoint,
        region=s3_server.REGION,
        access_key=s3_server.ACCESS_KEY,
        secret_key=s3_server.SECRET_KEY,
    )
    await blobs.open()
    try:
        yield blobs
    finally:
        await blobs.close()


BLOBS: dict[str, BlobFactory] = {"filesystem": _filesystem, "s3": _s3}


@pytest.fixture(params=sorted(STORES))
async def store(request: Any, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    async with STORES[request.param](tmp_path, request) as opened:
        yield opened


@pytest.fixture(params=sorted(BLOBS))
async def blobs(request: Any, tmp_path: Path) -> AsyncIterator[BlobStore]:
    async with BLOBS[request.param](tmp_path, request) as opened:
        yield opened
