"""Messaging.acknowledge: one store write on the common path; the message is read only when the write changed nothing,
to tell 404 from 403 from a repeat (tests/api/test_inbox.py checks the answers over HTTP on every backend)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import pytest

from broker.blobs.protocol import BlobStore
from broker.errors import BrokerError, ErrorCode
from broker.metrics import Metrics
from broker.models import Event, Message, Status
from broker.services.directory import Directory
from broker.services.messaging import Messaging, MessagingStore
from tests.contract.factories import T0, accepted, mailbox, message_id

MID = message_id(1)


class ScriptedStore:
    """Answers acknowledge from a script and get_message with a fixed message, recording every call."""

    def __init__(self, acks: list[str | None], message: Message | None) -> None:
        self.acks, self.message = acks, message
        self.calls: list[tuple[str, Any]] = []

    async def acknowledge(self, message_id: str, recipient: str, event: Event) -> str | None:
        self.calls.append(("acknowledge", (message_id, recipient, event.status)))
        return self.acks.pop(0)

    async def get_message(self, message_id: str) -> Message | None:
        self.calls.append(("get_message", message_id))
        return self.message


def messaging(store: ScriptedStore, metrics: Metrics) -> Messaging:
    return Messaging(
        cast(MessagingStore, store),
        cast(BlobStore, None),
        cast(Directory, None),
        max_request_bytes=1024,
        max_message_bytes=1024,
        inbox_expiry=timedelta(days=5),
        metrics=metrics,
    )


def acknowledged(metrics: Metrics, workflow_id: str) -> float:
    value = metrics.registry.get_sample_value("mesh_messages_acknowledged_total", {"workflow": workflow_id})
    return value or 0.0


async def test_the_common_path_is_one_write_and_no_read() -> None:
    store, metrics = ScriptedStore(["WF_A"], None), Metrics()
    await messaging(store, metrics).acknowledge(mailbox("BOB"), MID)
    assert store.calls == [("acknowledge", (MID, "BOB", Status.ACKNOWLEDGED))]
    assert acknowledged(metrics, "WF_A") == 1


@pytest.mark.parametrize(
    ("message", "code"),
    [(None, ErrorCode.MESSAGE_NOT_FOUND), (accepted(MID, recipient="CAROL"), ErrorCode.FORBIDDEN)],
)
async def test_nothing_changed_reads_to_tell_which_error(message: Message | None, code: ErrorCode) -> None:
    store, metrics = ScriptedStore([None], message), Metrics()
    with pytest.raises(BrokerError) as raised:
        await messaging(store, metrics).acknowledge(mailbox("BOB"), MID)
    assert raised.value.code is code
    assert [name for name, _ in store.calls] == ["acknowledge", "get_message"]


@pytest.mark.parametrize("status", [Status.ACKNOWLEDGED, Status.UPLOADING, Status.UNDELIVERABLE])
async def test_a_message_no_longer_accepted_is_a_quiet_success(status: Status) -> None:
    store, metrics = ScriptedStore([None], replace(accepted(MID), status=status)), Metrics()
    await messaging(store, metrics).acknowledge(mailbox("BOB"), MID)
    assert [name for name, _ in store.calls] == ["acknowledge", "get_message"]
    assert acknowledged(metrics, "WF") == 0


async def test_a_message_delivered_between_the_write_and_the_read_is_acknowledged_then() -> None:
    store, metrics = ScriptedStore([None, "WF"], accepted(MID, delivered_at=T0)), Metrics()
    await messaging(store, metrics).acknowledge(mailbox("BOB"), MID)
    assert [name for name, _ in store.calls] == ["acknowledge", "get_message", "acknowledge"]
    assert acknowledged(metrics, "WF") == 1


async def test_losing_that_second_write_to_a_racing_acknowledge_is_a_quiet_success() -> None:
    store, metrics = ScriptedStore([None, None], accepted(MID)), Metrics()
    await messaging(store, metrics).acknowledge(mailbox("BOB"), MID)
    assert acknowledged(metrics, "WF") == 0
