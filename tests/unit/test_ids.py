"""broker/ids.py: LIVE-form message IDs and opaque inbox continuation tokens."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from broker import ids
from broker.store.protocol import InboxCursor

MESSAGE_ID = re.compile(r"^\d{20}_[0-9A-F]{6}$")
AT = datetime(2025, 6, 1, 12, 34, 56, 789012, tzinfo=UTC)


def test_message_id_format() -> None:
    made = {ids.new_message_id(AT) for _ in range(200)}
    assert all(MESSAGE_ID.match(m) for m in made)
    assert all(m.startswith("20250601123456789012_") for m in made)
    assert len(made) > 150  # random suffixes


def test_message_id_of_a_whole_second_keeps_twenty_digits() -> None:
    assert MESSAGE_ID.match(ids.new_message_id(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)))


@pytest.mark.parametrize(
    "cursor",
    [
        InboxCursor(AT, "20250601123456789012_ABCDEF"),
        InboxCursor(datetime(2000, 1, 1, tzinfo=UTC), "20000101000000000000_000000"),
        InboxCursor(AT + timedelta(microseconds=1), "SANDBOX-STYLE-" + "A" * 32),
    ],
)
def test_cursor_round_trip(cursor: InboxCursor) -> None:
    token = ids.encode_cursor(cursor)
    assert len(token) >= 24
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    decoded = ids.decode_cursor(token)
    assert decoded == cursor
    assert decoded is not None and decoded.delivered_at.utcoffset() == timedelta(0)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not base64 at all!!",
        "20200601122152994285_D59900",
        "%%%%%%%%%%%%%%%%%%%%%%%%",
        _b64(b"not json"),
        _b64(b'{"a": 1}'),
        _b64(b"[1, 2, 3]"),
        _b64(b'["x", "y"]'),
        _b64(b'[1.5, "x"]'),
        _b64(b"[1, 2]"),
        _b64(b'[true, "x"]'),
        _b64(b"null"),
        _b64(orjson.dumps([9_000_000_000_000_000_000, "x"])),
        _b64(orjson.dumps([-9_000_000_000_000_000_000, "x"])),
    ],
)
def test_decode_cursor_rejects_garbage(token: str) -> None:
    assert ids.decode_cursor(token) is None


def test_request_ids_are_unique_within_a_node_and_differ_between_nodes() -> None:
    from broker.ids import RequestIds

    first, second = RequestIds(), RequestIds()
    ids = [first.next() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert first.next().split("-")[0] != second.next().split("-")[0]
