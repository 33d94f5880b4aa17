"""Identifier formats: LIVE-style message IDs and opaque inbox continuation tokens."""

from __future__ import annotations

import base64
import binascii
import itertools
import random
import secrets
from datetime import datetime

import orjson

from broker.store.protocol import InboxCursor
from broker.store.rows import from_micros, to_micros

#: Where ID suffixes come from. They only keep apart IDs made in the same microsecond (a clash is caught by
#: the store and retried) and guard nothing, since every access is checked against the caller's mailbox; so
#: a Mersenne Twister seeded once from os.urandom, not an os.urandom call per ID, which profiles showed
#: costing a GIL hand-back on every send.
_SUFFIXES = random.Random()


def random_suffix(hex_digits: int) -> str:
    """Lower-case hex digits that are not secret (see _SUFFIXES)."""
    return f"{_SUFFIXES.getrandbits(4 * hex_digits):0{hex_digits}x}"


def new_message_id(at: datetime) -> str:
    """`yyyyMMddHHmmssffffff_XXXXXX`: UTC time with microseconds, then 6 random upper-case hex digits."""
    return f"{at.strftime('%Y%m%d%H%M%S%f')}_{random_suffix(6).upper()}"


def encode_cursor(cursor: InboxCursor) -> str:
    """An opaque, URL-safe token (always > 24 characters) that any node decodes the same way."""
    raw = orjson.dumps([to_micros(cursor.delivered_at), cursor.message_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> InboxCursor | None:
    """The cursor in a token from encode_cursor, or None when the text is not one (e.g. a v1 message ID)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        micros, message_id = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        return None
    # bool is an int to isinstance, and a client-made token may hold a time no datetime can represent.
    if not isinstance(micros, int) or isinstance(micros, bool) or not isinstance(message_id, str):
        return None
    if "\x00" in message_id:  # no stored ID holds NUL, and PostgreSQL refuses text that does
        return None
    try:
        return InboxCursor(from_micros(micros), message_id)
    except (ValueError, OverflowError, OSError):
        return None


class RequestIds:
    """Request IDs unique per node start: a random prefix and a counter. Drawing random bytes per request
    showed up in profiles (os.urandom and the GIL hand-back); a counter costs nothing."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._numbers = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._numbers)}"
