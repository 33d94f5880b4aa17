"""A failing dependency answers 503 with Retry-After and a MESH error body, v1 and v2, never a 500; a message whose
bytes could not be stored is not there. (tests/faults plays the real outages against broker processes.)"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, BinaryIO

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.app import create_app
from broker.backends import metadata_store
from broker.blobs.filesystem import FilesystemBlobStore
from broker.blobs.protocol import BlobError, BlobNotFound, BlobStoreFull, StoredBlob
from broker.errors import RETRY_AFTER_SECONDS
from broker.keys import MESSAGING
from broker.settings import Settings
from broker.store.protocol import StoreError, StoreUnavailable
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB1, MB2, body_of, inbox_ids, v1_error, v2_error
from tests.support import V1, V2, Mesh

LARGE = b"past the inline limit " * 5_000


class FailingBlobs:
    """The filesystem store, whose puts raise `failure` while it is set."""

    def __init__(self, inner: FilesystemBlobStore):
        self.inner = inner
        self.failure: BlobError | None = None

    @property
    def transfer_buffer_bytes(self) -> int:
        return self.inner.transfer_buffer_bytes

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def open_file(self, key: str) -> BinaryIO | None:
        return await self.inner.open_file(key)

    async def put(self, key: str, data: AsyncIterable[bytes]) -> int:
        if self.failure is not None:
            async for _ in data:
                pass
            raise self.failure
        return await self.inner.put(key, data)

    def get(self, key: str, *, piece_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        return self.inner.get(key, piece_size=piece_size)

    async def size(self, key: str) -> int:
        return await self.inner.size(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    def scan(self, *, page_size: int = 1000) -> AsyncIterator[list[StoredBlob]]:
        return self.inner.scan(page_size=page_size)


@pytest.fixture
def blobs(settings: Settings) -> FailingBlobs:
    return FailingBlobs(FilesystemBlobStore(settings.blob_dir))


@pytest.fixture
def app(settings: Settings, blobs: FailingBlobs) -> web.Application:
    return create_app(settings, blobs=blobs)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app: web.Application) -> TestClient:
    return await aiohttp_client(app)


class FailingStore:
    """The configured store, whose list_inbox raises `failure` while it is set."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.failure: StoreError | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list_inbox(self, *args: Any, **kwargs: Any) -> Any:
        if self.failure is not None:
            raise self.failure
        return await self.inner.list_inbox(*args, **kwargs)


@pytest.mark.parametrize("accept", [V1, V2])
async def test_a_store_failure_is_503_with_retry_after(
    client: TestClient, app: web.Application, monkeypatch: pytest.MonkeyPatch, accept: str
) -> None:
    async def down(*_args: object, **_kwargs: object) -> None:
        raise StoreUnavailable("postgresql unavailable: connection refused")

    monkeypatch.setattr(app[MESSAGING], "inbox", down)
    mesh = Mesh(client, MB2, accept=accept)
    response = await client.get(f"{mesh.base}/inbox", headers=mesh.headers())
    assert response.status == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    unpack = v1_error if accept == V1 else v2_error
    event, code, description = unpack(await body_of(response))
    assert (event, code) == ("", "StoreUnavailable")
    assert description == "The message store is unavailable; try again later"


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (BlobError("S3 PutObject failed: SlowDown"), "BlobStoreUnavailable"),
        (BlobStoreFull("ENOSPC"), "InsufficientStorage"),
    ],
)
async def test_a_blob_store_failure_on_send_is_503_and_stores_nothing(
    client: TestClient, blobs: FailingBlobs, failure: BlobError, code: str
) -> None:
    sender, recipient = Mesh(client, MB1), Mesh(client, MB2)
    blobs.failure = failure
    response = await sender.send(MB2, LARGE)
    assert response.status == 503, await response.text()
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert v2_error(await body_of(response))[1] == code
    small = await sender.send_ok(MB2, b"small: kept in its row, never in the blob store")

    blobs.failure = None
    assert await inbox_ids(recipient) == [small]
    retried = await sender.send_ok(MB2, LARGE)
    assert await inbox_ids(recipient) == [small, retried]


async def test_a_blob_missing_under_its_row_is_still_an_internal_error(
    client: TestClient, app: web.Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an outage to wait out: a row that points at no bytes is a fault of the broker's."""

    async def lost(*_args: object, **_kwargs: object) -> None:
        raise BlobNotFound("no blob at day/key")

    monkeypatch.setattr(app[MESSAGING], "inbox", lost)
    mesh = Mesh(client, MB2)
    response = await client.get(f"{mesh.base}/inbox", headers=mesh.headers())
    assert response.status == 500
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    "failure",
    [
        StoreError('postgresql error: column "recipent" does not exist'),
        StoreError("sqlite integrity error: NOT NULL constraint failed: messages.workflow_id"),
    ],
)
async def test_a_store_error_that_is_no_outage_is_a_500_with_its_traceback_logged(
    aiohttp_client: AiohttpClient,
    settings: Settings,
    blobs: FailingBlobs,
    caplog: pytest.LogCaptureFixture,
    failure: StoreError,
) -> None:
    """A wrong statement or an unexpected constraint is a bug: telling the client to retry would hide it."""
    store = FailingStore(metadata_store(settings))
    client = await aiohttp_client(create_app(settings, store=store, blobs=blobs))
    mesh = Mesh(client, MB2)
    assert (await client.get(f"{mesh.base}/inbox", headers=mesh.headers())).status == 200

    store.failure = failure
    with caplog.at_level(logging.ERROR, logger="broker.http"):
        response = await client.get(f"{mesh.base}/inbox", headers=mesh.headers())
    assert response.status == 500
    assert "Retry-After" not in response.headers
    body = await body_of(response)
    assert body["message"].startswith("An internal error occurred")
    assert body["internal_id"]
    [logged] = [r for r in caplog.records if getattr(r, "action", None) == "request_failed"]
    assert logged.exc_info is not None and logged.exc_info[1] is failure

    store.failure = StoreUnavailable("sqlite unavailable: database is locked")
    assert (await client.get(f"{mesh.base}/inbox", headers=mesh.headers())).status == 503
