"""Chunk numbers of any size, in the path or in mex-Chunk-Range, answer a MESH error, never a 500."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker import headers
from broker.errors import BrokerError, ErrorCode
from tests.fuzz.conftest import Broker
from tests.fuzz.raw import assert_mesh_answer
from tests.fuzz.strategies import FUZZ, FUZZ_PURE, header_bytes, numbers

chunk_ranges = st.one_of(
    st.builds(lambda n, total: f"{n}:{total}", numbers, numbers),
    header_bytes.map(lambda value: value.decode("utf-8", "surrogateescape")),
)


@FUZZ_PURE
@given(value=chunk_ranges)
def test_parse_chunk_range_is_bounded_or_invalid_chunks(value: str) -> None:
    try:
        number, total = headers.parse_chunk_range(value)
    except BrokerError as error:
        assert error.code is ErrorCode.INVALID_CHUNKS
        return
    assert 1 <= number <= total <= headers.MAX_CHUNK_NUMBER


@FUZZ
@given(number=numbers, chunk_range=chunk_ranges)
def test_chunk_upload_numbers(broker: Broker, number: str, chunk_range: str) -> None:
    answer = broker.request(
        "POST",
        f"{broker.sender.base}/outbox/{broker.uploading_id}/{number}",
        [(headers.CHUNK_RANGE.encode(), chunk_range.encode("utf-8", "surrogateescape"))],
        b"chunk",
        caller=broker.sender,
    )
    assert_mesh_answer(answer)


@FUZZ
@given(number=numbers)
def test_download_chunk_numbers(broker: Broker, number: str) -> None:
    answer = broker.request(
        "GET", f"{broker.recipient.base}/inbox/{broker.delivered_id}/{number}", [], caller=broker.recipient
    )
    assert_mesh_answer(answer)


@FUZZ
@given(total=numbers)
def test_send_declared_totals(broker: Broker, total: str) -> None:
    sent = [(b"mex-To", b"X26ABC2"), (b"mex-WorkflowID", b"TEST_WORKFLOW"), (b"mex-Chunk-Range", f"1:{total}".encode())]
    answer = broker.request("POST", f"{broker.sender.base}/outbox", sent, b"chunk one", caller=broker.sender)
    assert_mesh_answer(answer)
