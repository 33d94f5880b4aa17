"""SIGKILL at random points of sends, chunk uploads, downloads and acknowledgements, on both backend pairs.

tests/integration/test_durability.py kills a broker between operations; this kills it in the middle of them. One
client works the broker without pause (slow request bodies and slow readers, so that most moments are inside some
request) while the broker is killed at a seeded random moment, restarted on the same store, and checked against
what the client was told:

- nothing answered 202 or 200 is lost: every message whose chunks were all accepted is listed and downloads whole,
  and every acknowledgement that was answered stays made;
- nothing is half-visible: a listed message downloads complete and exact, and a message with a chunk missing is
  never listed;
- the client can finish whatever the crash cut off: a send whose answer was lost is found by its local ID or sent
  again, a chunk is uploaded again, an acknowledgement repeated.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.faults.conftest import ALICE, BOB
from tests.faults.mesh_http import GONE, Caller, trickle
from tests.integration.broker_process import BrokerProcess

pytestmark = pytest.mark.faults

SEED = 20261201
#: What the client does while the broker is killed, one crash each, in this order, per backend pair (a crash
#: costs a restart: about a second embedded, two on PostgreSQL + S3).
FOCUS = ("send", "chunk", "download", "acknowledge")
#: Bounds of the random moment at which the broker is killed, after the client starts on its focus. An
#: acknowledgement takes milliseconds where an upload or a slow download takes tens of them.
KILL_AFTER = {"send": (0.02, 0.6), "chunk": (0.02, 0.6), "download": (0.02, 0.3), "acknowledge": (0.005, 0.1)}
#: Messages made ready before a download or acknowledge crash, so the client is busy with those when it comes.
READY = 12
#: Past MESH_INLINE_CHUNK_BYTES (64 KiB), so most bodies go through the blob store.
SIZES = (1_000, 90_000, 300_000)


@dataclass
class Outgoing:
    """One message as its sender knows it: what each chunk holds and which chunks the broker accepted."""

    local_id: str
    chunks: list[bytes]
    message_id: str | None = None
    accepted: set[int] = field(default_factory=set)
    #: A chunk whose request was cut off by the crash: the broker may or may not have it.
    in_doubt: int | None = None
    acknowledged: bool = False
    ack_in_doubt: bool = False
    downloaded: bool = False

    @property
    def payload(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def complete(self) -> bool:
        return len(self.accepted) == len(self.chunks)

    def missing(self) -> list[int]:
        return [n for n in range(1, len(self.chunks) + 1) if n not in self.accepted]


class Crashed(Exception):
    """The broker went away in the middle of a request."""


class Client:
    """Alice sends to Bob, Bob downloads and acknowledges; every answer is recorded in the ledger."""

    def __init__(self, broker: BrokerProcess, rng: random.Random):
        self.alice = Caller(broker, ALICE)
        self.bob = Caller(broker, BOB)
        self.rng = rng
        self.ledger: list[Outgoing] = []

    def renew(self) -> None:
        self.alice.renew()
        self.bob.renew()

    def close(self) -> None:
        self.alice.close()
        self.bob.close()

    def by_id(self) -> dict[str, Outgoing]:
        return {m.message_id: m for m in self.ledger if m.message_id is not None}

    # The workload ----------------------------------------------------------------------------------------
    def unfinished(self) -> list[Outgoing]:
        return [m for m in self.ledger if m.message_id and not m.complete and m.in_doubt is None]

    def deliverable(self) -> list[Outgoing]:
        return [m for m in self.ledger if m.complete and not m.downloaded and not m.acknowledged]

    def readable(self) -> list[Outgoing]:
        return [m for m in self.ledger if m.downloaded and not m.acknowledged and not m.ack_in_doubt]

    def prepare(self, focus: str) -> None:
        """Before a download or acknowledge crash: enough messages to download or acknowledge, all at once."""
        if focus in ("download", "acknowledge"):
            while len(self.deliverable()) + len(self.readable()) < READY:
                self.new_message(chunks=1)
        if focus == "acknowledge":
            for message in self.deliverable():
                self.download(message)

    def step(self, focus: str) -> None:
        """One request or message of the focus while there is something to do it on; else a send."""
        if focus == "chunk" and self.unfinished():
            message = self.rng.choice(self.unfinished())
            self.upload(message, message.missing()[0])
        elif focus == "chunk":
            self.new_message(chunks=3)
        elif focus == "download" and self.deliverable():
            self.download(self.rng.choice(self.deliverable()), pause=0.03)
        elif focus == "acknowledge" and self.readable():
            self.acknowledge(self.rng.choice(self.readable()))
        else:
            self.new_message(chunks=1)

    def new_message(self, chunks: int) -> None:
        size = self.rng.choice(SIZES)
        message = Outgoing(f"crash-{uuid.uuid4().hex[:12]}", [self.rng.randbytes(size) for _ in range(chunks)])
        self.ledger.append(message)
        self.upload(message, 1)

    def upload(self, message: Outgoing, number: int) -> None:
        body = trickle(message.chunks[number - 1])
        total = len(message.chunks)
        try:
            if number == 1:
                response = self.alice.send(BOB, body, local_id=message.local_id, chunks=total)
            else:
                assert message.message_id is not None
                response = self.alice.upload_chunk(message.message_id, number, total, body)
        except GONE as exc:
            message.in_doubt = number
            raise Crashed from exc
        if number != 1 and response.status_code == 423:
            # A repeat of a chunk that completed the message before the crash: the broker has it already.
            message.accepted.add(number)
            return
        assert response.status_code == 202, (number, response.status_code, response.text)
        if number == 1:
            message.message_id = response.json()["message_id"]
        message.accepted.add(number)

    def download(self, message: Outgoing, pause: float = 0.0) -> None:
        assert message.message_id is not None
        received = []
        for number in range(1, len(message.chunks) + 1):
            try:
                status, body = self.bob.download(message.message_id, number, pause=pause)
            except GONE as exc:
                raise Crashed from exc  # a download changes nothing: it is simply read again later
            assert status in (200, 206), (message.message_id, number, status, body[:200])
            received.append(body)
        assert b"".join(received) == message.payload, f"{message.message_id} downloaded other bytes than were sent"
        message.downloaded = True

    def acknowledge(self, message: Outgoing) -> None:
        assert message.message_id is not None
        try:
            response = self.bob.acknowledge(message.message_id)
        except GONE as exc:
            message.ack_in_doubt = True
            raise Crashed from exc
        assert response.status_code == 200, (message.message_id, response.status_code, response.text)
        message.acknowledged = True
        message.ack_in_doubt = False

    # After a restart ------------------------------------------------------------------------------------
    def settle_lost_answers(self) -> None:
        """A send whose answer was lost is looked up by its local ID, as a MESH client would before sending again."""
        for message in self.ledger:
            if message.in_doubt != 1:
                continue
            response = self.alice.track_local_id(message.local_id)
            if response.status_code == 404:
                continue  # it never landed: sent again by finish_cut_off
            assert response.status_code == 200, response.text
            message.message_id = response.json()["messageId"]
            message.accepted.add(1)
            message.in_doubt = None

    def check(self) -> None:
        """What the restarted broker shows agrees with every answer the client was given."""
        listed = self.bob.inbox()
        assert len(listed) == len(set(listed)), "a message is listed twice"
        known = self.by_id()
        strangers = set(listed) - set(known)
        assert not strangers, f"listed but never sent (or sent twice): {strangers}"
        for message_id, message in known.items():
            shown = message_id in listed
            if message.acknowledged:
                assert not shown, f"{message_id} was acknowledged (200) and is listed again"
            elif message.complete and not message.ack_in_doubt:
                assert shown, f"{message_id} had every chunk accepted (202) and is not listed: lost"
            elif not message.complete and message.missing() != [message.in_doubt]:
                assert not shown, f"{message_id} is listed with chunks {message.missing()} never uploaded"
            if shown:
                if not message.complete:
                    message.accepted.add(message.missing()[0])  # the chunk in doubt landed and completed it
                    message.in_doubt = None
                message.downloaded = False
                try:
                    self.download(message)  # whole and exact, or the test fails here
                except Crashed:
                    pytest.fail(f"{message_id} is listed, and its download was cut short: its bytes are missing")
            elif message.ack_in_doubt:
                message.acknowledged, message.ack_in_doubt = True, False

    def finish_cut_off(self) -> None:
        """Repeat the one request the crash cut off, to completion."""
        for message in self.ledger:
            if message.in_doubt is not None:
                number, message.in_doubt = message.in_doubt, None
                self.upload(message, number)
            if message.ack_in_doubt:
                self.acknowledge(message)


def work_until_killed(client: Client, broker: BrokerProcess, focus: str, delay: float) -> None:
    """Run the workload on a thread and SIGKILL the broker after delay seconds, wherever the client is."""
    killing = threading.Event()
    failures: list[BaseException] = []

    def work() -> None:
        try:
            while True:
                client.step(focus)
        except Crashed:
            if not killing.is_set():
                failures.append(AssertionError("the broker dropped a request without being killed"))
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=work, name="fault-client")
    worker.start()
    time.sleep(delay)
    killing.set()
    broker.kill()
    worker.join(60)
    assert not worker.is_alive(), "the client hung after the broker was killed"
    if failures:
        raise failures[0]


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[Client]:
    client = Client(broker, random.Random(SEED))
    yield client
    client.close()


def test_sigkill_mid_operation_loses_nothing_accepted(broker: BrokerProcess, client: Client) -> None:
    kills = random.Random(SEED + 1)
    for focus in FOCUS:
        client.prepare(focus)
        work_until_killed(client, broker, focus, kills.uniform(*KILL_AFTER[focus]))
        broker.start()
        client.renew()
        client.settle_lost_answers()
        client.check()
        client.finish_cut_off()

    # Then every message is finished, read and acknowledged, and the broker agrees about each one.
    for message in client.ledger:
        if message.message_id is None:
            client.upload(message, 1)
        for number in message.missing():
            client.upload(message, number)
    client.check()
    for message in client.ledger:
        if not message.acknowledged:
            if not message.downloaded:
                client.download(message)
            client.acknowledge(message)
    assert client.bob.inbox() == []
    for message_id in client.by_id():
        response = client.alice.track(message_id)
        assert response.json()["status"] == "acknowledged", (message_id, response.text)
    assert len(client.by_id()) == len(client.ledger) >= len(FOCUS)
