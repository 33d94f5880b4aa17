"""/readyz of a real broker process on PostgreSQL: 503 naming the database while the server is stopped."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg

from broker.devsupport import pg_server
from tests.integration.broker_process import HOST, SHARED_KEY, BrokerProcess, free_port


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def stop_postgres(admin_dsn: str) -> None:
    """pg_ctl stop (fast: open connections are ended, as when the server goes down) on the cluster behind dsn."""

    async def data_directory() -> str:
        connection = await asyncpg.connect(admin_dsn)
        try:
            return str(await connection.fetchval("SHOW data_directory"))
        finally:
            await connection.close()

    command = [pg_server.server_binary("pg_ctl"), "-D", asyncio.run(data_directory()), "-m", "fast", "-w", "stop"]
    if os.geteuid() == 0:  # the cluster runs as postgres (pg_server.cluster)
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def test_readiness_fails_while_postgresql_is_stopped(tmp_path: Path) -> None:
    # A cluster of its own: stopping the session's would fail every other PostgreSQL test.
    with pg_server.cluster() as admin_dsn:
        ops_port = free_port()
        broker = BrokerProcess(
            data_dir=tmp_path / "data",
            env={
                "MESH_SHARED_KEY": SHARED_KEY,
                "MESH_DEMO": "on",
                "MESH_DATABASE_URL": admin_dsn,
                "MESH_METRICS_PORT": str(ops_port),
                "MESH_READINESS_TIMEOUT_SECONDS": "1",
            },
        )
        with broker:
            assert get(broker.port, "/readyz") == (
                200,
                {"status": "ready", "checks": {"database": "ok", "blob_store": "ok"}},
            )

            stop_postgres(admin_dsn)

            deadline = time.monotonic() + 15
            while (found := get(ops_port, "/readyz"))[0] == 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            status, body = found
            assert status == 503
            assert body["status"] == "unavailable"
            assert body["failed"] == ["database"]
            assert body["checks"]["blob_store"] == "ok"  # files in the data dir: still there
            assert body["checks"]["database"] != "ok"
            assert get(broker.port, "/readyz")[1]["failed"] == ["database"]  # the MESH port says the same
            # Alive all the same: restarting the node would not bring the database back.
            assert get(broker.port, "/livez") == (200, {"status": "alive"})
            assert get(ops_port, "/livez")[0] == 200
