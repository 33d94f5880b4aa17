"""Idempotency-Key on the first POST of a send (our extension, docs/api.md), on both backend pairs."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.keys import DIRECTORY, STORE
from tests.api.helpers import MB2, body_of, inbox_ids, send_chunk, v1_error, v2_error
from tests.support import Mesh


async def test_a_repeated_send_answers_the_first_message_and_stores_nothing(mb1: Mesh, mb2: Mesh) -> None:
    key = {"Idempotency-Key": "9b2d6c1e-retry-1"}
    first = await mb1.send_ok(MB2, b"exactly once", extra=key)
    again = await mb1.send_ok(MB2, b"exactly once", extra=key)
    assert again == first
    assert await inbox_ids(mb2) == [first]


async def test_the_same_key_with_other_headers_is_409(mb1: Mesh, mb1_v1: Mesh) -> None:
    key = {"Idempotency-Key": "k-409"}
    first = await mb1.send_ok(MB2, b"one", extra=key)
    response = await mb1.send(MB2, b"one", extra={**key, "mex-Subject": "changed"})
    assert response.status == 409
    assert v2_error(await body_of(response)) == (
        "SEND",
        "IdempotencyKeyReused",
        "Idempotency-Key was already used by this mailbox for a send with different headers",
    )
    assert (await body_of(response))["message_id"] == first
    response = await mb1_v1.send(MB2, b"one", workflow_id="OTHER", extra=key)
    assert response.status == 409
    assert v1_error(await body_of(response))[1] == "IdempotencyKeyReused"


async def test_keys_are_scoped_to_the_sending_mailbox(mb1: Mesh, mb3: Mesh, mb2: Mesh) -> None:
    key = {"Idempotency-Key": "shared-key"}
    first = await mb1.send_ok(MB2, b"from 1", extra=key)
    second = await mb3.send_ok(MB2, b"from 3", extra=key)
    assert first != second
    assert await inbox_ids(mb2) == [first, second]


async def test_a_chunked_send_repeated_continues_the_same_message(mb1: Mesh, mb2: Mesh) -> None:
    extra = {"Idempotency-Key": "chunked", "mex-Chunk-Range": "1:2"}
    first = await mb1.send_ok(MB2, b"part one ", extra=extra)
    assert await mb1.send_ok(MB2, b"part one ", extra=extra) == first
    assert (await send_chunk(mb1, first, 2, 2, b"part two")).status == 202
    assert await inbox_ids(mb2) == [first]


async def test_a_malformed_key_is_a_400(mb1: Mesh, client: TestClient) -> None:
    for bad in ("", "has space", "x" * 256):
        response = await mb1.send(MB2, b"x", extra={"Idempotency-Key": bad})
        assert response.status == 400, bad
        assert (await body_of(response))["detail"][0]["loc"] == ["header", "idempotency-key"]


async def test_a_repeat_is_answered_as_the_first_send_after_its_recipient_is_deactivated(
    mb1: Mesh, mb2: Mesh, app: web.Application
) -> None:
    key = {"Idempotency-Key": "k-deactivated"}
    first = await mb1.send_ok(MB2, b"before", extra=key)
    await app[DIRECTORY].set_active(MB2, False)
    assert await mb1.send_ok(MB2, b"before", extra=key) == first
    response = await mb1.send(MB2, b"before", extra={"Idempotency-Key": "k-new"})
    assert response.status == 417  # a new key is a new send, refused as any other


async def test_a_first_send_does_not_read_its_key(
    mb1: Mesh, mb2: Mesh, app: web.Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first send takes its key in the insert (create_message_once): a read before it would cost every keyed send
    a lookup (a PostgreSQL round trip) that only a repeat needs."""
    store = app[STORE]
    reads: list[str] = []
    original = store.get_send_by_key

    async def counted(sender: str, key: str) -> Any:
        reads.append(key)
        return await original(sender, key)

    monkeypatch.setattr(store, "get_send_by_key", counted)
    first = await mb1.send_ok(MB2, b"once", extra={"Idempotency-Key": "k-first"})
    assert reads == []
    assert await mb1.send_ok(MB2, b"once", extra={"Idempotency-Key": "k-first"}) == first
    assert await inbox_ids(mb2) == [first]
