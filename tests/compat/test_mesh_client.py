"""The official `mesh-client` (PyPI) against a real broker process over HTTPS, after mesh-client's sandbox suite."""

from __future__ import annotations

import pytest
import requests
from mesh_client import MeshClient, MeshError

from tests.compat.conftest import MakeClient

ALICE, BOB = "X26ABC1", "X26ABC2"
WORKFLOW = "TEST_WORKFLOW"
#: 24 bytes over two lines: 5 chunks of at most 5 bytes, 24 chunks of 1 byte, 3 chunks of at most 10.
PAYLOAD = b"Hello, World!\nGoodbye!!\n"
assert len(PAYLOAD) == 24


def receive_all(client: MeshClient) -> list[str]:
    return list(client.iterate_message_ids())


def count(client: MeshClient) -> int:
    """count_messages() is deprecated upstream and says so; the endpoint must still work."""
    with pytest.deprecated_call():
        return client.count_messages()


def test_handshake(alice: MeshClient) -> None:
    assert alice.handshake() == b"hello"


def test_ping(alice: MeshClient) -> None:
    body = alice.ping()
    assert isinstance(body, dict)


def test_send_receive_acknowledge(alice: MeshClient, bob: MeshClient) -> None:
    message_id = alice.send_message(BOB, PAYLOAD, workflow_id=WORKFLOW)

    assert bob.list_messages() == [message_id]
    assert count(bob) == 1
    message = bob.retrieve_message(message_id)
    assert message.id() == message_id
    assert message.sender == ALICE
    assert message.recipient == BOB
    assert message.workflow_id == WORKFLOW
    assert message.content_type == "application/octet-stream"
    assert message.read() == PAYLOAD
    message.acknowledge()

    assert bob.list_messages() == []
    assert count(bob) == 0


def test_iterate_messages_reads_lines(alice: MeshClient, bob: MeshClient) -> None:
    alice.send_message(BOB, PAYLOAD, workflow_id=WORKFLOW)
    received = list(bob.iterate_messages())
    assert len(received) == 1
    assert received[0].readlines() == [b"Hello, World!\n", b"Goodbye!!\n"]
    received[0].acknowledge()
    assert receive_all(bob) == []


@pytest.mark.parametrize(("chunk_size", "chunks"), [(5, 5), (1, 24)])
def test_chunked_send(alice: MeshClient, bob: MeshClient, chunk_size: int, chunks: int) -> None:
    message_id = alice.send_message(BOB, PAYLOAD, max_chunk_size=chunk_size, workflow_id=WORKFLOW)

    assert receive_all(bob) == [message_id]
    with bob.retrieve_message(message_id) as message:
        assert message.mex_header("chunk-range") == f"1:{chunks}"
        assert message.mex_header("total-chunks") == str(chunks)
        assert message.read() == PAYLOAD
    assert receive_all(bob) == []


def test_transparent_compression(mesh: MakeClient, bob: MeshClient) -> None:
    alice = mesh(ALICE, transparent_compress=True)
    message_id = alice.send_message(BOB, PAYLOAD, workflow_id=WORKFLOW)

    with bob.retrieve_message(message_id) as message:
        assert message.compressed is True
        assert message.read() == PAYLOAD


@pytest.mark.parametrize("chunk_size", [1024, 5])
def test_per_message_compression(alice: MeshClient, bob: MeshClient, chunk_size: int) -> None:
    message_id = alice.send_message(BOB, PAYLOAD, max_chunk_size=chunk_size, compress=True, workflow_id=WORKFLOW)

    with bob.retrieve_message(message_id) as message:
        assert message.compressed is True
        assert message.read() == PAYLOAD


def test_iterate_message_ids_pages_in_send_order(alice: MeshClient, bob: MeshClient) -> None:
    sent = [alice.send_message(BOB, f"message {i}".encode(), workflow_id=WORKFLOW) for i in range(25)]

    assert list(bob.iterate_message_ids(batch_size=10)) == sent


def test_list_messages_first_page(alice: MeshClient, bob: MeshClient) -> None:
    sent = [alice.send_message(BOB, f"message {i}".encode(), workflow_id=WORKFLOW) for i in range(12)]

    assert bob.list_messages(max_results=10) == sent[:10]
    assert bob.list_messages() == sent


@pytest.mark.parametrize(("chunk_size", "total"), [(1024, "1"), (10, "3")])
def test_optional_arguments_round_trip(alice: MeshClient, bob: MeshClient, chunk_size: int, total: str) -> None:
    message_id = alice.send_message(
        BOB,
        PAYLOAD,
        max_chunk_size=chunk_size,
        workflow_id=WORKFLOW,
        subject="Hello World",
        filename="upload.txt",
        local_id="12345#local",
        partner_id="partner-1",
        encrypted=True,
        compressed=True,
        checksum="sha256:b10a8db164e0754105b7a99be72e3fe5",
        content_type="text/plain",
    )

    with bob.retrieve_message(message_id) as message:
        assert message.read() == PAYLOAD
        assert message.mex_header("total-chunks") == total
        assert message.subject == "Hello World"
        assert message.filename == "upload.txt"
        assert message.local_id == "12345#local"
        assert message.partner_id == "partner-1"
        assert message.encrypted is True
        assert message.compressed is True
        assert message.checksum == "sha256:b10a8db164e0754105b7a99be72e3fe5"
        assert message.content_type == "text/plain"
        assert message.workflow_id == WORKFLOW
        assert message.sender == ALICE
        assert message.recipient == BOB
        assert message.message_type == "DATA"


def test_default_filename_and_flags(alice: MeshClient, bob: MeshClient) -> None:
    message_id = alice.send_message(BOB, PAYLOAD, workflow_id=WORKFLOW)
    with bob.retrieve_message(message_id) as message:
        assert message.filename == f"{message_id}.dat"
        assert message.encrypted is False
        assert message.subject is None


def test_tracking_accepted_then_acknowledged(alice: MeshClient, bob: MeshClient) -> None:
    message_id = alice.send_message(BOB, PAYLOAD, workflow_id=WORKFLOW, local_id="track-me")

    tracked = alice.track_message(message_id)
    assert tracked["message_id"] == message_id
    assert tracked["status"] == "accepted"
    assert tracked["recipient"] == BOB
    assert tracked["local_id"] == "track-me"

    bob.acknowledge_message(message_id)
    assert alice.track_message(message_id)["status"] == "acknowledged"


def test_tracking_unknown_message_is_404(alice: MeshClient) -> None:
    with pytest.raises(requests.HTTPError) as raised:
        alice.track_message("20200101000000000000_ABCDEF")
    assert raised.value.response.status_code == 404


def test_endpoint_lookup(alice: MeshClient) -> None:
    found = alice.lookup_endpoint("X26", WORKFLOW)
    assert found["results"] == [{"mailbox_id": BOB, "mailbox_name": "TESTMB2"}]


def test_endpoint_lookup_miss_is_empty(alice: MeshClient) -> None:
    assert alice.lookup_endpoint("X99", WORKFLOW)["results"] == []


def test_count_messages(alice: MeshClient, bob: MeshClient) -> None:
    assert count(bob) == 0
    for i in range(3):
        alice.send_message(BOB, f"message {i}".encode(), workflow_id=WORKFLOW)
    assert count(bob) == 3


def test_empty_payload_is_rejected(alice: MeshClient, bob: MeshClient) -> None:
    with pytest.raises(MeshError) as raised:
        alice.send_message(BOB, b"", workflow_id=WORKFLOW)
    assert raised.value.args[1]["detail"][0]["code"] == "02"
    assert bob.list_messages() == []


def test_unknown_recipient_is_rejected(alice: MeshClient) -> None:
    with pytest.raises(MeshError) as raised:
        alice.send_message("NOBODY1", PAYLOAD, workflow_id=WORKFLOW)
    assert raised.value.args[0] == "Unregistered to address"
    assert raised.value.args[1]["detail"][0]["code"] == "12"


def test_bad_password_is_403(mesh: MakeClient) -> None:
    intruder = mesh(ALICE, password="not-the-password")
    with pytest.raises(requests.HTTPError) as raised:
        intruder.handshake()
    assert raised.value.response.status_code == 403


def test_context_manager_acknowledges_on_clean_exit(alice: MeshClient, bob: MeshClient) -> None:
    message_id = alice.send_message(BOB, PAYLOAD, workflow_id=WORKFLOW)
    with bob.retrieve_message(message_id) as message:
        assert message.read() == PAYLOAD
    assert bob.list_messages() == []
    assert alice.track_message(message_id)["status"] == "acknowledged"


def test_context_manager_keeps_message_on_exception(alice: MeshClient, bob: MeshClient) -> None:
    message_id = alice.send_message(BOB, PAYLOAD, workflow_id=WORKFLOW)

    with pytest.raises(RuntimeError), bob.retrieve_message(message_id) as message:
        message.read(5)
        raise RuntimeError("processing failed")

    assert bob.list_messages() == [message_id]
    assert alice.track_message(message_id)["status"] == "accepted"
    with bob.retrieve_message(message_id) as again:
        assert again.read() == PAYLOAD


# Live behaviours the sandbox does not have (mesh-api.md Decisions), as the official client sees them. -------


def test_download_after_acknowledge_is_410(alice: MeshClient, bob: MeshClient) -> None:
    message_id = alice.send_message(BOB, PAYLOAD, workflow_id=WORKFLOW)
    bob.acknowledge_message(message_id)
    with pytest.raises(requests.HTTPError) as raised:
        bob.retrieve_message(message_id)
    assert raised.value.response is not None
    assert raised.value.response.status_code == 410


def test_only_the_recipient_downloads(alice: MeshClient, bob: MeshClient, mesh: MakeClient) -> None:
    message_id = alice.send_message(BOB, PAYLOAD, workflow_id=WORKFLOW)
    for stranger in (alice, mesh("X26ABC3")):
        with pytest.raises(requests.HTTPError) as raised:
            stranger.retrieve_message(message_id)
        assert raised.value.response is not None
        assert raised.value.response.status_code == 403


def test_delivery_waits_for_every_chunk(alice: MeshClient, bob: MeshClient) -> None:
    first = alice.send_chunk(BOB, b"one ", 1, 3, workflow_id=WORKFLOW)
    assert first.status_code == 202, first.text
    message_id = first.json()["message_id"]
    assert alice.send_chunk(BOB, b"three", 3, 3, message_id=message_id).status_code == 202
    assert receive_all(bob) == []
    assert alice.track_message(message_id)["status"] == "uploading"
    # Re-sending a chunk while uploading is idempotent (mesh-client retries chunk POSTs).
    assert alice.send_chunk(BOB, b"three", 3, 3, message_id=message_id).status_code == 202
    assert receive_all(bob) == []

    assert alice.send_chunk(BOB, b"two ", 2, 3, message_id=message_id).status_code == 202
    assert receive_all(bob) == [message_id]
    with pytest.raises(requests.HTTPError) as raised:
        alice.send_chunk(BOB, b"two ", 2, 3, message_id=message_id)
    assert raised.value.response is not None
    assert raised.value.response.status_code == 423

    with bob.retrieve_message(message_id) as message:
        assert message.read() == b"one two three"


def test_workflow_filter(alice: MeshClient, bob: MeshClient) -> None:
    kept = alice.send_message(BOB, PAYLOAD, workflow_id=WORKFLOW)
    alice.send_message(BOB, PAYLOAD, workflow_id="OTHER_WORKFLOW")
    assert bob.list_messages(workflow_filter=WORKFLOW) == [kept]
    assert list(bob.iterate_message_ids(workflow_filter="TEST_*")) == [kept]
