"""The long-poll inbox, `GET .../inbox?wait=N` (our extension, docs/api.md), on both backend pairs."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestClient

from broker.settings import Settings
from tests.api.helpers import MB1, MB2, body_of
from tests.support import CLIENT_HEADERS, Mesh


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No polling to hide a missed wake-up: within these tests only a notification answers a waiter early."""
    return settings.with_(inbox_wait_poll_seconds=60)


async def _inbox(mesh: Mesh, query: str) -> tuple[list[str], float]:
    started = time.monotonic()
    response = await mesh.client.get(f"{mesh.base}/inbox{query}", headers=mesh.headers())
    assert response.status == 200, await response.text()
    return list((await body_of(response))["messages"]), time.monotonic() - started


async def test_an_empty_inbox_answers_when_a_message_arrives(mb1: Mesh, mb2: Mesh) -> None:
    waiting = asyncio.create_task(_inbox(mb2, "?wait=20"))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    sent = await mb1.send_ok(MB2, b"wake up")
    ids, took = await asyncio.wait_for(waiting, 10)
    assert ids == [sent]
    assert took < 5  # woken by the arrival, not by the end of the wait


async def test_a_chunked_message_wakes_the_waiter_when_its_last_chunk_lands(mb1: Mesh, mb2: Mesh) -> None:
    from tests.api.helpers import send_chunk, start_chunked

    message_id = await start_chunked(mb1, MB2, b"one ", 2)
    waiting = asyncio.create_task(_inbox(mb2, "?wait=20"))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    assert (await send_chunk(mb1, message_id, 2, 2, b"two")).status == 202
    ids, took = await asyncio.wait_for(waiting, 10)
    assert ids == [message_id] and took < 5


async def test_a_waiting_inbox_with_mail_answers_at_once(mb1: Mesh, mb2: Mesh) -> None:
    sent = await mb1.send_ok(MB2, b"already here")
    ids, took = await _inbox(mb2, "?wait=30")
    assert ids == [sent] and took < 2


async def test_nothing_arrives_an_empty_page_after_the_wait(mb2: Mesh) -> None:
    ids, took = await _inbox(mb2, "?wait=1")
    assert ids == [] and 0.9 <= took < 5


async def test_a_negative_wait_is_a_400(mb2: Mesh) -> None:
    response = await mb2.client.get(f"{mb2.base}/inbox?wait=-1", headers=mb2.headers())
    assert response.status == 400
    assert (await body_of(response))["detail"][0]["loc"] == ["query", "wait"]


async def test_the_handshake_names_our_extensions(client: TestClient) -> None:
    mesh = Mesh(client, MB1)
    response = await client.post(f"{mesh.base}", headers=mesh.headers(CLIENT_HEADERS))
    assert response.status == 200
    assert response.headers["Mesh-Broker-Extensions"] == "idempotency-key, inbox-wait"
