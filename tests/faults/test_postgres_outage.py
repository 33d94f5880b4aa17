"""PostgreSQL stopped and started again under a serving broker: 503 with Retry-After while it is down, service
again without a restart once it is back, and nothing lost or half-stored.

The cluster is this test's own (pg_server.own_cluster), so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from broker.devsupport import pg_server, s3_server
from broker.errors import RETRY_AFTER_SECONDS
from tests.faults.conftest import ALICE, BOB, broker_env
from tests.faults.mesh_http import Caller, trickle
from tests.integration.broker_process import BrokerProcess
from tests.support import V1

pytestmark = pytest.mark.faults

#: How long the pool may take to serve again once PostgreSQL is back.
RECOVERY_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[pg_server.Cluster]:
    """Left running by each test that stops it; shared by the module, since a cluster takes seconds to make."""
    with pg_server.own_cluster() as running:
        pg_server.prepare_template(running.admin_dsn)
        yield running


@pytest.fixture(autouse=True)
def restarted(cluster: pg_server.Cluster) -> Iterator[None]:
    """A test that fails while the cluster is stopped leaves it running for the next."""
    yield
    if not cluster.running:
        cluster.start()


@pytest.fixture
def broker(
    tmp_path: Path, cluster: pg_server.Cluster, s3_endpoint: str, aws_credentials: None
) -> Iterator[BrokerProcess]:
    dsn = asyncio.run(pg_server.clone_database(cluster.admin_dsn))
    bucket = asyncio.run(s3_server.create_bucket(s3_endpoint))
    env = {
        "MESH_DATABASE_URL": dsn,
        "MESH_BLOB_URL": f"s3://{bucket}/blobs",
        "MESH_S3_ENDPOINT_URL": s3_endpoint,
        "MESH_S3_REGION": s3_server.REGION,
        **s3_server.fake_credentials(),
    }
    with BrokerProcess(data_dir=tmp_path / "data", env=broker_env(env)) as process:
        yield process


def assert_unavailable(response: requests.Response, version: str = "v2") -> None:
    """503, Retry-After, and the MESH error body of the API version asked for."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    body = response.json()
    if version == "v1":
        assert body["errorCode"] == "StoreUnavailable", body
        assert "try again later" in body["errorDescription"]
    else:
        (detail,) = body["detail"]
        assert detail["code"] == "StoreUnavailable", body
        assert "try again later" in detail["msg"]


def test_postgres_down_is_503_then_recovers_with_nothing_lost(
    broker: BrokerProcess, cluster: pg_server.Cluster
) -> None:
    alice, bob, bob_v1 = Caller(broker, ALICE), Caller(broker, BOB), Caller(broker, BOB, accept=V1)
    small, large = b"small, kept in its row", b"L" * 200_000
    kept = {
        alice.send(BOB, body, local_id=f"kept-{i}").json()["message_id"]: body for i, body in enumerate((small, large))
    }
    started = alice.send(BOB, b"first of two, ", local_id="two-parts", chunks=2).json()["message_id"]
    read = alice.send(BOB, b"read before the outage", local_id="read").json()["message_id"]
    assert bob.download(read) == (200, b"read before the outage")
    assert bob.acknowledge(read).status_code == 200

    # A send whose bytes are still arriving when the database goes: its row cannot be written, so it fails as a
    # whole (503), and its blob is deleted rather than left for a row that never comes.
    slow: list[requests.Response] = []
    sending = threading.Thread(
        target=lambda: slow.append(alice.send(BOB, trickle(large, pause=0.2), local_id="in-flight")),
    )
    sending.start()
    time.sleep(0.3)
    cluster.stop("fast")
    sending.join(30)
    assert_unavailable(slow[0])

    assert_unavailable(alice.send(BOB, b"while down", local_id="while-down"))
    assert_unavailable(alice.upload_chunk(started, 2, 2, b"second"))
    assert_unavailable(bob.request("GET", "/inbox"))
    assert_unavailable(bob_v1.request("GET", "/inbox"), "v1")
    assert_unavailable(bob.request("GET", f"/inbox/{next(iter(kept))}"))
    assert_unavailable(bob.acknowledge(next(iter(kept))))
    assert_unavailable(alice.track(started))

    cluster.start()
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while (response := bob.request("GET", "/inbox")).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert response.status_code == 200, "the broker did not recover on its own once PostgreSQL was back"

    # Nothing that was accepted is lost, nothing that failed is half there, and every failed call can be retried.
    assert sorted(bob.inbox()) == sorted(kept)
    for message_id, body in kept.items():
        assert bob.download(message_id) == (200, body)
    assert alice.track(read).json()["status"] == "acknowledged"
    for local_id in ("in-flight", "while-down"):
        assert alice.track_local_id(local_id).status_code == 404
    assert alice.track(started).json()["status"] == "uploading"
    assert alice.upload_chunk(started, 2, 2, b"second").status_code == 202
    retried = alice.send(BOB, b"while down", local_id="while-down").json()["message_id"]
    assert sorted(bob.inbox()) == sorted([*kept, started, retried])
    assert bob.download(started, 1) == (206, b"first of two, ")
    assert bob.download(started, 2) == (200, b"second")
    for message_id in [*kept, started, retried]:
        assert bob.acknowledge(message_id).status_code == 200
    assert bob.inbox() == []
    assert '"action":"request_failed"' not in broker.output(), "a request failed with a 500 during the outage"
    for caller in (alice, bob, bob_v1):
        caller.close()


def test_unavailable_answers_carry_a_fresh_request_id(broker: BrokerProcess, cluster: pg_server.Cluster) -> None:
    """Operators match a client's 503 to the log line that says why, by the request id."""
    bob = Caller(broker, BOB)
    cluster.stop("immediate")
    request_id = f"outage-{uuid.uuid4().hex[:8]}"
    assert_unavailable(bob.request("GET", "/inbox", extra={"X-Request-ID": request_id}))
    cluster.start()
    bob.close()
    log = broker.output()
    assert request_id in log and '"action":"dependency_unavailable"' in log
