"""The MetadataStore lifecycle contract: expiry claims, abandoned uploads, retention purge, blob-key checks and
the rich lists, on every backend in conftest.STORES."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from broker.models import CENTRAL_SYSTEM, Chunk, Event, Message, MessageMeta, MessageType, Status
from broker.store.protocol import Box, ChunkOutcome, MetadataStore, NonDelivery, Undeliverable
from tests.contract.factories import (
    EXPIRY,
    T0,
    ack_event,
    blob_key,
    chunk,
    deliver,
    delivery_event,
    mailbox,
    message_id,
    party,
    upload,
    uploading,
)
from tests.contract.test_metadata_store import take_all_orphans

HOUR = timedelta(hours=1)


def ndr_claim(mid: str, n: int) -> NonDelivery:
    """The claim housekeeping would make for message mid, with report number n."""
    when = T0 + EXPIRY
    report_id = message_id(900_000 + n)
    error = Event(Status.UNDELIVERABLE, when, "SEND", "14", "Message not collected by recipient after 5 days", mid)
    report = Message(
        message_id=report_id,
        message_type=MessageType.REPORT,
        sender=CENTRAL_SYSTEM,
        recipient=party("ALICE"),
        workflow_id="WF",
        total_chunks=1,
        content_encoding="",
        meta=MessageMeta(subject="subj", local_id="local"),
        status=Status.ACCEPTED,
        created_at=when,
        delivered_at=when,
        expires_at=when + EXPIRY,
        status_at=when,
        linked_message_id=mid,
        events=(error, Event(Status.ACCEPTED, when)),
    )
    event = replace(error, linked_message_id=report_id)
    return NonDelivery(mid, event, report, Chunk(report_id, 1, blob_key(report_id, 1), 0))


async def test_candidates_are_accepted_messages_past_expiry_or_to_deactivated_mailboxes(store: MetadataStore) -> None:
    await store.put_mailbox(mailbox("BOB"))
    await store.put_mailbox(mailbox("GONE", active=False))
    expired = await deliver(store, message_id(1), delivered_at=T0)
    await deliver(store, message_id(2), delivered_at=T0 + HOUR)  # not yet expired
    acked = await deliver(store, message_id(3), delivered_at=T0)
    await store.acknowledge(acked.message_id, "BOB", ack_event(T0 + HOUR))
    to_gone = await deliver(store, message_id(4), recipient="GONE", delivered_at=T0 + HOUR)

    found = await store.undeliverable_candidates(T0 + EXPIRY, 10)
    assert [(c.message.message_id, c.reason) for c in found] == [
        (expired.message_id, Undeliverable.EXPIRED),
        (to_gone.message_id, Undeliverable.DEACTIVATED),
    ]
    assert found[0].message.sender == expired.sender
    assert found[0].message.workflow_id == "WF"
    assert await store.undeliverable_candidates(T0 + EXPIRY - timedelta(microseconds=1), 10) == [found[1]]
    assert len(await store.undeliverable_candidates(T0 + EXPIRY, 1)) == 1


async def test_expired_and_deactivated_is_one_candidate(store: MetadataStore) -> None:
    await store.put_mailbox(mailbox("GONE", active=False))
    await deliver(store, message_id(1), recipient="GONE")
    found = await store.undeliverable_candidates(T0 + EXPIRY, 10)
    assert [(c.message.message_id, c.reason) for c in found] == [(message_id(1), Undeliverable.EXPIRED)]


async def test_mark_undeliverable_changes_the_message_and_stores_the_report_together(store: MetadataStore) -> None:
    original = await deliver(store, message_id(1))
    claim = ndr_claim(original.message_id, 1)
    assert await store.mark_undeliverable([claim]) == [original.message_id]

    changed = await store.get_message(original.message_id)
    assert changed is not None
    assert changed.status is Status.UNDELIVERABLE
    assert changed.status_at == claim.event.timestamp
    assert changed.events[-1] == claim.event
    report = await store.get_message(claim.report.message_id)
    assert report == claim.report
    _, report_chunk = await store.get_message_and_chunk(claim.report.message_id, 1)
    assert report_chunk == claim.report_chunk
    assert await store.count_inbox("BOB") == 0
    assert await store.count_inbox("ALICE") == 1


async def test_a_second_claim_changes_nothing(store: MetadataStore) -> None:
    original = await deliver(store, message_id(1))
    assert await store.mark_undeliverable([ndr_claim(original.message_id, 1)]) == [original.message_id]
    late = ndr_claim(original.message_id, 2)
    assert await store.mark_undeliverable([late]) == []
    assert await store.get_message(late.report.message_id) is None
    changed = await store.get_message(original.message_id)
    assert changed is not None
    assert [e.status for e in changed.events] == [Status.ACCEPTED, Status.UNDELIVERABLE]


async def test_only_accepted_messages_are_claimed(store: MetadataStore) -> None:
    acked = await deliver(store, message_id(1))
    await store.acknowledge(acked.message_id, "BOB", ack_event(T0 + HOUR))
    still = await deliver(store, message_id(2))
    claims = [ndr_claim(acked.message_id, 1), ndr_claim(still.message_id, 2)]
    assert await store.mark_undeliverable(claims) == [still.message_id]
    assert await store.get_message(claims[0].report.message_id) is None
    assert await store.get_message(claims[1].report.message_id) is not None
    assert await store.mark_undeliverable([]) == []


async def test_concurrent_claims_of_one_batch_store_each_report_once(store: MetadataStore) -> None:
    ids = [(await deliver(store, message_id(n))).message_id for n in range(1, 21)]
    first = [ndr_claim(mid, n) for n, mid in enumerate(ids)]
    second = [ndr_claim(mid, 100 + n) for n, mid in enumerate(ids)]
    won = await asyncio.gather(store.mark_undeliverable(first), store.mark_undeliverable(second))
    assert sorted(won[0] + won[1]) == sorted(ids)
    assert await store.count_inbox("ALICE") == len(ids)
    for mid in ids:
        message = await store.get_message(mid)
        assert message is not None
        assert [e.status for e in message.events].count(Status.UNDELIVERABLE) == 1


async def test_abandon_uploads_fails_old_uploads_and_releases_their_chunks(store: MetadataStore) -> None:
    old, recent = message_id(1), message_id(2)
    await store.create_message(uploading(old, 3, created_at=T0), chunk(old, 1))
    stored = await store.add_chunk(chunk(old, 2), upload(3), delivery_event(T0 + HOUR), T0 + EXPIRY)
    assert stored.outcome is ChunkOutcome.STORED
    await store.create_message(uploading(recent, 3, created_at=T0 + 2 * HOUR), chunk(recent, 1))
    await deliver(store, message_id(3), delivered_at=T0 - HOUR)

    event = Event(Status.ERROR, T0 + 3 * HOUR, "SEND", "02", "Upload abandoned")
    assert await store.abandon_uploads(T0 + HOUR, event, 10) == [old]

    failed = await store.get_message(old)
    assert failed is not None
    assert failed.status is Status.ERROR
    assert failed.events[-1] == event
    assert await store.get_message_and_chunk(old, 1) == (failed, None)
    assert sorted(await take_all_orphans(store)) == sorted([chunk(old, 1).blob_key, chunk(old, 2).blob_key])
    untouched = await store.get_message(recent)
    assert untouched is not None and untouched.status is Status.UPLOADING
    assert await store.abandon_uploads(T0 + HOUR, event, 10) == []


async def test_abandon_uploads_takes_at_most_limit(store: MetadataStore) -> None:
    for n in range(1, 4):
        await store.create_message(uploading(message_id(n), 2, created_at=T0), chunk(message_id(n), 1))
    event = Event(Status.ERROR, T0 + HOUR, "SEND", "02", "Upload abandoned")
    assert len(await store.abandon_uploads(T0 + HOUR, event, 2)) == 2
    assert len(await store.abandon_uploads(T0 + HOUR, event, 2)) == 1


async def test_purge_deletes_old_messages_of_any_status_and_releases_their_blobs(store: MetadataStore) -> None:
    old_accepted = await deliver(store, message_id(1), delivered_at=T0)
    old_acked = await deliver(store, message_id(2), delivered_at=T0)
    await store.acknowledge(old_acked.message_id, "BOB", ack_event(T0 + HOUR))
    old_upload = message_id(3)
    await store.create_message(uploading(old_upload, 2, created_at=T0), chunk(old_upload, 1))
    kept = await deliver(store, message_id(4), delivered_at=T0 + 2 * HOUR)

    purged = await store.purge_messages(T0 + HOUR, 10)
    assert sorted(purged) == sorted([old_accepted.message_id, old_acked.message_id, old_upload])
    for mid in purged:
        assert await store.get_message(mid) is None
    assert await store.get_message(kept.message_id) is not None
    assert sorted(await take_all_orphans(store)) == sorted(chunk(mid, 1).blob_key for mid in purged)
    assert await store.purge_messages(T0 + HOUR, 10) == []
    assert len(await store.purge_messages(T0 + 3 * HOUR, 10)) == 1


async def test_known_blob_keys(store: MetadataStore) -> None:
    await deliver(store, message_id(1))
    known = chunk(message_id(1), 1).blob_key
    assert await store.known_blob_keys([known, "nobody/knows", known]) == {known}
    assert await store.known_blob_keys([]) == set()


async def test_rich_lists_are_newest_first_in_every_status_and_page(store: MetadataStore) -> None:
    sent = [await deliver(store, message_id(n), delivered_at=T0 + n * HOUR) for n in range(1, 6)]
    await store.acknowledge(sent[0].message_id, "BOB", ack_event(T0 + 9 * HOUR))
    upload = message_id(6)
    await store.create_message(uploading(upload, 2, created_at=T0 + 7 * HOUR), chunk(upload, 1))
    newest_first = [m.message_id for m in reversed(sent)]

    inbox, cursor = await store.list_messages("BOB", Box.INBOX, T0, 10)
    assert [m.message_id for m in inbox] == newest_first
    assert cursor is None
    assert inbox[-1].status is Status.ACKNOWLEDGED
    assert inbox[0].events  # full messages, history included

    outbox, _ = await store.list_messages("ALICE", Box.OUTBOX, T0, 10)
    assert [m.message_id for m in outbox] == [upload, *newest_first]

    page, cursor = await store.list_messages("BOB", Box.INBOX, T0, 2)
    assert [m.message_id for m in page] == newest_first[:2]
    assert cursor is not None
    page, cursor = await store.list_messages("BOB", Box.INBOX, T0, 2, cursor)
    assert [m.message_id for m in page] == newest_first[2:4]
    page, cursor = await store.list_messages("BOB", Box.INBOX, T0, 2, cursor)
    assert ([m.message_id for m in page], cursor) == (newest_first[4:], None)

    recent, _ = await store.list_messages("BOB", Box.INBOX, T0 + 4 * HOUR, 10)
    assert [m.message_id for m in recent] == newest_first[:2]
    assert (await store.list_messages("ALICE", Box.INBOX, T0, 10)) == ([], None)


async def test_a_claim_without_a_report_only_changes_the_message(store: MetadataStore) -> None:
    original = await deliver(store, message_id(1))
    event = Event(Status.UNDELIVERABLE, T0 + EXPIRY, "SEND", "14", "Message not collected by recipient after 5 days")
    assert await store.mark_undeliverable([NonDelivery(original.message_id, event)]) == [original.message_id]
    changed = await store.get_message(original.message_id)
    assert changed is not None and changed.events[-1] == event
    assert await store.count_accepted() == 0
