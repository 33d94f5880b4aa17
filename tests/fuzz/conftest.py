"""The fuzz tier's broker: one app per module and backend behind aiohttp's test server, driven synchronously.

Hypothesis calls a test function once per example, and a function-scoped async fixture would build a broker for
each; so each module gets one broker on an event loop of its own (asyncio.Runner), and a test runs each
example's requests to completion on it. Requests go out as raw bytes (raw.py), since header bytes that are not
UTF-8 are the point of several tests and no HTTP client sends them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from broker.app import create_app
from broker.settings import Settings
from tests.api.helpers import MB1, MB2
from tests.conftest import BACKENDS, SHARED_KEY
from tests.fuzz.raw import Answer, raw_request
from tests.support import V2, Mesh

T = TypeVar("T")


@dataclass
class Broker:
    """A running broker with a sender (MB1), a recipient (MB2), a message of MB1's still uploading (chunk 1 of 3)
    and one delivered to MB2."""

    runner: asyncio.Runner
    client: TestClient
    sender: Mesh
    recipient: Mesh
    uploading_id: str
    delivered_id: str

    @property
    def app(self) -> web.Application:
        return self.client.app  # type: ignore[return-value]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        caller: Mesh | None = None,
    ) -> Answer:
        """One request as raw bytes; with a caller, a fresh token and v2 Accept go first (the given headers may
        override either, since a raw request may name a header twice and aiohttp keeps the first for .get())."""
        sent = list(headers)
        if caller is not None:
            names = {name.lower() for name, _ in headers}
            token = caller.tokens()
            if b"authorization" not in names:
                sent.append((b"Authorization", token.encode()))
            if b"accept" not in names:
                sent.append((b"Accept", V2.encode()))
        return self.run(raw_request(self.client.port, method, target, sent, body))  # type: ignore[arg-type]


async def _start(settings: Settings) -> tuple[TestClient, Mesh, Mesh, str, str]:
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    sender, recipient = Mesh(client, MB1), Mesh(client, MB2)
    uploading = await sender.send_ok(MB2, b"chunk one", extra={"mex-Chunk-Range": "1:3"})
    delivered = await sender.send_ok(MB2, b"delivered")
    return client, sender, recipient, uploading, delivered


async def _production(settings: Settings, admin_dsn: str, endpoint: str) -> Settings:
    from broker.devsupport import pg_server, s3_server

    dsn = await pg_server.clone_database(admin_dsn)
    bucket = await s3_server.create_bucket(endpoint)
    return settings.with_(
        database_url=dsn, blob_url=f"s3://{bucket}/blobs", s3_endpoint_url=endpoint, s3_region=s3_server.REGION
    )


@pytest.fixture(scope="module", params=BACKENDS)
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    settings = Settings(data_dir=data_dir, shared_key=SHARED_KEY, demo=True, sandbox_admin=True)
    with pytest.MonkeyPatch.context() as env, asyncio.Runner() as runner:
        if request.param == "postgres+s3":
            from broker.devsupport import s3_server

            env.delenv("AWS_PROFILE", raising=False)
            for name, value in s3_server.fake_credentials().items():
                env.setenv(name, value)
            admin_dsn = request.getfixturevalue("pg_admin_dsn")
            endpoint = request.getfixturevalue("s3_endpoint")
            settings = runner.run(_production(settings, admin_dsn, endpoint))
        client, sender, recipient, uploading, delivered = runner.run(_start(settings))
        try:
            yield Broker(runner, client, sender, recipient, uploading, delivered)
        finally:
            runner.run(client.close())
