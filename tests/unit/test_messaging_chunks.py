"""Messaging.upload_chunk: a small body with a Content-Length is one store call (add_chunk, which decides alone and
answers the facts a refusal is explained by); a larger or unknown-length body reads its message first. Every error
comes from the one rule (_admit), whichever way; tests/api/test_chunk_refusals.py checks the answers over HTTP."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from broker.blobs.protocol import BlobStore
from broker.errors import BrokerError, ErrorCode
from broker.metrics import Metrics
from broker.models import Chunk, Event, Message, MessageType, Status
from broker.services.directory import Directory
from broker.services.messaging import BODY_FIRST_BYTES, UNROUTED, Messaging, MessagingStore
from broker.store.protocol import ChunkAnswer, ChunkFacts, ChunkOutcome, ChunkUpload
from tests.contract.factories import mailbox, message_id, uploading

MID = message_id(1)
MOST = 1000  # max message bytes
UPLOADING = ChunkFacts("ALICE", "BOB", "WF", MessageType.DATA, Status.UPLOADING, 3, "", 10)


class ScriptedStore:
    """Answers add_chunk from a script and the message read with a fixed message (no chunk n yet), recording every
    call."""

    def __init__(self, answers: list[ChunkAnswer], message: Message | None = None) -> None:
        self.answers, self.message = answers, message
        self.calls: list[tuple[str, Any]] = []

    async def add_chunk(self, chunk: Chunk, upload: ChunkUpload, delivery: Event, expires_at: Any) -> ChunkAnswer:
        self.calls.append(("add_chunk", (chunk.number, chunk.size, upload)))
        return self.answers.pop(0)

    async def get_message_and_chunk(self, message_id: str, number: int) -> tuple[Message | None, Chunk | None]:
        self.calls.append(("get_message_and_chunk", (message_id, number)))
        return self.message, None


def messaging(store: ScriptedStore, metrics: Metrics | None = None) -> Messaging:
    return Messaging(
        cast(MessagingStore, store),
        # Every body here is kept inline: only the blob store's buffer size is read.
        cast(BlobStore, SimpleNamespace(transfer_buffer_bytes=1024)),
        cast(Directory, None),
        max_request_bytes=100,
        max_message_bytes=MOST,
        inbox_expiry=timedelta(days=5),
        inline_chunk_bytes=100,
        metrics=metrics,
    )


async def body(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


async def upload(
    service: Messaging,
    data: bytes = b"chunk",
    *,
    length: int | None = -1,
    number: int = 2,
    total: int = 3,
    sender: str = "ALICE",
    encoding: str = "",
) -> bool:
    """upload_chunk with the body's own length as its Content-Length unless another is given (None: none)."""
    declared = len(data) if length == -1 else length
    return await service.upload_chunk(mailbox(sender), MID, number, encoding, body(data), total=total, length=declared)


async def test_a_small_body_is_one_store_call() -> None:
    store = ScriptedStore([ChunkAnswer(ChunkOutcome.STORED, UPLOADING)])
    assert await upload(messaging(store)) is False
    assert store.calls == [("add_chunk", (2, 5, ChunkUpload("ALICE", 3, "", MOST)))]


async def test_the_last_small_chunk_delivers_with_the_facts_add_chunk_answers() -> None:
    store, metrics = (
        ScriptedStore([ChunkAnswer(ChunkOutcome.COMPLETED, replace(UPLOADING, workflow_id="WF_C"))]),
        Metrics(),
    )
    assert await upload(messaging(store, metrics)) is True
    assert [name for name, _ in store.calls] == ["add_chunk"]
    assert metrics.registry.get_sample_value("mesh_messages_delivered_total", {"workflow": "WF_C"}) == 1


@pytest.mark.parametrize("length", [None, BODY_FIRST_BYTES + 1])
async def test_a_large_or_unknown_length_body_reads_its_message_first(length: int | None) -> None:
    store = ScriptedStore([ChunkAnswer(ChunkOutcome.STORED, UPLOADING)], uploading(MID, 3))
    assert await upload(messaging(store), length=length) is False
    assert [name for name, _ in store.calls] == ["get_message_and_chunk", "add_chunk"]


@pytest.mark.parametrize(
    ("facts", "kwargs", "code"),
    [
        (None, {}, ErrorCode.NOT_FOUND),
        (replace(UPLOADING, sender="CAROL"), {}, ErrorCode.FORBIDDEN),
        (replace(UPLOADING, status=Status.ACCEPTED), {}, ErrorCode.CHUNK_FINALISED),
        (replace(UPLOADING, message_type=MessageType.REPORT), {}, ErrorCode.CHUNK_OUT_OF_RANGE),
        (UPLOADING, {"number": 4, "total": 4}, ErrorCode.CHUNK_OUT_OF_RANGE),
        (UPLOADING, {"total": 4}, ErrorCode.INVALID_CHUNKS),
        (UPLOADING, {"encoding": "gzip", "data": gzip.compress(b"chunk")}, ErrorCode.ENCODING_CHANGED),
        (replace(UPLOADING, other_bytes=MOST - 4), {}, ErrorCode.MESSAGE_TOO_LARGE),
    ],
)
async def test_a_small_chunk_add_chunk_refuses_is_explained_from_its_facts(
    facts: ChunkFacts | None, kwargs: dict[str, Any], code: ErrorCode
) -> None:
    outcome = ChunkOutcome.NOT_FOUND if facts is None else ChunkOutcome.REFUSED
    store = ScriptedStore([ChunkAnswer(outcome, facts)])
    with pytest.raises(BrokerError) as raised:
        await upload(messaging(store), **kwargs)
    assert raised.value.code is code
    assert [name for name, _ in store.calls] == ["add_chunk"]


async def test_a_small_chunk_of_an_unrouted_message_is_dropped_and_answered_as_stored() -> None:
    unrouted = replace(UPLOADING, status=Status.ERROR, recipient=UNROUTED.mailbox_id)
    store = ScriptedStore([ChunkAnswer(ChunkOutcome.REFUSED, unrouted)])
    assert await upload(messaging(store)) is False
    assert [name for name, _ in store.calls] == ["add_chunk"]


async def test_a_refusal_the_rule_does_not_explain_is_an_internal_error() -> None:
    store = ScriptedStore([ChunkAnswer(ChunkOutcome.REFUSED, UPLOADING)])
    with pytest.raises(BrokerError) as raised:
        await upload(messaging(store))
    assert raised.value.code is ErrorCode.INTERNAL


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (None, ErrorCode.NOT_FOUND),
        (uploading(MID, 3, sender="CAROL"), ErrorCode.FORBIDDEN),
        (uploading(MID, 3), ErrorCode.DATA_FILE_MISSING),
    ],
)
async def test_an_empty_small_body_reads_its_message_to_answer_as_before(
    message: Message | None, code: ErrorCode
) -> None:
    store = ScriptedStore([], message)
    with pytest.raises(BrokerError) as raised:
        await upload(messaging(store), b"")
    assert raised.value.code is code
    assert [name for name, _ in store.calls] == ["get_message_and_chunk"]
