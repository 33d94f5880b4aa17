"""Fill an embedded data directory with acknowledged messages, for the "flat from empty to a million" check.

    PYTHONPATH=. .venv/bin/python benchmarks/seed.py DATA_DIR --count 1000000 --mailboxes LOAD001,LOAD002

Rows go in through the store's own named SQL and row mapping (`insert_message`, `insert_chunk`,
`insert_event`, `message_values`), in batches of one transaction each, so they are exactly what the broker
would have written for a send, delivery and acknowledgement; only the bytes are left out (acknowledged
messages are never downloaded again). Times are spread over the 4 days before now, inside every expiry and
retention period.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.ids import new_message_id
from broker.models import Chunk, Event, Message, MessageMeta, MessageType, Party, Status
from broker.store import queries
from broker.store.rows import chunk_values, message_values, to_micros
from broker.store.sqlite import SqliteStore, event_values

BATCH = 20_000


#: Every seeded message carries the same 1 KiB body (its content does not matter, its size does).
PAYLOAD = bytes(range(256)) * 4
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def acknowledged(sender: str, recipient: str, at: datetime, workflow_id: str) -> tuple[Message, list[Event]]:
    message_id = new_message_id(at)
    acked = at + timedelta(seconds=30)
    message = Message(
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
        file_size=1024,
        delivered_at=at,
        expires_at=at + timedelta(days=5),
        acknowledged_at=acked,
        status_at=acked,
    )
    events = [
        Event(Status.ACCEPTED, at, "TRANSFER", "00", "Transferred to recipient mailbox"),
        Event(Status.ACKNOWLEDGED, acked),
    ]
    return message, events


def seed(data_dir: Path, count: int, mailboxes: list[str], workflow_id: str = "LOAD_TEST") -> float:
    """Insert `count` acknowledged messages between the mailboxes; returns rows per second."""
    path = data_dir / "mesh.sqlite3"
    store = SqliteStore(path)
    asyncio.run(store.open())  # creates and migrates the schema
    asyncio.run(store.close())
    sql = queries.load("sqlite.sql")
    rng = random.Random(20261125)
    now = datetime.now(UTC)
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        done = 0
        while done < count:
            size = min(BATCH, count - done)
            rows, chunks, events = [], [], []
            for _ in range(size):
                at = now - timedelta(seconds=rng.uniform(3600, 4 * 86_400))
                message, history = acknowledged(rng.choice(mailboxes), rng.choice(mailboxes), at, workflow_id)
                rows.append(message_values(message, to_micros))
                # 1 KiB, kept in the chunk row as the broker keeps it (MESH_INLINE_CHUNK_BYTES).
                chunks.append(chunk_values(Chunk.inline(message.message_id, 1, PAYLOAD, PAYLOAD_SHA256)))
                events += [event_values(message.message_id, event) for event in history]
            conn.execute("BEGIN")
            conn.executemany(sql["insert_message"], rows)
            conn.executemany(sql["insert_chunk"], chunks)
            conn.executemany(sql["insert_event"], events)
            conn.execute("COMMIT")
            done += size
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return count / (time.perf_counter() - started)


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
