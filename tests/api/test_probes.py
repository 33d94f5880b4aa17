"""/readyz (database and blob store answering, not draining) and /livez (the process answers), on both backends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.app import create_app
from broker.backends import metadata_store
from broker.blobs.filesystem import FilesystemBlobStore
from broker.blobs.protocol import BlobError
from broker.keys import DRAIN, STORE
from broker.settings import Settings
from broker.store.protocol import StoreError
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB2
from tests.support import Mesh


async def test_readyz_probes_the_database_and_the_blob_store(client: TestClient) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.json() == {"status": "ready", "checks": {"database": "ok", "blob_store": "ok"}}


async def test_livez_depends_on_nothing(client: TestClient) -> None:
    response = await client.get("/livez")
    assert (response.status, await response.json()) == (200, {"status": "alive"})


async def test_draining_fails_readiness_and_closes_each_connection(client: TestClient, mb1: Mesh) -> None:
    assert client.app is not None
    assert (await client.get("/readyz")).headers.get("Connection") != "close"
    client.app[DRAIN].begin()
    response = await client.get("/readyz")
    assert response.status == 503
    assert await response.json() == {"status": "draining", "failed": ["draining"], "checks": {}}
    assert response.headers["Connection"] == "close"
    # Still alive (a liveness failure would get the node killed before its requests finish), and still serving
    # what reaches it on a connection it already has, each answer closing that connection.
    alive = await client.get("/livez")
    assert (alive.status, alive.headers["Connection"]) == (200, "close")
    sent = await mb1.send(MB2, b"sent while draining")
    assert (sent.status, sent.headers["Connection"]) == (202, "close")


class Failing:
    """Wraps a store, making the named method raise (or hang) as a dependency that stopped answering does."""

    def __init__(self, inner: Any, method: str, failure: BaseException | None):
        self._inner, self._method, self._failure = inner, method, failure

    def __getattr__(self, name: str) -> Any:
        if name != self._method:
            return getattr(self._inner, name)

        async def fail(*_args: object, **_kw: object) -> None:
            if self._failure is None:
                await asyncio.Event().wait()  # no answer, ever
            raise self._failure  # type: ignore[misc]

        return fail


async def ready(
    aiohttp_client: AiohttpClient, settings: Settings, *, store: Any = None, blobs: Any = None
) -> tuple[int, dict[str, Any]]:
    app: web.Application = create_app(settings, store=store, blobs=blobs)
    client = await aiohttp_client(app)
    response = await client.get("/readyz")
    return response.status, await response.json()


async def test_a_database_that_fails_is_named(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    store = Failing(metadata_store(settings), "get_message", StoreError("connection to db.internal:5432 refused"))
    status, body = await ready(aiohttp_client, settings, store=store)
    assert status == 503
    assert body == {
        "status": "unavailable",
        "failed": ["database"],
        "checks": {"database": "failed: StoreError", "blob_store": "ok"},
    }
    assert "db.internal" not in str(body)  # the public body names the failure, not the host


async def test_a_blob_store_that_does_not_answer_in_time_is_named(
    aiohttp_client: AiohttpClient, settings: Settings, tmp_path: Path
) -> None:
    blobs = Failing(FilesystemBlobStore(tmp_path / "blobs"), "size", None)
    status, body = await ready(aiohttp_client, settings.with_(readiness_timeout_seconds=0.05), blobs=blobs)
    assert status == 503
    assert body["failed"] == ["blob_store"]
    assert body["checks"] == {"database": "ok", "blob_store": "no answer within 0.05 s"}


async def test_both_failing_are_both_named(aiohttp_client: AiohttpClient, settings: Settings, tmp_path: Path) -> None:
    store = Failing(metadata_store(settings), "get_message", StoreError("down"))
    blobs = Failing(FilesystemBlobStore(tmp_path / "blobs"), "size", BlobError("S3 unreachable"))
    status, body = await ready(aiohttp_client, settings, store=store, blobs=blobs)
    assert (status, body["failed"]) == (503, ["database", "blob_store"])
    assert body["checks"]["blob_store"] == "failed: BlobError"


@pytest.mark.parametrize("path", ["/readyz", "/livez"])
async def test_probes_need_no_auth_even_with_a_bad_token(client: TestClient, path: str) -> None:
    assert (await client.get(path, headers={"Authorization": "NHSMESH junk"})).status == 200


async def test_the_probe_reads_the_real_store(client: TestClient) -> None:
    """Guards the Failing tests above against passing vacuously: the probe calls the method they replace."""
    assert client.app is not None
    store = client.app[STORE]
    calls = []
    original = store.get_message

    async def counted(message_id: str) -> Any:
        calls.append(message_id)
        return await original(message_id)

    store.get_message = counted  # type: ignore[method-assign]
    assert (await client.get("/readyz")).status == 200
    assert calls == ["00000000000000000000_READYZ"]
