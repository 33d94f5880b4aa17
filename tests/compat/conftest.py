"""One HTTPS broker subprocess (demo data, sandbox admin) for the official-client compatibility suite."""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import trustme
from mesh_client import MeshClient

from tests.conftest import BACKENDS, production_environment
from tests.integration.broker_process import SHARED_KEY, BrokerProcess, server_certificates


@dataclass(frozen=True)
class LiveBroker:
    url: str
    ca: str


@pytest.fixture(scope="session", params=BACKENDS)
def live_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBroker]:
    root = tmp_path_factory.mktemp("compat")
    certificates = server_certificates(trustme.CA(), root / "tls")
    env = {"MESH_SHARED_KEY": SHARED_KEY, "MESH_DEMO": "on", "MESH_SANDBOX_ADMIN": "on"}
    if request.param == "postgres+s3":
        env.update(production_environment(request))
    broker = BrokerProcess(data_dir=root / "data", env=env, certificates=certificates)
    broker.start()
    try:
        yield LiveBroker(broker.url, str(certificates.ca))
    finally:
        broker.stop()


@pytest.fixture(autouse=True)
def _reset(live_broker: LiveBroker) -> None:
    """Every test starts with empty inboxes and outboxes (mailboxes and workflows stay), as in mesh-client's suite."""
    context = ssl.create_default_context(cafile=live_broker.ca)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(f"{live_broker.url}/admin/reset", method="DELETE")
    with opener.open(request, timeout=10) as response:
        assert response.status == 200


MakeClient = Callable[..., MeshClient]


@pytest.fixture
def mesh(live_broker: LiveBroker) -> Iterator[MakeClient]:
    """Build MeshClients against the live broker; all are closed after the test."""
    clients: list[MeshClient] = []

    def make(mailbox: str, password: str = "password", **kwargs: object) -> MeshClient:
        kwargs.setdefault("max_chunk_size", 1024 * 1024)
        client = MeshClient(
            live_broker.url,
            mailbox,
            password,
            shared_key=SHARED_KEY.encode(),
            verify=live_broker.ca,
            **kwargs,  # type: ignore[arg-type]
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def alice(mesh: MakeClient) -> MeshClient:
    return mesh("X26ABC1")


@pytest.fixture
def bob(mesh: MakeClient) -> MeshClient:
    return mesh("X26ABC2")
