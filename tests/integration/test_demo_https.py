"""Demo mode's port speaks plain HTTP and HTTPS both (broker/gate.py, broker/tls.py): `make serve`'s
http://127.0.0.1:8700 for the README, and https://localhost:8700, the sandbox image's and NHS's JavaScript client's
default, with a certificate the broker made for itself and that the clients are given to trust."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import trustme
from mesh_client import MeshClient

from broker.tls import DEMO_TLS_FOLDER, demo_certificate_file
from tests.compat.test_js_client import assert_round_trip, run_client
from tests.integration.broker_process import HOST, SHARED_KEY, BrokerProcess, server_certificates


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(data_dir=tmp_path_factory.mktemp("demo-https") / "data", env={"MESH_DEMO": "on"})
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def certificate(broker: BrokerProcess) -> str:
    return str(demo_certificate_file(broker.data_dir))


def direct() -> requests.Session:
    """A session that ignores the machine's REQUESTS_CA_BUNDLE and proxies, which would override verify=."""
    session = requests.Session()
    session.trust_env = False
    return session


def test_plain_http_and_https_on_one_port(demo: BrokerProcess) -> None:
    session = direct()
    plain = session.get(f"http://{HOST}:{demo.port}/_ping", timeout=10)
    secure = session.get(f"https://localhost:{demo.port}/_ping", verify=certificate(demo), timeout=10)
    assert plain.status_code == secure.status_code == 200
    assert plain.json() == secure.json()
    with pytest.raises(requests.exceptions.SSLError):  # not trusted unless given the certificate
        session.get(f"https://localhost:{demo.port}/_ping", verify=True, timeout=10)


def test_mesh_client_over_https(demo: BrokerProcess) -> None:
    url = f"https://localhost:{demo.port}"
    with (
        MeshClient(url, "X26ABC1", "password", shared_key=SHARED_KEY.encode(), verify=certificate(demo)) as alice,
        MeshClient(url, "X26ABC2", "password", shared_key=SHARED_KEY.encode(), verify=certificate(demo)) as bob,
    ):
        alice.handshake()
        sent = alice.send_message("X26ABC2", b"over TLS", workflow_id="TEST_WORKFLOW")
        with bob.retrieve_message(sent) as message:
            assert message.read() == b"over TLS"
        assert sent not in bob.list_messages()


def test_the_javascript_client_at_its_default_https_url(demo: BrokerProcess) -> None:
    assert_round_trip(run_client("round-trip", f"https://localhost:{demo.port}", certificate(demo)))


def test_outside_demo_mode_a_plain_port_stays_plain(tmp_path: Path) -> None:
    """Outside demo mode nothing changes: a plain port answers a TLS hello with no TLS."""
    broker = BrokerProcess(data_dir=tmp_path / "data", env={"MESH_SHARED_KEY": SHARED_KEY})
    broker.start()
    try:
        context = ssl.create_default_context()
        with (
            socket.create_connection((HOST, broker.port), timeout=10) as raw,
            pytest.raises((ssl.SSLError, ConnectionError)),
        ):
            context.wrap_socket(raw, server_hostname="localhost")
        assert not (broker.data_dir / DEMO_TLS_FOLDER).exists()
    finally:
        broker.stop()


def test_no_strict_transport_security_for_the_demo_certificate(demo: BrokerProcess) -> None:
    """A browser told to keep localhost to HTTPS would do so for every other local server, on any port."""
    session = direct()
    page = session.get(f"https://localhost:{demo.port}/ui/sign-in", verify=certificate(demo), timeout=10)
    assert page.status_code == 200
    assert "Strict-Transport-Security" not in page.headers


def test_strict_transport_security_with_the_operators_certificate(tmp_path: Path) -> None:
    broker = BrokerProcess(
        data_dir=tmp_path / "data",
        env={"MESH_SHARED_KEY": SHARED_KEY},
        certificates=server_certificates(trustme.CA(), tmp_path / "tls"),
    )
    broker.start()
    try:
        session = direct()
        page = session.get(f"{broker.url}/ui/sign-in", verify=broker.ca, timeout=10)
        assert page.status_code == 200
        assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
    finally:
        broker.stop()
