"""Any Authorization header is refused with a MESH 403 that never echoes it; parse_token raises nothing else."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from broker.auth import parse_token
from broker.errors import BrokerError
from tests.api.helpers import MB1
from tests.fuzz.conftest import Broker
from tests.fuzz.raw import assert_mesh_answer, field_value
from tests.fuzz.strategies import FUZZ, FUZZ_PURE, header_bytes

#: Arbitrary token parts: printable text, bytes that are not UTF-8, digits.
_part = st.one_of(
    st.sampled_from([b"\xff", b"caf\xe9", "✓".encode(), b""]),
    st.text(max_size=40).map(lambda text: field_value(text.encode())),
    st.binary(max_size=40).map(field_value),
    st.text("0123456789", max_size=14).map(str.encode),
)


def _token(index: int, bad: bytes) -> bytes:
    parts = [MB1.encode(), b"a-nonce", b"1", datetime.now(UTC).strftime("%Y%m%d%H%M").encode(), b"0" * 64]
    parts[index] = bad
    return b"NHSMESH " + b":".join(parts)


#: `NHSMESH mailbox:nonce:count:timestamp:hash` with one part arbitrary and the others well formed (the caller's
#: mailbox, the time now), so examples get past every check but one: a bad nonce or hash reaches the HMAC.
token_shaped = st.builds(_token, st.integers(min_value=0, max_value=4), _part)
authorizations = st.one_of(token_shaped, header_bytes)


@FUZZ
@given(authorization=authorizations)
def test_any_authorization_is_a_mesh_403(broker: Broker, authorization: bytes) -> None:
    answer = broker.request(
        "GET", f"{broker.sender.base}/count", [(b"Authorization", authorization), (b"Accept", b"application/json")]
    )
    assert_mesh_answer(answer)
    assert answer.status == 403
    # Nothing of the credential comes back (the shortest parts could match by chance, so from 8 bytes up).
    for part in authorization.removeprefix(b"NHSMESH ").split(b":"):
        if len(part.strip()) >= 8:
            assert part.strip() not in answer.body


@FUZZ_PURE
@given(header=st.one_of(header_bytes, token_shaped).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_parse_token_raises_only_mesh_errors(header: str) -> None:
    """The header as aiohttp hands it over: a token comes back ASCII, or a BrokerError; nothing else escapes."""
    try:
        token = parse_token(header, MB1)
    except BrokerError:
        return
    assert all(part.isascii() for part in (token.mailbox_id, token.nonce, token.digest))
    assert token.nonce_count.isdigit() and token.timestamp.isdigit() and len(token.timestamp) == 12
