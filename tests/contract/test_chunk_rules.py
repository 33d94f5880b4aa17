"""add_chunk decides every rule of a chunk upload on the message row it locks (protocol.py: ChunkUpload), on every
backend: a chunk the message does not take is REFUSED with nothing written (no chunk row, no size change, no
orphan, no event number taken), and every answer carries the message's facts, which Messaging explains a refusal
from without reading the message again."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from broker.models import MessageType, Status
from broker.store.protocol import ChunkFacts, ChunkOutcome, MetadataStore
from tests.contract.factories import EXPIRY, T0, accepted, chunk, delivery_event, message_id, upload, uploading

SECOND = timedelta(seconds=1)
MID = message_id(1)
#: The facts of MID as _uploading() stores it: chunk 1 of 3 (10 bytes) from ALICE to BOB.
FACTS = ChunkFacts("ALICE", "BOB", "WF", MessageType.DATA, Status.UPLOADING, 3, "", 10)


async def _uploading(store: MetadataStore, **kw: Any) -> None:
    await store.create_message(replace(uploading(MID, 3), file_size=10, **kw), chunk(MID, 1, 10))


async def _taken_orphans(store: MetadataStore) -> list[str]:
    taken: list[str] = []
    while batch := await store.take_orphan_blobs(100):
        taken += batch
    return taken


async def test_a_stored_chunk_answers_the_facts_it_was_stored_against(store: MetadataStore) -> None:
    await _uploading(store)
    stored = await store.add_chunk(chunk(MID, 2, 20), upload(3), delivery_event(T0), T0 + EXPIRY)
    assert stored == (ChunkOutcome.STORED, FACTS)
    completed = await store.add_chunk(chunk(MID, 3, 30), upload(3), delivery_event(T0 + SECOND), T0 + EXPIRY)
    # The facts as the write found them: still uploading, chunk 3 not yet among the other chunks' bytes.
    assert completed == (ChunkOutcome.COMPLETED, replace(FACTS, other_bytes=10 + 20))


#: A refusal: (how the message differs from _uploading's, the chunk's number and size, the upload) -> its facts.
REFUSALS: dict[str, tuple[dict[str, Any], int, int, dict[str, Any], ChunkFacts]] = {
    "another_sender": ({}, 2, 20, {"sender": "MALLORY"}, FACTS),
    "above_total": ({}, 4, 20, {"total_chunks": 4}, FACTS),
    "other_total": ({}, 2, 20, {"total_chunks": 4}, FACTS),
    "other_encoding": ({}, 2, 20, {"content_encoding": "gzip"}, FACTS),
    "dropped_encoding": ({"content_encoding": "gzip"}, 2, 20, {}, replace(FACTS, content_encoding="gzip")),
    "a_report": ({"message_type": MessageType.REPORT}, 2, 20, {}, replace(FACTS, message_type=MessageType.REPORT)),
    "not_uploading": ({"status": Status.ACCEPTED}, 2, 20, {}, replace(FACTS, status=Status.ACCEPTED)),
    "unrouted": (
        {"status": Status.ERROR, "recipient": replace(uploading(MID, 3).recipient, mailbox_id="")},
        2,
        20,
        {},
        replace(FACTS, status=Status.ERROR, recipient=""),
    ),
    "too_large": ({}, 2, 91, {"max_message_bytes": 100}, FACTS),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_a_chunk_the_message_does_not_take_is_refused_with_its_facts(store: MetadataStore, case: str) -> None:
    changes, number, size, asked, facts = REFUSALS[case]
    await _uploading(store, **changes)
    before = await store.get_message(MID)
    ask = upload(**{"total_chunks": 3, **asked})
    answer = await store.add_chunk(chunk(MID, number, size), ask, delivery_event(T0), T0 + EXPIRY)
    assert answer == (ChunkOutcome.REFUSED, facts)
    assert await store.get_message(MID) == before
    assert (await store.get_message_and_chunk(MID, number))[1] is None
    assert await _taken_orphans(store) == []


async def test_exactly_the_limit_is_taken(store: MetadataStore) -> None:
    await _uploading(store)
    answer = await store.add_chunk(chunk(MID, 2, 90), upload(3, max_message_bytes=100), delivery_event(T0), T0)
    assert answer.outcome is ChunkOutcome.STORED


async def test_a_re_sent_chunk_counts_its_new_bytes_not_its_old(store: MetadataStore) -> None:
    """The limit holds the message's other chunks and this one: a replaced chunk's old bytes do not count."""
    await _uploading(store)
    most = upload(3, max_message_bytes=40)
    assert (await store.add_chunk(chunk(MID, 2, 25), most, delivery_event(T0), T0 + EXPIRY)).outcome is (
        ChunkOutcome.STORED
    )
    resent = await store.add_chunk(chunk(MID, 2, 30, suffix="b"), most, delivery_event(T0), T0 + EXPIRY)
    assert resent == (ChunkOutcome.STORED, replace(FACTS, other_bytes=10))
    message = await store.get_message(MID)
    assert message is not None and message.file_size == 10 + 30
    too_big = await store.add_chunk(chunk(MID, 2, 31, suffix="c"), most, delivery_event(T0), T0 + EXPIRY)
    assert too_big == (ChunkOutcome.REFUSED, replace(FACTS, other_bytes=10))
    assert (await store.get_message_and_chunk(MID, 2))[1] == chunk(MID, 2, 30, suffix="b")
    assert await _taken_orphans(store) == [chunk(MID, 2, 25).blob_key]  # only the chunk actually replaced


async def test_a_refused_re_send_keeps_the_chunk_stored_before(store: MetadataStore) -> None:
    await _uploading(store)
    first = chunk(MID, 2, 20)
    assert (await store.add_chunk(first, upload(3), delivery_event(T0), T0 + EXPIRY)).outcome is ChunkOutcome.STORED
    refused = await store.add_chunk(chunk(MID, 2, 21, suffix="b"), upload(2), delivery_event(T0), T0 + EXPIRY)
    assert refused == (ChunkOutcome.REFUSED, replace(FACTS, other_bytes=10))
    assert (await store.get_message_and_chunk(MID, 2))[1] == first
    assert await _taken_orphans(store) == []


async def test_refusals_take_no_event_number(store: MetadataStore) -> None:
    """A refused chunk writes nothing, so the delivery that follows is the message's second event."""
    await _uploading(store)
    for bad in (upload(3, sender="MALLORY"), upload(4), upload(3, content_encoding="gzip")):
        assert (await store.add_chunk(chunk(MID, 2, 20), bad, delivery_event(T0), T0)).outcome is ChunkOutcome.REFUSED
    await store.add_chunk(chunk(MID, 2, 20), upload(3), delivery_event(T0), T0 + EXPIRY)
    await store.add_chunk(chunk(MID, 3, 30), upload(3), delivery_event(T0 + SECOND), T0 + EXPIRY)
    message = await store.get_message(MID)
    assert message is not None
    assert [e.status for e in message.events] == [Status.UPLOADING, Status.ACCEPTED]
    # A message that was never chunked (delivered at once) refuses its chunk 2 too, with its facts.
    single = message_id(2)
    await store.create_message(accepted(single), chunk(single, 1, 11))
    answer = await store.add_chunk(chunk(single, 2, 5), upload(1), delivery_event(T0), T0 + EXPIRY)
    assert answer == (ChunkOutcome.REFUSED, replace(FACTS, status=Status.ACCEPTED, total_chunks=1, other_bytes=11))
