"""Fixtures for broker processes driven end to end: a MeshClient factory that closes what it opens."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from mesh_client import MeshClient

from tests.integration.broker_process import SHARED_KEY, BrokerProcess

MakeClient = Callable[..., MeshClient]


@pytest.fixture
def client_for() -> Iterator[MakeClient]:
    """client_for(broker, mailbox, password="password", **MeshClient kwargs); TLS verified by the broker's CA."""
    clients: list[MeshClient] = []

    def make(broker: BrokerProcess, mailbox: str, password: str = "password", **kwargs: object) -> MeshClient:
        if broker.ca is not None:
            kwargs.setdefault("verify", broker.ca)
        kwargs.setdefault("max_chunk_size", 1024 * 1024)
        client = MeshClient(broker.url, mailbox, password, shared_key=SHARED_KEY.encode(), **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
