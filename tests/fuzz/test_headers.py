"""Any bytes in any header the broker reads answer a MESH error or success, never a 500, on every route."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker import headers
from tests.api.helpers import MB2
from tests.fuzz.conftest import Broker
from tests.fuzz.raw import assert_mesh_answer
from tests.fuzz.strategies import FUZZ, FUZZ_PURE, header_bytes

#: Every request header a send reads.
SEND_HEADERS = [
    headers.TO,
    headers.FROM,
    headers.WORKFLOW_ID,
    headers.CHUNK_RANGE,
    headers.SUBJECT,
    headers.LOCAL_ID,
    headers.PARTNER_ID,
    headers.FILE_NAME,
    headers.CONTENT_ENCRYPTED,
    headers.CONTENT_COMPRESSED,
    headers.CONTENT_CHECKSUM,
    headers.CONTENT_TYPE,
    headers.MESSAGE_TYPE,
    "Content-Type",
    "Content-Encoding",
    "Accept",
    "X-Request-ID",
    "Idempotency-Key",
]
HANDSHAKE_HEADERS = [
    headers.CLIENT_VERSION,
    headers.OS_NAME,
    headers.OS_VERSION,
    headers.OS_ARCHITECTURE,
    headers.JAVA_VERSION,
    "Accept",
]
DOWNLOAD_HEADERS = ["Accept", "Accept-Encoding", "X-Request-ID", "Range", "If-None-Match"]


@FUZZ
@given(name=st.sampled_from(SEND_HEADERS), value=header_bytes)
def test_send_headers(broker: Broker, name: str, value: bytes) -> None:
    sent = {headers.TO: MB2.encode(), headers.WORKFLOW_ID: b"TEST_WORKFLOW", name: value}
    answer = broker.request(
        "POST",
        f"{broker.sender.base}/outbox",
        [(key.encode(), sent[key]) for key in sent],
        b"payload",
        caller=broker.sender,
    )
    assert_mesh_answer(answer)


@FUZZ
@given(name=st.sampled_from([headers.CHUNK_RANGE, "Content-Encoding", "Content-Type", "Accept"]), value=header_bytes)
def test_chunk_upload_headers(broker: Broker, name: str, value: bytes) -> None:
    sent = {headers.CHUNK_RANGE: b"2:3", name: value}
    answer = broker.request(
        "POST",
        f"{broker.sender.base}/outbox/{broker.uploading_id}/2",
        [(key.encode(), sent[key]) for key in sent],
        b"chunk two",
        caller=broker.sender,
    )
    assert_mesh_answer(answer)


@FUZZ
@given(name=st.sampled_from(HANDSHAKE_HEADERS), value=header_bytes)
def test_handshake_headers(broker: Broker, name: str, value: bytes) -> None:
    sent = {headers.CLIENT_VERSION: b"mesh_client==5.0.2", headers.OS_NAME: b"Linux", headers.OS_VERSION: b"6.1"}
    sent[name] = value
    answer = broker.request(
        "POST", broker.sender.base, [(key.encode(), sent[key]) for key in sent], caller=broker.sender
    )
    assert_mesh_answer(answer)


@FUZZ
@given(name=st.sampled_from(DOWNLOAD_HEADERS), value=header_bytes)
def test_download_headers(broker: Broker, name: str, value: bytes) -> None:
    answer = broker.request(
        "GET",
        f"{broker.recipient.base}/inbox/{broker.delivered_id}",
        [(name.encode(), value)],
        caller=broker.recipient,
    )
    assert_mesh_answer(answer)


@FUZZ_PURE
@given(value=header_bytes)
def test_check_text_refuses_only_bytes_that_are_not_utf8(value: bytes) -> None:
    """What aiohttp hands over (surrogateescape) is refused exactly when the bytes are not UTF-8."""
    text = value.decode("utf-8", "surrogateescape")
    try:
        value.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    try:
        headers.check_text({headers.SUBJECT: text})
        refused = False
    except headers.BrokerError:
        refused = True
    assert refused is not utf8
