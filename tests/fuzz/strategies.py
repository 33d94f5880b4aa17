"""Hypothesis strategies and settings shared by the fuzz tests."""

from __future__ import annotations

from datetime import datetime

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.fuzz.raw import field_value

#: Every fuzz test: the same examples each run (derandomize, no example database), no deadline (a shared 2-core
#: machine), and a bounded number of examples so the tier takes seconds.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Pure functions are cheap: many more examples.
FUZZ_PURE = settings(FUZZ, max_examples=400)

#: aiohttp's default limit on one header line is 8190 bytes; longer ones never reach the broker.
MAX_FIELD = 6000

digits = st.text("0123456789", min_size=1, max_size=MAX_FIELD)
#: Numbers around every bound that matters: small, 32-bit, 64-bit, far past them, and thousands of digits.
numbers = st.one_of(
    st.integers(min_value=0, max_value=10),
    st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64]),
    st.integers(min_value=0, max_value=10**40),
    digits,
).map(str)

#: Field values as bytes: arbitrary bytes (most are not UTF-8), UTF-8 text, and long runs of digits.
header_bytes = st.one_of(
    st.binary(max_size=300).map(field_value),
    st.text(max_size=120).map(lambda text: field_value(text.encode())),
    numbers.map(str.encode),
)

#: Query values as bytes, percent-encoded by the caller: anything at all, NUL and invalid UTF-8 included, with
#: the values known to have found faults drawn often (PostgreSQL refuses text holding NUL).
query_bytes = st.one_of(
    st.sampled_from([b"\x00", b"AB\x00CD" * 5, b"\xff\xfe", b"*\x00*", b"!\x00", b"", b"-1", b"1e3"]),
    st.binary(max_size=200),
    st.text(max_size=80).map(str.encode),
    numbers.map(str.encode),
)


def _iso_with_offset(at: datetime, sign: str, hours: int, minutes: int) -> str:
    return f"{at.isoformat()}{sign}{hours:02d}:{minutes:02d}"


#: Any time datetime holds, and times within a day of its ends (where an offset matters most).
_times = st.one_of(
    st.datetimes(),
    st.datetimes(max_value=datetime(1, 1, 2)),
    st.datetimes(min_value=datetime(9999, 12, 31)),
)
#: ISO-8601 times from year 1 to 9999 with any offset: the offset can carry them out of datetime's range as UTC.
iso_times = st.one_of(
    _times.map(datetime.isoformat),
    st.builds(
        _iso_with_offset,
        _times,
        st.sampled_from("+-"),
        st.integers(min_value=0, max_value=23),
        st.integers(min_value=0, max_value=59),
    ),
)
