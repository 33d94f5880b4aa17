"""broker/client against live `mesh-broker serve` processes on both backend pairs: sends of every source, chunking,
compression, downloads checked by digest, paging, the long poll, resumed transfers, retries, Idempotency-Key."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.client import client as mesh
from broker.client.client import Credentials, MeshClient, MeshError
from tests.conftest import BACKENDS, production_environment
from tests.integration.broker_process import SHARED_KEY, BrokerProcess

WORKFLOW = "TEST_WORKFLOW"


@pytest.fixture(scope="module", params=BACKENDS)
def live_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker per backend pair for the module (starting one per test cost most of the module's time)."""
    env = {"MESH_SHARED_KEY": SHARED_KEY, "MESH_DEMO": "on", "MESH_INLINE_CHUNK_BYTES": "1024"}
    if request.param == "postgres+s3":
        env.update(production_environment(request))
    with BrokerProcess(data_dir=tmp_path_factory.mktemp("broker"), env=env) as running:
        yield running


@pytest.fixture
async def broker(live_broker: BrokerProcess) -> BrokerProcess:
    """The module's broker with X26ABC2's inbox emptied, so each test sees only its own messages."""
    async with MeshClient(creds(live_broker, "X26ABC2")) as bob:
        for message_id in [m async for m in bob.iterate_inbox()]:
            await bob.acknowledge(message_id)
    return live_broker


def creds(broker: BrokerProcess, mailbox: str) -> Credentials:
    return Credentials(broker.url, mailbox, "password", SHARED_KEY.encode())


def payload(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB that do not compress to nothing
    return (block * (size // len(block) + 1))[:size]


async def test_send_and_receive_every_source_chunked_and_compressed(broker: BrokerProcess, tmp_path: Path) -> None:
    data = payload(300_000)
    source = tmp_path / "source.bin"
    source.write_bytes(data)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 7000):
            yield data[start : start + 7000]

    async with MeshClient(creds(broker, "X26ABC1"), chunk_size=100_000) as alice:
        assert await alice.handshake() == {"idempotency-key", "inbox-wait"}
        sent = [
            await alice.send("X26ABC2", data, workflow_id=WORKFLOW, subject="bytes"),
            await alice.send("X26ABC2", source, workflow_id=WORKFLOW, compress=True, local_id="L-2"),
            await alice.send("X26ABC2", pieces(), workflow_id=WORKFLOW, file_name="it.bin", chunk_size=64_000),
        ]
        assert (await alice.track(sent[1]))["status"] == "accepted"
        assert await alice.lookup("X26", WORKFLOW) == [{"mailbox_id": "X26ABC2", "mailbox_name": "TESTMB2"}]
        assert {"mailbox_id": "X26ABC2", "mailbox_name": "TESTMB2"} in await alice.workflow_search(WORKFLOW)
    async with MeshClient(creds(broker, "X26ABC2")) as bob:
        await bob.handshake()
        assert [m async for m in bob.iterate_inbox()] == sent
        for number, message_id in enumerate(sent):
            target = tmp_path / f"received-{number}.bin"
            received = await bob.download(message_id, target)
            assert target.read_bytes() == data
            assert received.size == len(data) and received.chunks == (3, 3, 5)[number]
            await bob.acknowledge(message_id)
        assert received.headers["filename"] == "it.bin"
        assert [m async for m in bob.iterate_inbox()] == []


async def test_the_inbox_is_paged_and_the_long_poll_answers_an_arrival(broker: BrokerProcess) -> None:
    async with MeshClient(creds(broker, "X26ABC1")) as alice, MeshClient(creds(broker, "X26ABC2")) as bob:
        sent = [await alice.send("X26ABC2", f"m{i}".encode(), workflow_id=WORKFLOW) for i in range(12)]
        page = await bob.inbox(max_results=10)
        assert page.message_ids == sent[:10] and page.next_link is not None
        assert [m async for m in bob.iterate_inbox()] == sent
        for message_id in sent:
            await bob.acknowledge(message_id)
        await bob.handshake()
        waiting = asyncio.create_task(bob.inbox(wait=30))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        late = await alice.send("X26ABC2", b"late", workflow_id=WORKFLOW)
        assert (await asyncio.wait_for(waiting, 10)).message_ids == [late]


async def test_errors_carry_the_mesh_code(broker: BrokerProcess) -> None:
    async with MeshClient(creds(broker, "X26ABC1")) as alice:
        with pytest.raises(MeshError) as refused:
            await alice.send("NOBODY", b"x", workflow_id=WORKFLOW)
        assert (refused.value.status, refused.value.code) == (417, "12")
    async with MeshClient(Credentials(broker.url, "X26ABC1", "wrong", SHARED_KEY.encode())) as wrong:
        with pytest.raises(MeshError) as denied:
            await wrong.inbox()
        assert denied.value.status == 403


class CrashAfter(Exception):
    """Stands for the client process dying mid-transfer."""


async def test_an_interrupted_upload_resumes_at_the_first_chunk_not_accepted(
    broker: BrokerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(500_000, seed=2)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    journal = tmp_path / "journal" / "upload.json"
    posted: list[str] = []
    real = MeshClient._post_chunk

    async def counting(self: MeshClient, url: str, *args: Any, **kw: Any) -> str:
        posted.append(url.rsplit("/", 1)[-1])
        if len(posted) == 3 and crash:
            raise CrashAfter  # chunks 1 and 2 are in; the third never leaves
        return await real(self, url, *args, **kw)

    monkeypatch.setattr(MeshClient, "_post_chunk", counting)
    crash = True
    async with MeshClient(creds(broker, "X26ABC1"), chunk_size=100_000) as alice:
        await alice.handshake()
        with pytest.raises(CrashAfter):
            await alice.send("X26ABC2", source, workflow_id=WORKFLOW, journal=journal)
    assert journal.exists()
    crash, posted[:] = False, []
    async with MeshClient(creds(broker, "X26ABC1"), chunk_size=100_000) as alice:
        await alice.handshake()
        message_id = await alice.send("X26ABC2", source, workflow_id=WORKFLOW, journal=journal)
    assert posted == ["3", "4", "5"]  # nothing accepted is sent again
    assert not journal.exists()
    async with MeshClient(creds(broker, "X26ABC2")) as bob:
        assert (await bob.inbox()).message_ids == [message_id]
        await bob.download(message_id, tmp_path / "got.bin")
    assert (tmp_path / "got.bin").read_bytes() == data


async def test_a_lost_journal_write_resends_chunk_1_under_the_same_key_and_gets_the_same_message(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    async with MeshClient(creds(broker, "X26ABC1")) as alice:
        await alice.handshake()
        first = await alice.send("X26ABC2", b"once", workflow_id=WORKFLOW, idempotency_key="key-1")
        again = await alice.send("X26ABC2", b"once", workflow_id=WORKFLOW, idempotency_key="key-1")
    assert again == first
    async with MeshClient(creds(broker, "X26ABC2")) as bob:
        assert (await bob.inbox()).message_ids == [first]


async def test_a_finished_chunked_send_repeated_under_its_key_answers_the_same_message(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """The folder agent killed after a chunked send finished (its journal gone) but before it recorded the
    message: the repeat's chunk 1 answers the message made, whose later chunks the broker says are finalised."""
    source = tmp_path / "three.bin"
    source.write_bytes(payload(3000, seed=7))
    journal = tmp_path / "upload.json"
    async with MeshClient(creds(broker, "X26ABC1"), chunk_size=1000) as alice:
        await alice.handshake()
        first = await alice.send("X26ABC2", source, workflow_id=WORKFLOW, idempotency_key="key-3", journal=journal)
        assert not journal.exists()
        again = await alice.send("X26ABC2", source, workflow_id=WORKFLOW, idempotency_key="key-3", journal=journal)
    assert again == first
    async with MeshClient(creds(broker, "X26ABC2")) as bob:
        assert (await bob.inbox()).message_ids == [first]
        await bob.download(first, tmp_path / "got.bin")
    assert (tmp_path / "got.bin").read_bytes() == source.read_bytes()


async def test_an_interrupted_download_resumes_at_the_next_chunk(
    broker: BrokerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(350_000, seed=3)
    async with MeshClient(creds(broker, "X26ABC1"), chunk_size=100_000) as alice:
        message_id = await alice.send("X26ABC2", data, workflow_id=WORKFLOW)
    journal, target = tmp_path / "download.json", tmp_path / "partial.bin"
    fetched: list[str] = []
    real_request = MeshClient._request

    async def counting(self: MeshClient, method: str, url: str, **kw: Any) -> Any:
        if method == "GET" and "/inbox/" in url:
            fetched.append(url.rsplit("/", 1)[-1])
            if crash and len(fetched) == 3:
                raise CrashAfter
        return await real_request(self, method, url, **kw)

    monkeypatch.setattr(MeshClient, "_request", counting)
    crash = True
    async with MeshClient(creds(broker, "X26ABC2")) as bob:
        with pytest.raises(CrashAfter):
            await bob.download(message_id, target, journal=journal)
        crash, fetched[:] = False, []
        with target.open("ab") as torn:
            torn.write(b"half of a chunk that was never recorded")
        await bob.download(message_id, target, journal=journal)
    assert fetched == ["3", "4"]
    assert target.read_bytes() == data and not journal.exists()


async def test_a_mismatched_digest_is_refused(broker: BrokerProcess, tmp_path: Path) -> None:
    async with MeshClient(creds(broker, "X26ABC1")) as alice:
        message_id = await alice.send("X26ABC2", b"digest me", workflow_id=WORKFLOW)
    real = mesh._content_digest
    try:
        mesh._content_digest = lambda value: hashlib.sha256(b"something else").digest()  # type: ignore[assignment]
        async with MeshClient(creds(broker, "X26ABC2")) as bob:
            with pytest.raises(mesh.IntegrityError):
                await bob.download(message_id, tmp_path / "x.bin")
    finally:
        mesh._content_digest = real  # type: ignore[assignment]


async def test_retries_follow_the_official_client_and_never_repeat_an_unkeyed_first_post(tmp_path: Path) -> None:
    """Against a stub: 503 twice then 200 for GETs; the first POST of a send is retried only where the server
    named the idempotency-key extension."""
    from aiohttp import web

    calls: dict[str, int] = {}

    async def flaky(request: web.Request) -> web.Response:
        calls[request.method + request.path] = calls.get(request.method + request.path, 0) + 1
        if calls[request.method + request.path] <= 2:
            return web.Response(status=503, headers={"Retry-After": "0"})
        return web.json_response({"messages": [], "message_id": "M1"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", flaky)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with MeshClient(Credentials(f"http://127.0.0.1:{port}", "MB", "pw", b"k"), backoff=0.01) as client:
            assert (await client.inbox()).message_ids == []
            with pytest.raises(MeshError) as once:
                await client.send("X", b"x", workflow_id="W")
            assert once.value.status == 503 and calls["POST/messageexchange/MB/outbox"] == 1
            client.extensions = frozenset({mesh.IDEMPOTENCY})
            assert await client.send("X", b"x", workflow_id="W") == "M1"
        assert calls["GET/messageexchange/MB/inbox"] == 3
    finally:
        await runner.cleanup()


def test_a_chunk_size_over_the_api_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="100000000"):
        MeshClient(Credentials("http://127.0.0.1:1", "MB", "pw", b"k"), chunk_size=mesh.MAX_CHUNK_BYTES + 1)


@pytest.mark.skipif(
    not (Path(__file__).parents[2] / "benchmarks/results/.sandbox-venv/bin/uvicorn").exists(),
    reason="mesh-sandbox is installed by benchmarks/load.py --compare-sandbox into benchmarks/results/.sandbox-venv",
)
def test_the_client_against_mesh_sandbox(tmp_path: Path) -> None:
    import subprocess
    import time
    import urllib.request

    from tests.integration.broker_process import free_port

    python = Path(__file__).parents[2] / "benchmarks/results/.sandbox-venv/bin/python"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(STORE_MODE="memory", AUTH_MODE="full", SHARED_KEY=SHARED_KEY)
    server = subprocess.Popen(
        [str(python), "-m", "uvicorn", "mesh_sandbox.api:app", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        sandbox = BrokerProcess(data_dir=tmp_path, port=port)

        async def exchange() -> None:
            data = payload(5000)
            async with MeshClient(creds(sandbox, "X26ABC1"), chunk_size=2000) as alice:
                assert await alice.handshake() == frozenset()  # no extensions of ours: no wait, no retried POST
                message_id = await alice.send("X26ABC2", data, workflow_id=WORKFLOW, compress=True)
            async with MeshClient(creds(sandbox, "X26ABC2")) as bob:
                await bob.handshake()
                assert message_id in [m async for m in bob.iterate_inbox(wait=30)]
                await bob.download(message_id, tmp_path / "got.bin")
                await bob.acknowledge(message_id)
            assert (tmp_path / "got.bin").read_bytes() == data

        asyncio.run(exchange())
    finally:
        server.terminate()
        server.wait(10)
