"""Three broker nodes on one PostgreSQL and one S3 endpoint: any node serves any request."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from broker.auth import make_token
from tests.conftest import production_environment
from tests.integration.broker_process import SHARED_KEY, BrokerProcess
from tests.integration.conftest import MakeClient
from tests.support import CLIENT_HEADERS

V2 = "application/vnd.mesh.v2+json"


@pytest.fixture
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    env = {"MESH_SHARED_KEY": SHARED_KEY, "MESH_DEMO": "on", **production_environment(request)}
    started: list[BrokerProcess] = []
    try:
        for number in range(3):
            started.append(BrokerProcess(data_dir=tmp_path / f"node{number + 1}", env=env).start())
        yield started
    finally:
        for node in started:
            node.stop()


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # the machine's proxy and CA variables must not reach 127.0.0.1
    return session


def test_send_on_one_node_list_download_on_another_acknowledge_on_a_third(
    nodes: list[BrokerProcess], client_for: MakeClient
) -> None:
    node1, node2, node3 = nodes
    alice = client_for(node1, "X26ABC1")
    bob_on_2 = client_for(node2, "X26ABC2")
    bob_on_3 = client_for(node3, "X26ABC2")

    payload = b"across the cluster " * 200
    message_id = alice.send_message("X26ABC2", payload, workflow_id="TEST_WORKFLOW", max_chunk_size=1000)

    assert bob_on_2.list_messages() == [message_id]
    message = bob_on_2.retrieve_message(message_id)
    assert message.read() == payload
    assert message.mex_header("chunk-range") == "1:4"
    bob_on_3.acknowledge_message(message_id)

    assert bob_on_2.list_messages() == []
    assert client_for(node3, "X26ABC1").track_message(message_id)["status"] == "acknowledged"


def test_chunks_of_one_message_arrive_at_different_nodes(nodes: list[BrokerProcess], client_for: MakeClient) -> None:
    senders = [client_for(node, "X26ABC1") for node in nodes]
    parts = [b"first-", b"second-", b"third"]
    first = senders[0].send_chunk("X26ABC2", parts[0], 1, 3, workflow_id="TEST_WORKFLOW")
    message_id = first.json()["message_id"]
    assert senders[1].send_chunk("X26ABC2", parts[1], 2, 3, message_id=message_id).status_code == 202
    bob = client_for(nodes[2], "X26ABC2")
    assert bob.list_messages() == []  # 2 of 3 chunks: not yet delivered
    assert senders[2].send_chunk("X26ABC2", parts[2], 3, 3, message_id=message_id).status_code == 202

    assert bob.retrieve_message(message_id).read() == b"".join(parts)


def test_a_token_used_on_one_node_is_refused_on_another(nodes: list[BrokerProcess]) -> None:
    token = make_token(
        SHARED_KEY.encode(), "X26ABC1", "password", nonce=str(uuid.uuid4()), nonce_count=0, at=datetime.now(UTC)
    )
    headers = {"Authorization": token, "Accept": V2, **CLIENT_HEADERS}
    with _session() as session:
        first = session.post(f"{nodes[0].url}/messageexchange/X26ABC1", headers=headers, timeout=10)
        replay = session.post(f"{nodes[1].url}/messageexchange/X26ABC1", headers=headers, timeout=10)
    assert first.status_code == 200
    assert replay.status_code == 403


def test_continuation_tokens_work_on_any_node(nodes: list[BrokerProcess], client_for: MakeClient) -> None:
    alice = client_for(nodes[0], "X26ABC1")
    sent = [alice.send_message("X26ABC2", f"m{i}".encode(), workflow_id="TEST_WORKFLOW") for i in range(15)]
    tokens = iter(range(1000))

    def get(node: BrokerProcess, path: str) -> dict[str, object]:
        token = make_token(
            SHARED_KEY.encode(), "X26ABC2", "password", nonce="paging", nonce_count=next(tokens), at=datetime.now(UTC)
        )
        with _session() as session:
            response = session.get(f"{node.url}{path}", headers={"Authorization": token, "Accept": V2}, timeout=10)
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    page1 = get(nodes[0], "/messageexchange/X26ABC2/inbox?max_results=10")
    next_link = page1["links"]["next"]  # type: ignore[index]
    page2 = get(nodes[2], next_link)
    assert page1["messages"] + page2["messages"] == sent  # type: ignore[operator]
    assert "next" not in page2["links"]  # type: ignore[operator]


def test_two_nodes_racing_to_acknowledge_both_succeed_once(nodes: list[BrokerProcess], client_for: MakeClient) -> None:
    message_id = client_for(nodes[0], "X26ABC1").send_message("X26ABC2", b"race", workflow_id="TEST_WORKFLOW")
    receivers = [client_for(node, "X26ABC2") for node in nodes[1:]]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda client: client.acknowledge_message(message_id), receivers))
    assert results == [None, None]  # both 200: the loser answers as a repeat acknowledge does
    tracking = client_for(nodes[0], "X26ABC1").track_message(message_id)
    assert tracking["status"] == "acknowledged"
