"""Per-mailbox admission: the token bucket's arithmetic, transfer places, and the 429s they answer."""

from __future__ import annotations

import pytest

from broker.admission import Admission, TokenBuckets, TransferSlots
from broker.errors import BrokerError, ErrorCode
from broker.metrics import Metrics


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_one_request_per_token() -> None:
    time = FakeTime()
    buckets = TokenBuckets(rate=2, burst=3, clock=time)
    assert [buckets.take("A") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("A") == pytest.approx(0.5)  # a token every half second
    assert buckets.take("B") == 0.0  # each key its own bucket
    time.now += 0.25
    assert buckets.take("A") == pytest.approx(0.25)  # half a token so far; nothing taken
    time.now += 0.25
    assert buckets.take("A") == 0.0
    time.now += 60
    assert [buckets.take("A") for _ in range(4)][-1] > 0  # refilled to the burst, never past it


def test_full_buckets_are_forgotten_when_there_are_many(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TokenBuckets, "PRUNE_AT", 3)
    time = FakeTime()
    buckets = TokenBuckets(rate=1, burst=2, clock=time)
    for key in ("A", "B", "C"):
        buckets.take(key)
    buckets.take("A")  # A is empty now
    time.now += 0.5
    buckets.take("D")  # prunes: B and C are not yet full again either
    assert len(buckets._buckets) == 4
    time.now += 10
    buckets.take("E")  # everything refilled: only E stays
    assert set(buckets._buckets) == {"E"}


def test_transfer_places_are_counted_per_key_and_forgotten_at_zero() -> None:
    slots = TransferSlots(limit=2)
    assert slots.try_take("A") and slots.try_take("A")
    assert not slots.try_take("A")
    assert slots.try_take("B")
    slots.give_back("A")
    assert slots.in_progress("A") == 1
    assert slots.try_take("A")
    for _ in range(2):
        slots.give_back("A")
    slots.give_back("B")
    assert slots._held == {}
    assert all(TransferSlots(limit=0).try_take("A") for _ in range(1000))  # 0: no limit


def test_admission_answers_429_with_the_wait_and_counts_it() -> None:
    time = FakeTime()
    metrics = Metrics()
    admission = Admission(metrics, rate_per_second=0.4, burst=1, max_transfers=1, clock=time)
    admission.admit("MB1", transfer=False)
    with pytest.raises(BrokerError) as refused:
        admission.admit("MB1", transfer=False)
    assert refused.value.code is ErrorCode.RATE_LIMITED
    assert refused.value.retry_after == 3  # 2.5 s to the next token, in whole seconds for Retry-After
    assert metrics.rate_limited.labels("requests")._value.get() == 1


def test_a_transfer_place_is_held_until_given_back_once() -> None:
    metrics = Metrics()
    admission = Admission(metrics, rate_per_second=0, burst=1, max_transfers=1)
    give_back = admission.admit("MB1", transfer=True)
    assert admission.transfers_in_progress("MB1") == 1
    with pytest.raises(BrokerError) as refused:
        admission.admit("MB1", transfer=True)
    assert refused.value.code is ErrorCode.TOO_MANY_TRANSFERS
    assert refused.value.retry_after == 1
    admission.admit("MB1", transfer=False)()  # not a transfer: no place taken, nothing to give back
    give_back()
    give_back()  # a second call changes nothing
    assert admission.transfers_in_progress("MB1") == 0
    assert metrics.rate_limited.labels("transfers")._value.get() == 1
