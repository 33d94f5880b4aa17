"""Graceful shutdown of a real broker process: on SIGTERM readiness fails at once, new connections are refused,
requests in flight finish (within MESH_SHUTDOWN_GRACE_SECONDS), then the stores close and the process exits 0."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.broker_process import HOST, SHARED_KEY, BrokerProcess, free_port
from tests.integration.conftest import MakeClient
from tests.support import CLIENT_HEADERS, Tokens

ALICE, BOB = "X26ABC1", "X26ABC2"
#: How long the tests wait for what the broker does at once (a signal handled, a gauge moved).
PROMPTLY = 10.0


class Node:
    """A broker process with its metrics port (the probes' plain-HTTP port), which listens until the drain ends."""

    def __init__(self, data_dir: Path, grace: float):
        self.ops_port = free_port()
        self.grace = grace
        self.process = BrokerProcess(
            data_dir=data_dir,
            env={
                "MESH_SHARED_KEY": SHARED_KEY,
                "MESH_DEMO": "on",
                "MESH_SHUTDOWN_GRACE_SECONDS": str(grace),
                "MESH_METRICS_PORT": str(self.ops_port),
            },
        )

    def ops(self, path: str) -> tuple[int, str]:
        connection = http.client.HTTPConnection(HOST, self.ops_port, timeout=5)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def in_flight(self) -> float:
        _status, text = self.ops("/metrics")
        for line in text.splitlines():
            if line.startswith("mesh_http_requests_in_flight "):
                return float(line.split()[1])
        raise AssertionError("mesh_http_requests_in_flight is not exported")

    def terminate(self, signum: signal.Signals = signal.SIGTERM) -> float:
        """Send the signal; returns when it was sent (time.monotonic())."""
        assert self.process.process is not None
        self.process.process.send_signal(signum)
        return time.monotonic()

    def wait_draining(self) -> dict[str, Any]:
        def draining() -> dict[str, Any] | None:
            status, body = self.ops("/readyz")
            return json.loads(body) if status == 503 else None

        return eventually(draining)

    def exit_code(self, timeout: float) -> int:
        assert self.process.process is not None
        code = self.process.process.wait(timeout)
        self.process.stop()  # forget the finished process, so it can start again
        return code

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.process.output().splitlines() if line[:1] == "{"]

    def actions(self) -> list[str]:
        return [line.get("action", "") for line in self.lines()]

    def logged(self, action: str) -> dict[str, Any]:
        return next(line for line in self.lines() if line.get("action") == action)


def eventually(probe: Callable[[], Any], timeout: float = PROMPTLY) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s")


class SlowUpload:
    """A send whose body arrives in two parts: the broker is handling it in between."""

    def __init__(self, port: int, body: bytes):
        self.body = body
        self.connection = http.client.HTTPConnection(HOST, port, timeout=30)
        self.connection.putrequest("POST", f"/messageexchange/{ALICE}/outbox", skip_accept_encoding=True)
        headers = {
            **CLIENT_HEADERS,
            "Authorization": Tokens(ALICE)(),
            "Accept": "application/vnd.mesh.v2+json",
            "mex-To": BOB,
            "mex-WorkflowID": "TEST_WORKFLOW",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(body)),
        }
        for name, value in headers.items():
            self.connection.putheader(name, value)
        self.connection.endheaders()
        self.connection.send(body[: len(body) // 2])

    def finish(self) -> http.client.HTTPResponse:
        self.connection.send(self.body[len(self.body) // 2 :])
        return self.connection.getresponse()

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path / "data", grace=10.0)
    with node.process:
        yield node


def refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_the_request_in_flight_then_exits_0(node: Node, client_for: MakeClient) -> None:
    # A keep-alive connection opened before the signal, as a load balancer's health checker keeps one.
    kept = http.client.HTTPConnection(HOST, node.process.port, timeout=5)
    kept.request("GET", "/readyz")
    ready = kept.getresponse()
    assert (ready.status, json.loads(ready.read())["status"]) == (200, "ready")
    body = bytes(range(256)) * 400
    upload = SlowUpload(node.process.port, body)
    try:
        eventually(lambda: node.in_flight() == 1)

        signalled = node.terminate()
        assert node.wait_draining() == {"status": "draining", "failed": ["draining"], "checks": {}}
        kept.request("GET", "/readyz")  # the connection it already had still gets an answer: draining, and goodbye
        draining = kept.getresponse()
        assert (draining.status, draining.getheader("Connection")) == (503, "close")
        assert json.loads(draining.read())["status"] == "draining"
        assert refused(node.process.port)  # new connections go to another node
        assert node.process.process is not None and node.process.process.poll() is None  # waiting for the upload

        accepted = upload.finish()
        assert accepted.status == 202, accepted.read()
        assert accepted.getheader("Connection") == "close"
        message_id = json.loads(accepted.read())["message_id"]
    finally:
        upload.close()
        kept.close()
    assert node.exit_code(timeout=node.grace) == 0
    assert time.monotonic() - signalled < node.grace
    assert node.actions()[-3:] == ["shutdown_started", "shutdown_drained", "shutdown_complete"]

    node.process.start()  # the accepted message was committed before the stores closed
    bob = client_for(node.process, BOB)
    assert bob.list_messages() == [message_id]
    with bob.retrieve_message(message_id) as message:
        assert message.read() == body


def test_a_request_still_running_at_the_deadline_is_cut_and_the_node_exits_0(tmp_path: Path) -> None:
    node = Node(tmp_path / "data", grace=2.0)
    with node.process:
        stalled = SlowUpload(node.process.port, b"never finished" * 1000)
        try:
            eventually(lambda: node.in_flight() == 1)
            signalled = node.terminate()
            assert node.exit_code(timeout=node.grace + 8) == 0  # the grace, then the interpreter's own exit
            waited = time.monotonic() - signalled
            with pytest.raises((ConnectionError, http.client.HTTPException)):
                stalled.finish()  # no answer: it was never accepted, so the client sends it again elsewhere
        finally:
            stalled.close()
    assert waited >= node.grace / 2  # it did wait for the request before cutting it
    assert node.actions()[-3:] == ["shutdown_started", "shutdown_deadline", "shutdown_complete"]
    started, complete = (node.logged(action)["ts"] for action in ("shutdown_started", "shutdown_complete"))
    assert (datetime.fromisoformat(complete) - datetime.fromisoformat(started)).total_seconds() < node.grace + 1


def test_a_second_signal_cuts_the_wait_short(tmp_path: Path) -> None:
    node = Node(tmp_path / "data", grace=60.0)
    with node.process:
        stalled = SlowUpload(node.process.port, b"never finished" * 1000)
        try:
            eventually(lambda: node.in_flight() == 1)
            node.terminate()
            node.wait_draining()
            node.terminate(signal.SIGINT)  # Ctrl-C twice
            assert node.exit_code(timeout=PROMPTLY) == 0
        finally:
            stalled.close()
    cut = [line for line in node.lines() if line.get("action") == "shutdown_deadline"]
    assert [(line["reason"], line["in_flight"]) for line in cut] == [("second signal", 1)]


def test_an_idle_node_stops_at_once(node: Node) -> None:
    signalled = node.terminate()
    assert node.exit_code(timeout=PROMPTLY) == 0
    assert time.monotonic() - signalled < node.grace  # nothing to wait for, so no waiting out the grace
    assert node.actions()[-3:] == ["shutdown_started", "shutdown_drained", "shutdown_complete"]
