"""Crash safety: every message the broker accepted survives SIGKILL and a restart on the same data dir."""

from __future__ import annotations

import gzip
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from broker.auth import make_token
from tests.integration.broker_process import SHARED_KEY, BrokerProcess
from tests.integration.conftest import MakeClient
from tests.support import CLIENT_HEADERS

ALICE, BOB = "X26ABC1", "X26ABC2"
WORKFLOW = "TEST_WORKFLOW"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess(data_dir=tmp_path / "data", env={"MESH_SHARED_KEY": SHARED_KEY, "MESH_DEMO": "on"})
    with process:
        yield process


def test_accepted_messages_survive_sigkill(broker: BrokerProcess, client_for: MakeClient) -> None:
    rng = random.Random(20261125)
    big = rng.randbytes(300_000)
    sent: dict[str, bytes] = {}
    alice = client_for(broker, ALICE)
    for payload, options in (
        (b"single chunk", {}),
        (b"seven byte chunks, several of them", {"max_chunk_size": 7}),
        (big, {"max_chunk_size": 100_000}),
        (big[:50_000], {"max_chunk_size": 16_384, "compress": True}),
        (gzip.compress(b"already compressed " * 100), {"compressed": True}),
    ):
        sent[alice.send_message(BOB, payload, workflow_id=WORKFLOW, **options)] = payload
    acknowledged = alice.send_message(BOB, b"read before the crash", workflow_id=WORKFLOW)
    bob = client_for(broker, BOB)
    bob.acknowledge_message(acknowledged)
    assert list(bob.iterate_message_ids()) == list(sent)

    broker.kill()
    broker.start()

    alice, bob = client_for(broker, ALICE), client_for(broker, BOB)
    assert list(bob.iterate_message_ids()) == list(sent)
    for message_id, payload in sent.items():
        assert alice.track_message(message_id)["status"] == "accepted"
        with bob.retrieve_message(message_id) as message:
            assert message.read() == payload
    assert alice.track_message(acknowledged)["status"] == "acknowledged"
    assert list(bob.iterate_message_ids()) == []


def test_partial_chunked_upload_completes_after_restart(broker: BrokerProcess, client_for: MakeClient) -> None:
    alice = client_for(broker, ALICE)
    first = alice.send_chunk(BOB, b"first half, ", 1, 2, workflow_id=WORKFLOW, subject="two parts")
    assert first.status_code == 202, first.text
    message_id = first.json()["message_id"]
    assert alice.track_message(message_id)["status"] == "uploading"

    broker.kill()
    broker.start()

    alice, bob = client_for(broker, ALICE), client_for(broker, BOB)
    assert alice.track_message(message_id)["status"] == "uploading"
    assert list(bob.iterate_message_ids()) == []

    second = alice.send_chunk(BOB, b"second half", 2, 2, message_id=message_id)
    assert second.status_code == 202, second.text

    assert list(bob.iterate_message_ids()) == [message_id]
    with bob.retrieve_message(message_id) as message:
        assert message.mex_header("chunk-range") == "1:2"
        assert message.subject == "two parts"
        assert message.read() == b"first half, second half"
    assert alice.track_message(message_id)["status"] == "acknowledged"


def test_graceful_restart_keeps_messages_and_used_tokens(broker: BrokerProcess, client_for: MakeClient) -> None:
    alice = client_for(broker, ALICE)
    message_id = alice.send_message(BOB, b"kept across a clean stop", workflow_id=WORKFLOW)
    token = make_token(
        SHARED_KEY.encode(), BOB, "password", nonce=str(uuid.uuid4()), nonce_count=0, at=datetime.now(UTC)
    )
    handshake = f"{broker.url}/messageexchange/{BOB}"
    assert requests.post(handshake, headers={"Authorization": token, **CLIENT_HEADERS}, timeout=10).status_code == 200

    broker.restart()

    # The replay cache is durable too: a token seen before the restart stays spent.
    assert requests.post(handshake, headers={"Authorization": token, **CLIENT_HEADERS}, timeout=10).status_code == 403
    bob = client_for(broker, BOB)
    with bob.retrieve_message(message_id) as message:
        assert message.read() == b"kept across a clean stop"
