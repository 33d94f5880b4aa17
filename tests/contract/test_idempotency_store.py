"""The IdempotencyStore contract (broker/store/protocol.py), on every backend: a key is held once per sender, for as
long as its message lives, and racing sends with one key store one message."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from broker.store.protocol import IdempotencyKey, KeyedSend, MetadataStore
from tests.contract.factories import T0, accepted, chunk, message_id


def key(value: str = "k-1", sender: str = "ALICE", fingerprint: str = "f1") -> IdempotencyKey:
    return IdempotencyKey(sender, value, fingerprint)


async def test_a_key_is_held_by_the_message_it_created(store: MetadataStore) -> None:
    mid = message_id(1)
    assert await store.get_send_by_key("ALICE", "k-1") is None
    held = await store.create_message_once(accepted(mid), chunk(mid, 1, 11), key())
    assert held == KeyedSend(mid, "f1")
    assert await store.get_send_by_key("ALICE", "k-1") == KeyedSend(mid, "f1")
    assert (await store.get_message(mid)) is not None


async def test_a_held_key_stores_nothing_and_answers_its_holder(store: MetadataStore) -> None:
    first, second = message_id(1), message_id(2)
    await store.create_message_once(accepted(first), chunk(first, 1, 11), key())
    held = await store.create_message_once(accepted(second), chunk(second, 1, 11), key(fingerprint="other"))
    assert held == KeyedSend(first, "f1")
    assert await store.get_message(second) is None
    assert await store.list_inbox("BOB", 10) == ([first], None)


async def test_keys_are_scoped_to_the_sender(store: MetadataStore) -> None:
    first, second = message_id(1), message_id(2)
    await store.create_message_once(accepted(first), chunk(first, 1, 11), key())
    held = await store.create_message_once(accepted(second, sender="CAROL"), chunk(second, 1, 11), key(sender="CAROL"))
    assert held.message_id == second
    assert await store.get_send_by_key("CAROL", "k-1") == KeyedSend(second, "f1")


async def test_racing_sends_with_one_key_store_one_message(store: MetadataStore) -> None:
    ids = [message_id(n) for n in range(1, 9)]
    results = await asyncio.gather(*(store.create_message_once(accepted(mid), chunk(mid, 1, 11), key()) for mid in ids))
    winners = {r.message_id for r in results}
    assert len(winners) == 1
    (winner,) = winners
    assert (await store.list_inbox("BOB", 10))[0] == [winner]


async def test_the_key_goes_with_its_message(store: MetadataStore) -> None:
    mid = message_id(1)
    await store.create_message_once(accepted(mid), chunk(mid, 1, 11), key())
    assert await store.purge_messages(T0 + timedelta(days=31), 10) == [mid]
    assert await store.get_send_by_key("ALICE", "k-1") is None
    again = message_id(2)
    assert (await store.create_message_once(accepted(again), chunk(again, 1, 11), key())).message_id == again
