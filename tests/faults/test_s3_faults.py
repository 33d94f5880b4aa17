"""S3 behind a fault proxy (broker/devsupport/fault_proxy.py) between the broker and moto: a flaky S3 is retried
out of sight, one that stays down is a 503 with Retry-After once the retries are spent, and a message whose bytes
could not be stored is never visible. A download whose S3 stream breaks midway is resumed where it broke, and
only cut (the broker's failure, not the client's) once the retries are spent."""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import Iterator

import pytest
import requests

from broker.devsupport import fault_proxy, pg_server, s3_server
from broker.devsupport.fault_proxy import FaultProxy, Mode
from broker.errors import RETRY_AFTER_SECONDS
from tests.faults.conftest import ALICE, BOB, broker_env
from tests.faults.mesh_http import Caller
from tests.integration.broker_process import BrokerProcess

pytestmark = pytest.mark.faults

#: Tries per S3 request, set for the broker under test: 2 rather than the default 3 keeps the slow cases short.
ATTEMPTS = 2
#: Short, so that a slow S3 is given up on within the test's time; LATENCY below it passes, above it fails.
READ_TIMEOUT = 0.3
#: Past MESH_INLINE_CHUNK_BYTES: these bodies go to S3.
LARGE = b"S3 " * 40_000
SMALL = b"kept in its row, never in S3"
#: One chunk of several MB, without a period (a byte sent twice and one skipped would not cancel out).
MULTI_MB = random.Random(14).randbytes(4 * 1024 * 1024)


@pytest.fixture(scope="module")
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    with fault_proxy.running(s3_endpoint) as running:
        yield running


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, pg_admin_dsn: str, s3_endpoint: str, proxy: FaultProxy
) -> Iterator[BrokerProcess]:
    """One broker for the module (each start costs seconds); every test leaves S3 passing and Bob's inbox empty."""
    env = {
        "MESH_DATABASE_URL": asyncio.run(pg_server.clone_database(pg_admin_dsn)),
        "MESH_BLOB_URL": f"s3://{asyncio.run(s3_server.create_bucket(s3_endpoint))}/blobs",
        "MESH_S3_ENDPOINT_URL": proxy.url,
        "MESH_S3_REGION": s3_server.REGION,
        "MESH_S3_MAX_ATTEMPTS": str(ATTEMPTS),
        "MESH_S3_CONNECT_TIMEOUT_SECONDS": "1",
        "MESH_S3_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
        **s3_server.fake_credentials(),
    }
    with BrokerProcess(data_dir=tmp_path_factory.mktemp("s3-faults") / "data", env=broker_env(env)) as process:
        yield process


@pytest.fixture
def alice(broker: BrokerProcess, proxy: FaultProxy) -> Iterator[Caller]:
    caller = Caller(broker, ALICE)
    yield caller
    caller.close()


@pytest.fixture
def bob(broker: BrokerProcess, proxy: FaultProxy) -> Iterator[Caller]:
    caller = Caller(broker, BOB)
    yield caller
    proxy.switch(Mode.PASS)
    for message_id in caller.inbox():
        caller.acknowledge(message_id)
    caller.close()


def assert_blob_store_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    (detail,) = response.json()["detail"]
    assert detail["code"] == "BlobStoreUnavailable", detail


@pytest.mark.parametrize(
    ("mode", "delay"), [(Mode.HTTP_503, 0.0), (Mode.HTTP_500, 0.0), (Mode.RESET, 0.0), (Mode.LATENCY, 0.4)]
)
def test_s3_down_is_503_after_the_retries_and_nothing_is_half_visible(
    broker: BrokerProcess, proxy: FaultProxy, alice: Caller, bob: Caller, mode: Mode, delay: float
) -> None:
    failed = f"failed-{uuid.uuid4().hex[:8]}"
    before = alice.send(BOB, LARGE, local_id="before").json()["message_id"]
    parts = alice.send(BOB, LARGE, local_id="parts", chunks=2).json()["message_id"]

    proxy.switch(mode, delay=delay)
    tried = proxy.counts.connections
    assert_blob_store_unavailable(alice.send(BOB, LARGE, local_id=failed))
    if mode is not Mode.LATENCY:  # a slow connection may be kept and retried on; a failed one never is
        assert proxy.counts.connections - tried >= ATTEMPTS, "the S3 store gave up without retrying"
    assert_blob_store_unavailable(alice.upload_chunk(parts, 2, 2, LARGE))
    # A small chunk lives in its row: S3 being down does not stop it.
    small = alice.send(BOB, SMALL, local_id="small").json()["message_id"]
    download = _download_or_refusal(bob, before)
    assert download is None or download == (503, b""), download

    proxy.switch(Mode.PASS)
    assert alice.track_local_id(failed).status_code == 404
    assert alice.track(parts).json()["status"] == "uploading"
    assert sorted(bob.inbox()) == sorted([before, small])
    assert alice.upload_chunk(parts, 2, 2, LARGE).status_code == 202
    retried = alice.send(BOB, LARGE, local_id=failed).json()["message_id"]
    assert sorted(bob.inbox()) == sorted([before, small, parts, retried])
    assert bob.download(before) == (200, LARGE)
    assert bob.download(parts, 2) == (200, LARGE)
    assert bob.download(retried) == (200, LARGE)
    assert '"action":"request_failed"' not in broker.output(), "a request failed with a 500"


def _download_or_refusal(caller: Caller, message_id: str) -> tuple[int, bytes] | None:
    """A download while S3 is down: a 503 if the broker could tell before its headers left, else a body cut short
    (None): never a 500, and never a body that claims to be whole."""
    try:
        status, body = caller.download(message_id)
    except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError):
        return None
    if status == 503:
        return status, b""
    return status, body


@pytest.mark.parametrize("fault", [Mode.HTTP_503, Mode.HTTP_500, Mode.RESET])
def test_a_flaky_s3_is_retried_out_of_sight(proxy: FaultProxy, alice: Caller, bob: Caller, fault: Mode) -> None:
    proxy.switch(Mode.PASS, fail_next=ATTEMPTS - 1, fault=fault)
    faults = proxy.counts.answered + proxy.counts.resets
    sent = alice.send(BOB, LARGE, local_id="flaky")
    assert sent.status_code == 202, sent.text
    assert proxy.counts.answered + proxy.counts.resets == faults + ATTEMPTS - 1
    proxy.switch(Mode.PASS, fail_next=ATTEMPTS - 1, fault=fault)
    assert bob.download(sent.json()["message_id"]) == (200, LARGE)
    assert proxy.counts.answered + proxy.counts.resets == faults + 2 * (ATTEMPTS - 1)


def test_latency_under_the_timeout_is_only_slower(proxy: FaultProxy, alice: Caller, bob: Caller) -> None:
    proxy.switch(Mode.LATENCY, delay=READ_TIMEOUT / 4)
    sent = alice.send(BOB, LARGE, local_id="slow")
    assert sent.status_code == 202, sent.text
    assert bob.download(sent.json()["message_id"]) == (200, LARGE)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_download_reset_midway_by_s3_resumes_and_delivers_every_byte(
    broker: BrokerProcess, proxy: FaultProxy, alice: Caller, bob: Caller
) -> None:
    message_id = alice.send(BOB, MULTI_MB, local_id="cut-once").json()["message_id"]
    log = broker.output()
    cuts, resumed, aborted = proxy.counts.cuts, log.count('"action":"blob_read_resumed"'), log.count("download_aborted")

    proxy.cut_after(len(MULTI_MB) // 3)
    status, body = bob.download(message_id)
    assert status == 200
    assert (len(body), _sha256(body)) == (len(MULTI_MB), _sha256(MULTI_MB))
    assert proxy.counts.cuts == cuts + 1, "the proxy did not cut the download"
    log = broker.output()
    assert log.count('"action":"blob_read_resumed"') == resumed + 1
    assert log.count("download_aborted") == aborted


def test_a_download_whose_s3_stays_down_after_the_cut_is_cut_as_the_brokers_failure(
    broker: BrokerProcess, proxy: FaultProxy, alice: Caller, bob: Caller
) -> None:
    message_id = alice.send(BOB, MULTI_MB, local_id="cut-then-down").json()["message_id"]
    log = broker.output()
    aborted, closed = log.count('"action":"download_aborted"'), log.count('"action":"client_closed"')

    # The resumed GetObject meets 503 SlowDown on every try botocore makes.
    proxy.cut_after(len(MULTI_MB) // 3, then=Mode.HTTP_503)
    assert _download_or_refusal(bob, message_id) is None, "a body cut short, never one that claims to be whole"
    log = broker.output()
    assert log.count('"action":"download_aborted"') == aborted + 1
    last = log[log.rindex('"action":"download_aborted"') :].split("\n", 1)[0]
    assert '"reason":"blob_store"' in last
    assert log.count('"action":"client_closed"') == closed

    proxy.switch(Mode.PASS)
    status, body = bob.download(message_id)
    assert (status, _sha256(body)) == (200, _sha256(MULTI_MB))
