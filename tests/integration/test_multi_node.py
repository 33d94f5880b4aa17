"""Three broker nodes on one PostgreSQL and one S3 endpoint: any node serves any request."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from broker.auth import make_token
from tests.conftest import production_environment
from tests.integration.broker_process import SHARED_KEY, BrokerProcess, start_together
from tests.integration.conftest import MakeClient
from tests.support import CLIENT_HEADERS

V2 = "application/vnd.mesh.v2+json"


@pytest.fixture
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    # Long polls wait without polling, so only LISTEN/NOTIFY can wake one early (the long-poll test below).
    env = {
        "MESH_SHARED_KEY": SHARED_KEY,
        "MESH_DEMO": "on",
        "MESH_INBOX_WAIT_POLL_SECONDS": "60",
        **production_environment(request),
    }
    started = start_together([BrokerProcess(data_dir=tmp_path / f"node{number + 1}", env=env) for number in range(3)])
    try:
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


def test_an_idempotency_key_replayed_across_two_nodes_stores_one_message(nodes: list[BrokerProcess]) -> None:
    """Our extension: two first POSTs with one key, racing at two nodes, answer one message ID; then a third,
    later, at a third node, too. The same key with other headers is 409."""
    tokens = iter(range(1000))

    def send(node: BrokerProcess, subject: str = "once") -> requests.Response:
        token = make_token(
            SHARED_KEY.encode(), "X26ABC1", "password", nonce="idem", nonce_count=next(tokens), at=datetime.now(UTC)
        )
        headers = {
            "Authorization": token,
            "Accept": V2,
            "mex-To": "X26ABC2",
            "mex-WorkflowID": "TEST_WORKFLOW",
            "mex-Subject": subject,
            "Idempotency-Key": "across-nodes-1",
        }
        with _session() as session:
            return session.post(f"{node.url}/messageexchange/X26ABC1/outbox", data=b"exactly once", headers=headers)

    with ThreadPoolExecutor(2) as pool:
        racing = list(pool.map(send, nodes[:2]))
    assert [r.status_code for r in racing] == [202, 202]
    ids = {r.json()["message_id"] for r in racing}
    assert len(ids) == 1
    later = send(nodes[2])
    assert later.status_code == 202 and later.json()["message_id"] in ids
    assert send(nodes[1], subject="another send").status_code == 409

    token = make_token(SHARED_KEY.encode(), "X26ABC2", "password", nonce="idem-rx", nonce_count=0, at=datetime.now(UTC))
    with _session() as session:
        inbox = session.get(
            f"{nodes[2].url}/messageexchange/X26ABC2/inbox", headers={"Authorization": token, "Accept": V2}
        )
    assert inbox.json()["messages"] == list(ids)


def test_a_long_poll_on_one_node_is_woken_by_a_send_through_another(nodes: list[BrokerProcess]) -> None:
    """PostgreSQL LISTEN/NOTIFY: the waiting node did not deliver the message, and does not poll (its listener
    is up), yet answers within a fraction of the wait."""
    token = make_token(SHARED_KEY.encode(), "X26ABC3", "password", nonce="wait", nonce_count=0, at=datetime.now(UTC))

    def wait() -> tuple[list[str], float]:
        started = time.monotonic()
        with _session() as session:
            response = session.get(
                f"{nodes[0].url}/messageexchange/X26ABC3/inbox?wait=60",
                headers={"Authorization": token, "Accept": V2},
                timeout=70,
            )
        return response.json()["messages"], time.monotonic() - started

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(wait)
        time.sleep(1.0)
        assert not waiting.done()
        token_1 = make_token(
            SHARED_KEY.encode(), "X26ABC1", "password", nonce="wait-tx", nonce_count=0, at=datetime.now(UTC)
        )
        headers = {"Authorization": token_1, "Accept": V2, "mex-To": "X26ABC3", "mex-WorkflowID": "TEST_WORKFLOW"}
        with _session() as session:
            sent = session.post(f"{nodes[1].url}/messageexchange/X26ABC1/outbox", data=b"wake", headers=headers)
        assert sent.status_code == 202
        messages, took = waiting.result(timeout=65)
    assert messages == [sent.json()["message_id"]]
    assert took < 30  # the poll interval is 60 s and the wait 60 s: only the notification answers sooner
