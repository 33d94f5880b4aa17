"""Large messages through a live broker: constant memory, and an interrupted chunk upload re-sent."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from broker.auth import make_token
from tests.integration.broker_process import SHARED_KEY, BrokerProcess
from tests.integration.conftest import MakeClient

MIB = 1024 * 1024


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    with BrokerProcess(data_dir=tmp_path / "data", env={"MESH_SHARED_KEY": SHARED_KEY, "MESH_DEMO": "on"}) as node:
        yield node


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def test_200_mib_in_20_mib_chunks_keeps_broker_memory_flat(
    broker: BrokerProcess, client_for: MakeClient, tmp_path: Path
) -> None:
    assert broker.process is not None
    pid = broker.process.pid
    source = tmp_path / "payload.bin"
    digest = hashlib.sha256()
    with source.open("wb") as out:
        for block in range(200):
            data = hashlib.sha256(str(block).encode()).digest() * (MIB // 32)
            digest.update(data)
            out.write(data)
    alice = client_for(broker, "X26ABC1", max_chunk_size=20 * MIB)
    bob = client_for(broker, "X26ABC2")
    baseline = memory_kib(pid, "VmRSS")

    with source.open("rb") as payload:
        message_id = alice.send_message("X26ABC2", payload, workflow_id="TEST_WORKFLOW")
    received = hashlib.sha256()
    with bob.retrieve_message(message_id) as message:
        assert message.mex_header("chunk-range") == "1:10"
        while piece := message.read(4 * MIB):
            received.update(piece)

    assert received.hexdigest() == digest.hexdigest()
    growth_mib = (memory_kib(pid, "VmHWM") - baseline) / 1024
    assert growth_mib < 100, f"broker peak RSS grew by {growth_mib:.0f} MiB for a 200 MiB message"


def test_chunk_upload_cut_off_mid_body_can_be_sent_again(broker: BrokerProcess, client_for: MakeClient) -> None:
    alice = client_for(broker, "X26ABC1")
    first = alice.send_chunk("X26ABC2", b"first part|", 1, 2, workflow_id="TEST_WORKFLOW")
    message_id = first.json()["message_id"]

    # Chunk 2 promises 1 MiB but the connection drops after 64 KiB.
    token = make_token(SHARED_KEY.encode(), "X26ABC1", "password", nonce="cut", nonce_count=0, at=datetime.now(UTC))
    head = (
        f"POST /messageexchange/X26ABC1/outbox/{message_id}/2 HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: {token}\r\nmex-Chunk-Range: 2:2\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {MIB}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(head.encode() + b"x" * 65536)

    bob = client_for(broker, "X26ABC2")
    assert bob.list_messages() == []  # the cut-off chunk did not complete the message
    assert alice.track_message(message_id)["status"] == "uploading"

    resent = alice.send_chunk("X26ABC2", b"second part", 2, 2, message_id=message_id)
    assert resent.status_code == 202
    assert bob.retrieve_message(message_id).read() == b"first part|second part"


def test_download_can_be_repeated_until_acknowledged(broker: BrokerProcess, client_for: MakeClient) -> None:
    alice = client_for(broker, "X26ABC1")
    message_id = alice.send_message("X26ABC2", b"abc" * 1000, workflow_id="TEST_WORKFLOW", max_chunk_size=1000)
    bob = client_for(broker, "X26ABC2")
    for _ in range(2):
        assert bob.retrieve_message(message_id).read() == b"abc" * 1000
    bob.acknowledge_message(message_id)
    with pytest.raises(requests.HTTPError) as gone:
        bob.retrieve_message(message_id)
    assert gone.value.response.status_code == 410
