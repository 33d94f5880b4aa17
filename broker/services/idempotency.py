"""Idempotency keys on sends (our extension, docs/api.md): what makes two first POSTs "the same send"."""

from __future__ import annotations

import hashlib

import orjson

from broker.errors import BrokerError, ErrorCode
from broker.headers import SendRequest
from broker.models import Mailbox
from broker.store.protocol import IdempotencyKey, KeyedSend


def key_of(sender: Mailbox, request: SendRequest) -> IdempotencyKey | None:
    """The send's key with the fingerprint of everything the sender said about the message, or None."""
    if request.idempotency_key is None:
        return None
    meta = request.meta
    said = [
        request.recipient,
        request.workflow_id,
        request.total_chunks,
        request.content_encoding,
        meta.subject,
        meta.local_id,
        meta.partner_id,
        meta.file_name,
        meta.content_type,
        meta.checksum,
        meta.encrypted,
        meta.compressed,
        request.declared_from,
        request.declared_type,
    ]
    fingerprint = hashlib.sha256(orjson.dumps(said)).hexdigest()
    return IdempotencyKey(sender.mailbox_id, request.idempotency_key, fingerprint)


def replayed(key: IdempotencyKey, held: KeyedSend) -> str:
    """The message a repeated send answers, or 409 when the key was used for a different send."""
    if held.fingerprint != key.fingerprint:
        raise BrokerError(ErrorCode.IDEMPOTENCY_KEY_REUSED, message_id=held.message_id)
    return held.message_id
