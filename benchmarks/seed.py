"""Fill an embedded data directory with acknowledged messages, for the "flat from empty to a million" check.

    .venv/bin/python benchmarks/seed.py DATA_DIR --count 1000000 --mailboxes LOAD001,LOAD002

Messages go in through the store's public interface only: the store is built from Settings(data_dir=DATA_DIR)
as the broker builds it (`broker.backends.metadata_store`), opened (which creates and migrates the schema),
and given each message with `create_message(message, first_chunk)`, already acknowledged and carrying the
events a send, delivery and acknowledgement would have recorded. Many run at once (BATCH at a time), so the
SQLite store's group-commit writer joins them into shared commits. Each message has one 1 KiB chunk kept
inline, as the broker keeps a small chunk (MESH_INLINE_CHUNK_BYTES). Times are spread over the 4 days before
now, inside every expiry and retention period.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.backends import metadata_store
from broker.ids import new_message_id
from broker.models import Chunk, Event, Message, MessageMeta, MessageType, Party, Status
from broker.settings import Settings

#: create_message calls in flight at once: enough to keep the writer's commits full (it joins up to 64).
BATCH = 512

#: Every seeded message carries the same 1 KiB body (its content does not matter, its size does).
PAYLOAD = bytes(range(256)) * 4
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def acknowledged(sender: str, recipient: str, at: datetime, workflow_id: str) -> Message:
    """A message sent at `at`, delivered at once and acknowledged 30 s later, with those events."""
    message_id = new_message_id(at)
    acked = at + timedelta(seconds=30)
    return Message(
        message_id=message_id,
        message_type=MessageType.DATA,
        sender=Party(sender),
        recipient=Party(recipient),
        workflow_id=workflow_id,
        total_chunks=1,
        content_encoding="",
        meta=MessageMeta(file_name=f"{message_id}.dat"),
        status=Status.ACKNOWLEDGED,
        created_at=at,
        file_size=len(PAYLOAD),
        delivered_at=at,
        expires_at=at + timedelta(days=5),
        acknowledged_at=acked,
        status_at=acked,
        events=(
            Event(Status.ACCEPTED, at, "TRANSFER", "00", "Transferred to recipient mailbox"),
            Event(Status.ACKNOWLEDGED, acked),
        ),
    )


async def seed_store(data_dir: Path, count: int, mailboxes: list[str], workflow_id: str = "LOAD_TEST") -> float:
    """Create `count` acknowledged messages between the mailboxes; returns messages per second."""
    store = metadata_store(Settings(data_dir=data_dir))
    await store.open()  # creates and migrates the schema
    try:
        rng = random.Random(20261125)
        now = datetime.now(UTC)
        started = time.perf_counter()
        done = 0
        while done < count:
            size = min(BATCH, count - done)
            batch = []
            for _ in range(size):
                at = now - timedelta(seconds=rng.uniform(3600, 4 * 86_400))
                message = acknowledged(rng.choice(mailboxes), rng.choice(mailboxes), at, workflow_id)
                batch.append((message, Chunk.inline(message.message_id, 1, PAYLOAD, PAYLOAD_SHA256)))
            await asyncio.gather(*(store.create_message(message, chunk) for message, chunk in batch))
            done += size
        return count / (time.perf_counter() - started)
    finally:
        await store.close()


def seed(data_dir: Path, count: int, mailboxes: list[str], workflow_id: str = "LOAD_TEST") -> float:
    """seed_store on an event loop of its own; returns messages per second."""
    return asyncio.run(seed_store(data_dir, count, mailboxes, workflow_id))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--mailboxes", default="X26ABC1,X26ABC2,X26ABC3")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    rate = seed(args.data_dir, args.count, args.mailboxes.split(","))
    print(f"{args.count} acknowledged messages in {args.data_dir} ({rate:,.0f} messages/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
