"""Capacity planning figures (docs/operations.md): what one message costs each store.

For each backend (embedded: SQLite + files; postgres+s3: a throwaway PostgreSQL cluster and moto's S3) and each
message size (1 KiB: kept inline in its metadata row; 100 KiB: in the blob store), an in-process broker takes N
messages sent, then listed, downloaded and acknowledged, after a warm-up. Reported per message:

- bytes the metadata store grew by once the messages were accepted, and once acknowledged (SQLite: the database
  and its write-ahead log after a checkpoint; PostgreSQL: pg_database_size), and bytes in the blob store;
- blob store operations (the broker's mesh_blob_operation_duration_seconds counts) per send, download and
  acknowledgement;
- PostgreSQL transactions (pg_stat_database.xact_commit) and rows written (tup_inserted + tup_updated +
  tup_deleted) per send, download and acknowledgement. Every request also writes its token to the replay cache.
- PostgreSQL round trips (a counting proxy in front of the database, pg_round_trips.py) per request (send,
  download, acknowledgement, and the first, middle and last chunk of three-chunk messages) and per store write
  (the create_message, add_chunk and acknowledge calls those requests make, the rest being the token and lookups).

    .venv/bin/python benchmarks/capacity.py --messages 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from broker.app import create_app
from broker.auth import make_token
from broker.keys import METRICS, STORE
from broker.settings import Settings
from pg_round_trips import ProxiedDatabase, counting_proxy

SENDER, RECIPIENT = "X26ABC1", "X26ABC2"
V2 = "application/vnd.mesh.v2+json"
WARM_UP = 20
SIZES = {"1KiB": 1024, "100KiB": 100 * 1024}
#: The chunked messages' chunk count: a first, a middle and a last chunk, each counted.
CHUNKS = 3
#: A busy backend adds its counts to pg_stat_database at most once a second, an idle one within 10 s
#: (PGSTAT_IDLE_INTERVAL): wait that long, so each phase's counts land in that phase.
STATS_FLUSH_SECONDS = 11.0


class Tokens:
    def __init__(self, mailbox: str):
        self.mailbox, self.nonce, self.counter = mailbox, str(uuid.uuid4()), itertools.count()

    def __call__(self) -> dict[str, str]:
        token = make_token(
            b"TestKey", self.mailbox, "password", nonce=self.nonce, nonce_count=next(self.counter), at=datetime.now(UTC)
        )
        return {"Authorization": token, "Accept": V2}


async def send(client: TestClient, tokens: Tokens, body: bytes) -> str:
    headers = {
        **tokens(),
        "mex-To": RECIPIENT,
        "mex-WorkflowID": "TEST_WORKFLOW",
        "Content-Type": "application/octet-stream",
    }
    response = await client.post(f"/messageexchange/{SENDER}/outbox", data=body, headers=headers)
    assert response.status == 202, await response.text()
    return str((await response.json())["message_id"])


async def send_chunked(client: TestClient, tokens: Tokens, body: bytes) -> str:
    """A message in CHUNKS chunks: its first POST (the message row, chunk 1) only."""
    headers = {
        **tokens(),
        "mex-To": RECIPIENT,
        "mex-WorkflowID": "TEST_WORKFLOW",
        "mex-Chunk-Range": f"1:{CHUNKS}",
        "Content-Type": "application/octet-stream",
    }
    response = await client.post(f"/messageexchange/{SENDER}/outbox", data=body, headers=headers)
    assert response.status == 202, await response.text()
    return str((await response.json())["message_id"])


async def upload_chunk(client: TestClient, tokens: Tokens, message_id: str, number: int, body: bytes) -> None:
    """Chunk `number` of CHUNKS, with its Content-Length (as the official clients send every chunk)."""
    headers = {**tokens(), "mex-Chunk-Range": f"{number}:{CHUNKS}", "Content-Type": "application/octet-stream"}
    response = await client.post(f"/messageexchange/{SENDER}/outbox/{message_id}/{number}", data=body, headers=headers)
    assert response.status == 202, await response.text()


async def download(client: TestClient, tokens: Tokens, message_id: str) -> None:
    headers = {**tokens(), "Accept-Encoding": "identity"}
    response = await client.get(f"/messageexchange/{RECIPIENT}/inbox/{message_id}", headers=headers)
    assert response.status == 200, await response.text()
    await response.read()


async def acknowledge(client: TestClient, tokens: Tokens, message_id: str) -> None:
    path = f"/messageexchange/{RECIPIENT}/inbox/{message_id}/status/acknowledged"
    response = await client.put(path, headers=tokens())
    assert response.status == 200, await response.text()


def blob_operations(app: Any) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in app[METRICS].registry.collect():
        for sample in family.samples:
            if sample.name == "mesh_blob_operation_duration_seconds_count":
                counts[sample.labels["operation"]] = counts.get(sample.labels["operation"], 0.0) + sample.value
    return counts


class Meter:
    """Before/after readings of one backend."""

    def __init__(self, app: Any, settings: Settings, pg_dsn: str | None):
        self.app, self.settings, self.pg_dsn = app, settings, pg_dsn

    async def metadata_bytes(self) -> int:
        """PostgreSQL's database size; for SQLite the files after the store has closed (checkpointed: see
        embedded_bytes), so 0 here."""
        if self.pg_dsn is None:
            return 0
        return int((await self.app[STORE].storage_bytes())["database"])

    async def blob_bytes(self) -> int:
        if self.pg_dsn is None:
            folder = self.settings.data_dir / "blobs"
            return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        import aiobotocore.session

        bucket, _, prefix = self.settings.blob_url.removeprefix("s3://").partition("/")
        total = 0
        session = aiobotocore.session.get_session()
        async with session.create_client(
            "s3", endpoint_url=self.settings.s3_endpoint_url, region_name=self.settings.s3_region
        ) as s3:
            async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                total += sum(item["Size"] for item in page.get("Contents", []))
        return total

    async def database_activity(self) -> dict[str, int]:
        if self.pg_dsn is None:
            return {}
        await asyncio.sleep(STATS_FLUSH_SECONDS)
        conn = await asyncpg.connect(self.pg_dsn)
        try:
            row = await conn.fetchrow(
                "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS rows_written "
                "FROM pg_stat_database WHERE datname = current_database()"
            )
        finally:
            await conn.close()
        return {"transactions": int(row["xact_commit"]), "rows_written": int(row["rows_written"])}


def embedded_bytes(settings: Settings) -> int:
    """The SQLite files (metadata and replay cache) once no connection is open: the write-ahead logs are
    checkpointed into them and removed on close."""
    return sum(p.stat().st_size for p in settings.data_dir.glob("*.sqlite3*"))


def per(after: dict[str, float], before: dict[str, float], n: int) -> dict[str, float]:
    return {k: round((after.get(k, 0) - before.get(k, 0)) / n, 2) for k in after if after.get(k, 0) != before.get(k, 0)}


class RoundTrips:
    """PostgreSQL round trips per request and per store write, counted by a proxy (pg_round_trips.py); the
    requests run one at a time, so what the proxy counts during a store call is that call's."""

    WRITES = ("create_message", "add_chunk", "acknowledge")

    def __init__(self, proxy: ProxiedDatabase | None):
        self.proxy = proxy
        self.per_write: dict[str, list[int]] = {name: [] for name in self.WRITES}

    def count_writes(self, store: Any) -> None:
        if self.proxy is None:
            return
        for name in self.WRITES:
            setattr(store, name, self._counted(name, getattr(store, name)))

    def _counted(self, name: str, method: Any) -> Any:
        proxy, found = self.proxy, self.per_write[name]
        assert proxy is not None

        async def counted(*args: Any, **kwargs: Any) -> Any:
            before = proxy.round_trips
            try:
                return await method(*args, **kwargs)
            finally:
                found.append(proxy.round_trips - before)

        return counted

    def now(self) -> int:
        return 0 if self.proxy is None else self.proxy.round_trips

    def writes(self) -> dict[str, float]:
        """Round trips per call of each store write, over the calls since the last reading."""
        figures = {name: round(sum(calls) / len(calls), 2) for name, calls in self.per_write.items() if calls}
        for calls in self.per_write.values():
            calls.clear()
        return figures


@asynccontextmanager
async def round_trips(pg_dsn: str | None) -> AsyncIterator[RoundTrips]:
    if pg_dsn is None:
        yield RoundTrips(None)
        return
    async with counting_proxy(pg_dsn) as proxy:
        yield RoundTrips(proxy)


async def cycles(settings: Settings, pg_dsn: str | None, size: int, n: int) -> dict[str, Any]:
    """n messages sent, then downloaded, then acknowledged, after a warm-up; the figures per message. On
    PostgreSQL, then n messages in two chunks, for the round trips of a chunk's upload."""
    async with round_trips(pg_dsn) as trips:
        if trips.proxy is not None:
            settings = settings.with_(database_url=trips.proxy.dsn)
        return await _cycles(settings, pg_dsn, size, n, trips)


async def _cycles(settings: Settings, pg_dsn: str | None, size: int, n: int, trips: RoundTrips) -> dict[str, Any]:
    app = create_app(settings)
    figures: dict[str, Any] = {}
    async with TestClient(TestServer(app)) as client:
        trips.count_writes(app[STORE])
        sender, receiver = Tokens(SENDER), Tokens(RECIPIENT)
        meter = Meter(app, settings, pg_dsn)
        for _ in range(WARM_UP):
            message_id = await send(client, sender, os.urandom(size))
            await download(client, receiver, message_id)
            await acknowledge(client, receiver, message_id)
        start = (
            await meter.metadata_bytes(),
            await meter.blob_bytes(),
            blob_operations(app),
            await meter.database_activity(),
        )
        trips.writes()
        counted = trips.now()
        ids = [await send(client, sender, os.urandom(size)) for _ in range(n)]
        trip_figures = {"send": round((trips.now() - counted) / n, 2)}
        sent = (
            await meter.metadata_bytes(),
            await meter.blob_bytes(),
            blob_operations(app),
            await meter.database_activity(),
        )
        counted = trips.now()
        for message_id in ids:
            await download(client, receiver, message_id)
        trip_figures["download"] = round((trips.now() - counted) / n, 2)
        downloaded = (blob_operations(app), await meter.database_activity())
        counted = trips.now()
        for message_id in ids:
            await acknowledge(client, receiver, message_id)
        trip_figures["acknowledgement"] = round((trips.now() - counted) / n, 2)
        acked = (await meter.metadata_bytes(), blob_operations(app), await meter.database_activity())
        if trips.proxy is not None:
            write_figures = trips.writes()
            counted = trips.now()
            chunked = [await send_chunked(client, sender, os.urandom(size)) for _ in range(n)]
            trip_figures["first_chunk"] = round((trips.now() - counted) / n, 2)
            for number, name in ((2, "middle_chunk"), (3, "last_chunk")):
                counted = trips.now()
                for message_id in chunked:
                    await upload_chunk(client, sender, message_id, number, os.urandom(size))
                trip_figures[name] = round((trips.now() - counted) / n, 2)
            figures["postgres_round_trips_per_request"] = trip_figures
            write_figures["add_chunk"] = trips.writes().get("add_chunk", 0.0)
            figures["postgres_round_trips_per_store_write"] = write_figures
        if pg_dsn is not None:
            figures["metadata_bytes_per_message"] = round((acked[0] - start[0]) / n)
        figures["blob_bytes_per_message"] = round((sent[1] - start[1]) / n)
        figures["blob_operations_per_send"] = per(sent[2], start[2], n)
        figures["blob_operations_per_download"] = per(downloaded[0], sent[2], n)
        figures["blob_operations_per_acknowledgement"] = per(acked[1], downloaded[0], n)
        if pg_dsn is not None:
            figures["postgres_per_send"] = per(sent[3], start[3], n)
            figures["postgres_per_download"] = per(downloaded[1], sent[3], n)
            figures["postgres_per_acknowledgement"] = per(acked[2], downloaded[1], n)
            figures["postgres_per_message_cycle"] = per(acked[2], start[3], n)
    return figures


async def measure(settings: Settings, pg_dsn: str | None, size: int, n: int) -> dict[str, Any]:
    if pg_dsn is not None:
        return await cycles(settings, pg_dsn, size, n)
    # SQLite: the same run twice, with WARM_UP and with n more messages; the difference in the closed files'
    # size is what the n messages take.
    baseline = settings.with_(data_dir=settings.data_dir.with_name("baseline"))
    await cycles(baseline, None, size, 1)
    figures = await cycles(settings, None, size, n)
    figures["metadata_bytes_per_message"] = round((embedded_bytes(settings) - embedded_bytes(baseline)) / (n - 1))
    return figures


@contextmanager
def production() -> Iterator[tuple[str, str]]:
    """(admin DSN, S3 endpoint) of throwaway servers."""
    from broker.devsupport import pg_server, s3_server

    with pg_server.cluster() as admin_dsn, s3_server.moto_server() as endpoint:
        os.environ.update(s3_server.fake_credentials())
        pg_server.prepare_template(admin_dsn)
        yield admin_dsn, endpoint


@asynccontextmanager
async def backend_settings(
    name: str, folder: Path, servers: tuple[str, str] | None
) -> AsyncIterator[tuple[Settings, str | None]]:
    base = Settings(data_dir=folder, shared_key="TestKey", demo=True, housekeeping_interval=Settings().retention)
    if name == "embedded":
        yield base, None
        return
    from broker.devsupport import pg_server, s3_server

    assert servers is not None
    admin_dsn, endpoint = servers
    dsn = await pg_server.clone_database(admin_dsn)
    bucket = await s3_server.create_bucket(endpoint)
    yield (
        base.with_(
            database_url=dsn, blob_url=f"s3://{bucket}/capacity", s3_endpoint_url=endpoint, s3_region=s3_server.REGION
        ),
        dsn,
    )


async def one(name: str, folder: Path, servers: tuple[str, str] | None, size: int, n: int) -> dict[str, Any]:
    async with backend_settings(name, folder, servers) as (settings, dsn):
        return await measure(settings, dsn, size, n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--backend", choices=("embedded", "postgres+s3", "both"), default="both")
    args = parser.parse_args()
    backends = ["embedded", "postgres+s3"] if args.backend == "both" else [args.backend]
    results: dict[str, Any] = {}
    with production() if "postgres+s3" in backends else contextlib.nullcontext() as servers:
        for name in backends:
            for label, size in SIZES.items():
                with tempfile.TemporaryDirectory(prefix="mesh-capacity-") as folder:
                    key = f"{name} {label}"
                    results[key] = asyncio.run(one(name, Path(folder) / "data", servers, size, args.messages))
                    print(f"{key}: {json.dumps(results[key])}", flush=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
