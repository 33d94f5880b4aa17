"""A real broker process with short timeouts and tight limits, and what the hostile tests ask of it."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.hostile.wire import samples, total
from tests.integration.broker_process import HOST, BrokerProcess, free_port
from tests.support import Tokens

V2 = "application/vnd.mesh.v2+json"
MB1, MB2, MB3 = "X26ABC1", "X26ABC2", "X26ABC3"
#: The limits every hostile test runs under: seconds, not the production minutes, and a small memory budget that
#: a few stalled transfers holding it would exhaust.
IDLE_SECONDS = 4.0
HEADER_SECONDS = 2.0
LIMITS = {
    "MESH_HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS),
    "MESH_BODY_IDLE_TIMEOUT_SECONDS": str(IDLE_SECONDS),
    "MESH_REQUEST_TIME_FLOOR_SECONDS": "3",
    "MESH_REQUEST_SECONDS_PER_MB": "20",
    "MESH_MAX_CONNECTIONS_PER_ADDRESS": "200",
    "MESH_MAX_TRANSFERS_PER_MAILBOX": "160",
    "MESH_TRANSFER_MEMORY_BYTES": str(16 * 1024 * 1024),
}
#: The longest any wait for the broker to catch up may take: bounded, generous for a busy 2-core machine.
WAIT_SECONDS = 20.0

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="session", autouse=True)
def enough_file_descriptors() -> None:
    """Hundreds of sockets at once: raise this process's soft limit (the broker child inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@dataclass
class Node:
    """The broker under attack, with its metrics port and what a well-behaved client does."""

    process: BrokerProcess
    metrics_port: int

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def base(self) -> str:
        return f"{self.process.url}/messageexchange"

    async def metrics(self) -> Metrics:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{HOST}:{self.metrics_port}/metrics") as response,
        ):
            return samples(await response.text())

    async def value(self, name: str, **labels: str) -> float:
        return total(await self.metrics(), name, **labels)

    async def wait_for(self, name: str, check: Callable[[float], bool], **labels: str) -> float:
        """Poll a metric until check(value) holds; fail after WAIT_SECONDS."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            value = await self.value(name, **labels)
            if check(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} stayed at {value}")
            await asyncio.sleep(0.05)

    async def send(self, sender: str, recipient: str, data: bytes) -> str:
        """A well-behaved send; the new message's ID."""
        headers = {
            "Authorization": Tokens(sender)(),
            "Accept": V2,
            "mex-To": recipient,
            "mex-WorkflowID": "HOSTILE_TEST",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.base}/{sender}/outbox", data=data, headers=headers) as sent,
        ):
            assert sent.status == 202, await sent.text()
            return str((await sent.json(content_type=None))["message_id"])

    async def cycle(self, sender: str = MB3, recipient: str = MB1) -> None:
        """A well-behaved client's send, list, download and acknowledge, each answered as it should be."""
        out, into = Tokens(sender), Tokens(recipient)
        timeout = aiohttp.ClientTimeout(total=WAIT_SECONDS)
        connector = aiohttp.TCPConnector(force_close=True)  # no kept-alive connection the header timeout closes
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            headers = {"Authorization": out(), "Accept": V2, "mex-To": recipient, "mex-WorkflowID": "HOSTILE_TEST"}
            async with session.post(f"{self.base}/{sender}/outbox", data=b"well behaved", headers=headers) as sent:
                assert sent.status == 202, await sent.text()
                message_id = (await sent.json(content_type=None))["message_id"]
            inbox = f"{self.base}/{recipient}/inbox"
            async with session.get(inbox, headers={"Authorization": into(), "Accept": V2}) as listed:
                assert listed.status == 200
                assert message_id in (await listed.json(content_type=None))["messages"]
            async with session.get(f"{inbox}/{message_id}", headers={"Authorization": into(), "Accept": V2}) as got:
                assert got.status == 200
                assert await got.read() == b"well behaved"
            ack = f"{inbox}/{message_id}/status/acknowledged"
            async with session.put(ack, headers={"Authorization": into(), "Accept": V2}) as acked:
                assert acked.status == 200

    def open_files(self) -> int:
        """The broker's open file descriptors (sockets, the store's files, blobs being read)."""
        assert self.process.process is not None
        return len(os.listdir(f"/proc/{self.process.process.pid}/fd"))

    async def wait_files_at_most(self, most: int) -> None:
        """Wait until the broker has at most `most` files open: what ended transfers held is closed at once, not
        whenever a garbage collection finds it. Fails after WAIT_SECONDS."""
        deadline = time.monotonic() + WAIT_SECONDS
        while (now := self.open_files()) > most:
            assert time.monotonic() < deadline, f"{now} files open, expected at most {most}"
            await asyncio.sleep(0.05)

    def log(self) -> list[dict[str, object]]:
        lines = []
        for line in self.process.output().splitlines():
            if line.startswith("{"):
                lines.append(orjson.loads(line))
        return lines

    def assert_no_errors_logged(self) -> None:
        """Clients' misbehaviour is not the broker's fault: nothing at error level, no stack trace."""
        bad = [entry for entry in self.log() if entry.get("level") in ("error", "critical") or "error" in entry]
        assert not bad, bad
        assert "Traceback" not in self.process.output()

    async def assert_all_let_go(self) -> None:
        """Every transfer's memory back in the budget, and no request left in flight."""
        await self.wait_for("mesh_transfer_memory_in_use_bytes", lambda v: v == 0)
        await self.wait_for("mesh_http_requests_in_flight", lambda v: v == 0)

    async def assert_no_server_errors(self) -> None:
        assert await self.value("mesh_http_request_duration_seconds_count", status_class="5xx") == 0


def start_node(tmp: Path, **env: str) -> Iterator[Node]:
    metrics_port = free_port()
    settings = {"MESH_DEMO": "on", "MESH_METRICS_PORT": str(metrics_port), **LIMITS, **env}
    with BrokerProcess(tmp / "data", env=settings) as process:
        yield Node(process, metrics_port)


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    yield from start_node(tmp_path_factory.mktemp("hostile"))
