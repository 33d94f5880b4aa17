"""NHS's JavaScript MESH client (npm `nhs-mesh-client`, pinned by tests/compat/js/package-lock.json) against a real
broker process over HTTPS, the broker's certificate verified: every call the client has, as its README uses them.

`make js-client` installs it into .cache/js-client (`make test` does so first); Node.js comes with the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.compat.conftest import LiveBroker
from tests.integration.broker_process import SHARED_KEY, BrokerProcess, client_certificate, server_certificates

ROOT = Path(__file__).resolve().parents[2]
INSTALLED = ROOT / ".cache" / "js-client"
SCENARIO = Path(__file__).with_name("js") / "scenario.mjs"
ALICE, BOB = "X26ABC1", "X26ABC2"
#: The file the scenario sends in chunks: one line repeated to 21 MiB, so three of the client's 10 MB chunks.
LINE = b"NHS number,practice,date of birth,result\n"
FILE = LINE * -(-21 * 1024 * 1024 // len(LINE))
#: Client certificates, (cert, key) PEM paths, by mailbox or by the scenario's role ("SENDER", "RECEIVER").
Certs = dict[str, tuple[str, str]]


def run_client(scenario: str, url: str, ca: str, certs: Certs | None = None) -> dict[str, Any]:
    """Run tests/compat/js/scenario.mjs with node; the JSON object it prints. certs: the sender's and the
    receiver's client certificate (cert, key) by "SENDER" and "RECEIVER"."""
    node = shutil.which("node")
    if node is None or not (INSTALLED / "node_modules" / "nhs-mesh-client" / "index.js").is_file():
        raise RuntimeError(f"nhs-mesh-client is not installed in {INSTALLED}: run `make js-client` (needs Node.js)")
    env = {
        **os.environ,
        "MESH_JS_CLIENT": str(INSTALLED),
        "MESH_URL": url,
        "MESH_CA": ca,
        "SCENARIO": scenario,
        "LOG_LEVEL": "ERROR",
    }
    for role, (cert, key) in (certs or {}).items():
        env[f"MESH_{role}_CERT"], env[f"MESH_{role}_KEY"] = cert, key
    done = subprocess.run([node, str(SCENARIO)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    outcome: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return outcome


def assert_round_trip(outcome: dict[str, Any]) -> None:
    """Sent three ways, listed, read whole (the chunked file byte for byte), acknowledged, gone from the inbox."""
    assert outcome["handshake"] == 200
    sent = {name: outcome[name] for name in ("plain", "gzipped", "chunked")}
    assert {name: answer["status"] for name, answer in sent.items()} == dict.fromkeys(sent, 202)
    ids = [answer["messageId"] for answer in sent.values()]
    assert outcome["inbox"]["status"] == 200
    assert sorted(outcome["inbox"]["messages"]) == sorted(ids)
    assert outcome["inbox"]["count"] == 3

    plain, gzipped, chunked = (outcome["read"][message_id] for message_id in ids)
    assert plain["status"] == 200
    assert plain["text"] == "Hello from the JavaScript client"
    assert (plain["from"], plain["workflowId"], plain["filename"]) == (ALICE, "API-DOCS-TEST", "message.txt")
    # The client sent JSON.stringify("Hello, gzipped") gzipped; axios undoes the gzip and parses the JSON.
    assert gzipped["status"] == 200
    assert gzipped["text"] == "Hello, gzipped"
    # Chunk 1 answers 206 and the client follows mex-Chunk-Range to the last chunk, joining them.
    assert chunked["status"] == 206
    assert chunked["chunkRange"] == "3:3"
    assert outcome["chunked"]["size"] == len(FILE)
    assert chunked["size"] == len(FILE)
    assert chunked["sha256"] == outcome["chunked"]["sha256"] == hashlib.sha256(FILE).hexdigest()
    # markAsRead sends a JSON body ({"messageId": ...}) as application/octet-stream: it must not matter.
    assert {read["acknowledged"] for read in outcome["read"].values()} == {200}
    assert outcome["after"] == {"count": 0, "messages": []}


def test_round_trip(live_broker: LiveBroker) -> None:
    assert_round_trip(run_client("round-trip", live_broker.url, live_broker.ca))


def test_a_wrong_password_is_refused_in_mesh_form(live_broker: LiveBroker) -> None:
    outcome = run_client("bad-password", live_broker.url, live_broker.ca)
    for call in ("handshake", "send"):
        assert outcome[call]["status"] == 403
        # The client asks for v2 (Accept: application/vnd.mesh.v2+json): the v2 error shape, as the sandbox words it.
        assert outcome[call]["data"]["detail"] == [{"event": "", "code": "", "msg": "Invalid Authentication Token"}]


@pytest.fixture(scope="module")
def mtls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, Certs]]:
    """A broker that requires a client certificate bound to the mailbox (the client's "integration mode")."""
    root = tmp_path_factory.mktemp("js-mtls")
    client_ca = trustme.CA()
    client_ca.cert_pem.write_to_path(str(root / "client-ca.pem"))
    certs = {
        mailbox: client_certificate(client_ca, f"{mailbox}.X26.api.mesh-client.nhs.uk", root / "clients")
        for mailbox in (ALICE, BOB)
    }
    broker = BrokerProcess(
        data_dir=root / "data",
        env={
            "MESH_SHARED_KEY": SHARED_KEY,
            "MESH_DEMO": "on",
            "MESH_TLS_CLIENT_CA": str(root / "client-ca.pem"),
            "MESH_TLS_CLIENT_CERT": "required",
        },
        certificates=server_certificates(trustme.CA(), root / "tls"),
        probe_cert=certs[ALICE],
    )
    broker.start()
    try:
        yield broker, certs
    finally:
        broker.stop()


def test_client_certificates_in_integration_mode(mtls_broker: tuple[BrokerProcess, Certs]) -> None:
    """The client's integration mode: an agent per mailbox, each with that mailbox's certificate."""
    broker, certs = mtls_broker
    assert_round_trip(run_client("round-trip", broker.url, broker.ca, {"SENDER": certs[ALICE], "RECEIVER": certs[BOB]}))


def test_no_client_certificate_no_answer(mtls_broker: tuple[BrokerProcess, Certs]) -> None:
    broker, _ = mtls_broker
    outcome = run_client("bad-password", broker.url, broker.ca)
    assert "status" not in outcome["handshake"]  # refused in the TLS handshake: no HTTP answer at all
    assert "status" not in outcome["send"]
