"""The directory cache trusts its entries only while the stamp file is unchanged and they are young enough."""

from __future__ import annotations

from pathlib import Path

from broker.store.directory_cache import DirectoryCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_is_kept_until_the_directory_changes(tmp_path: Path) -> None:
    cache = DirectoryCache(tmp_path / "directory.stamp")
    assert cache.get("MB1") is None
    cache.put("MB1", "first")
    assert cache.get("MB1") == "first"
    cache.changed()  # a change through this process: seen at once
    assert cache.get("MB1") is None


def test_a_change_by_another_process_is_seen_once_the_check_interval_has_passed(tmp_path: Path) -> None:
    stamp, clock = tmp_path / "directory.stamp", Clock()
    broker = DirectoryCache(stamp, check_every_seconds=0.125, clock=clock)
    cli = DirectoryCache(stamp, check_every_seconds=0.125, clock=clock)
    broker.put("MB1", "old password")
    for _ in range(3):  # every change counts, however close together
        cli.changed()
        clock.now += 0.0625
        assert broker.get("MB1") is not None  # within the interval the stamp is not looked at
        clock.now += 0.0625
        assert broker.get("MB1") is None
        broker.put("MB1", "new password")
        assert broker.get("MB1") == "new password"


def test_entries_are_dropped_after_their_maximum_age_whatever_the_stamp(tmp_path: Path) -> None:
    clock = Clock()
    cache = DirectoryCache(tmp_path / "directory.stamp", max_age_seconds=5, check_every_seconds=0.125, clock=clock)
    cache.get("MB1")
    cache.put("MB1", "value")
    clock.now = 5.0
    assert cache.get("MB1") == "value"
    clock.now = 5.25  # the age is looked at with the stamp, at most every check interval
    assert cache.get("MB1") is None


def test_a_lookup_that_started_before_a_change_keeps_nothing() -> None:
    """PostgreSQL lookups await the database; a change announced meanwhile must win over what they read."""
    cache = DirectoryCache(None)
    generation = cache.generation
    cache.forget()  # the notification arrives while the lookup is on its way
    cache.put("MB1", "read before the change", generation)
    assert cache.get("MB1") is None
    cache.put("MB1", "read after it", cache.generation)
    assert cache.get("MB1") == "read after it"


def test_a_suspended_cache_keeps_nothing_until_resumed() -> None:
    cache = DirectoryCache(None)
    cache.put("MB1", "kept")
    cache.suspend()
    assert cache.get("MB1") is None
    cache.put("MB1", "while deaf", cache.generation)
    assert cache.get("MB1") is None
    cache.resume()
    assert cache.get("MB1") is None  # nothing from before the gap
    cache.put("MB1", "listening again", cache.generation)
    assert cache.get("MB1") == "listening again"


def test_without_a_stamp_entries_still_age_out() -> None:
    clock = Clock()
    cache = DirectoryCache(None, max_age_seconds=5.0, check_every_seconds=0.1, clock=clock)
    cache.put("MB1", "kept")
    clock.now += 4.0
    assert cache.get("MB1") == "kept"
    clock.now += 1.5
    assert cache.get("MB1") is None


async def test_through_keeps_what_it_fetched_unless_the_directory_changed_meanwhile() -> None:
    cache = DirectoryCache(None)
    fetched: list[str] = []

    async def fetch() -> str:
        fetched.append("MB1")
        return "from the database"

    async def fetch_during_a_change() -> str:
        cache.forget()  # the notification lands while the lookup awaits the database
        return "read before the change"

    assert await cache.through("MB1", fetch) == "from the database"
    assert await cache.through("MB1", fetch) == "from the database"
    assert fetched == ["MB1"]  # the second came from memory
    cache.forget()
    assert await cache.through("MB1", fetch_during_a_change) == "read before the change"
    assert cache.get("MB1") is None  # answered, but not kept
