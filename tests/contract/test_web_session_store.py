"""WebSessionStore, the web page's sign-ins, on every metadata store: sessions, failure counts and locks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from broker.store.protocol import MetadataStore, WebSession

T0 = datetime(2026, 11, 30, 9, 0, 0, 123456, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def session(key: str = "k" * 64, *, mailboxes: tuple[str, ...] = ("X26ABC1",), at: datetime = T0) -> WebSession:
    return WebSession(key, "X26ABC1", mailboxes[0], mailboxes, "csrf-token", at, at, at + timedelta(hours=8))


async def test_a_session_is_stored_read_back_and_deleted(store: MetadataStore) -> None:
    stored = session(mailboxes=("X26ABC1", "X26ABC2"))
    await store.create_web_session(stored)
    assert await store.get_web_session(stored.session_key) == stored
    assert await store.get_web_session("unknown") is None
    assert await store.delete_web_session(stored.session_key) is True
    assert await store.delete_web_session(stored.session_key) is False
    assert await store.get_web_session(stored.session_key) is None


async def test_touch_and_switch_change_only_their_column(store: MetadataStore) -> None:
    stored = session(mailboxes=("X26ABC1", "X26ABC2"))
    await store.create_web_session(stored)
    await store.touch_web_session(stored.session_key, T0 + 5 * MINUTE)
    await store.switch_web_session_mailbox(stored.session_key, "X26ABC2")
    await store.touch_web_session("unknown", T0)  # changes nothing, raises nothing
    found = await store.get_web_session(stored.session_key)
    assert found is not None
    assert (found.seen_at, found.mailbox_id) == (T0 + 5 * MINUTE, "X26ABC2")
    kept = (found.created_at, found.expires_at, found.mailboxes)
    assert kept == (stored.created_at, stored.expires_at, stored.mailboxes)


async def test_the_purge_forgets_expired_and_idle_sessions_and_quiet_failures(store: MetadataStore) -> None:
    live, idle, expired = session("live"), session("idle"), session("expired", at=T0 - timedelta(hours=9))
    for s in (live, idle, expired):
        await store.create_web_session(s)
    await store.touch_web_session("live", T0 + 30 * MINUTE)
    await store.note_sign_in_failure("mailbox:OLD", T0 - timedelta(hours=2), T0 - timedelta(hours=3))
    await store.note_sign_in_failure("mailbox:LOCKED", T0 - timedelta(hours=2), T0 - timedelta(hours=3))
    await store.lock_sign_in("mailbox:LOCKED", T0 + timedelta(hours=1))
    await store.note_sign_in_failure("mailbox:RECENT", T0 + 30 * MINUTE, T0)

    now = T0 + 31 * MINUTE
    purged = await store.purge_web_sign_ins(now, idle_before=now - 15 * MINUTE, quiet_before=now - timedelta(hours=1))

    assert purged == 2
    assert await store.get_web_session("live") is not None
    assert await store.get_web_session("idle") is None
    assert await store.get_web_session("expired") is None
    later = T0 + 32 * MINUTE
    assert await store.note_sign_in_failure("mailbox:OLD", later, T0 - timedelta(days=1)) == 1  # was forgotten
    assert await store.note_sign_in_failure("mailbox:RECENT", later, T0 - timedelta(days=1)) == 2
    assert await store.sign_in_locked_until(["mailbox:LOCKED"], later) == T0 + timedelta(hours=1)  # kept while locked


async def test_failures_count_up_and_restart_after_a_quiet_spell(store: MetadataStore) -> None:
    key = "mailbox:X26ABC1"
    counts = [await store.note_sign_in_failure(key, T0 + n * MINUTE, T0 + n * MINUTE - 15 * MINUTE) for n in range(3)]
    assert counts == [1, 2, 3]
    # Twenty minutes without a failure: the next one starts the count again.
    at = T0 + 22 * MINUTE
    assert await store.note_sign_in_failure(key, at, at - 15 * MINUTE) == 1
    await store.clear_sign_in_failures(key)
    assert await store.note_sign_in_failure(key, at, at - 15 * MINUTE) == 1


async def test_racing_failures_are_each_counted(store: MetadataStore) -> None:
    counts = await asyncio.gather(
        *(store.note_sign_in_failure("address:127.0.0.1", T0, T0 - 15 * MINUTE) for _ in range(8))
    )
    assert sorted(counts) == list(range(1, 9))


async def test_a_lock_holds_until_its_time_and_the_latest_of_several_keys_wins(store: MetadataStore) -> None:
    await store.note_sign_in_failure("mailbox:X26ABC1", T0, T0)
    await store.note_sign_in_failure("address:127.0.0.1", T0, T0)
    assert await store.sign_in_locked_until(["mailbox:X26ABC1", "address:127.0.0.1", "unknown"], T0) is None
    await store.lock_sign_in("mailbox:X26ABC1", T0 + 2 * MINUTE)
    await store.lock_sign_in("address:127.0.0.1", T0 + 4 * MINUTE)
    keys = ["mailbox:X26ABC1", "address:127.0.0.1"]
    assert await store.sign_in_locked_until(keys, T0) == T0 + 4 * MINUTE
    assert await store.sign_in_locked_until(["mailbox:X26ABC1"], T0 + MINUTE) == T0 + 2 * MINUTE
    assert await store.sign_in_locked_until(keys, T0 + 4 * MINUTE) is None  # a lock ends at its time
    await store.clear_sign_in_failures("address:127.0.0.1")
    assert await store.sign_in_locked_until(keys, T0 + MINUTE) == T0 + 2 * MINUTE
    await store.lock_sign_in("never-failed", T0 + timedelta(hours=1))  # no count: nothing to lock
    assert await store.sign_in_locked_until(["never-failed"], T0) is None
