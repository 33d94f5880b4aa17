"""A throwaway PostgreSQL cluster for tests and benchmarks, from the server binaries on PATH or MESH_TEST_DATABASE_URL.

The cluster lives in a temp folder owned by the `postgres` user when the tests run as root (PostgreSQL
refuses to run as root), listens on 127.0.0.1 only, and is stopped and removed at the end of the session.
Each test gets a fresh database cloned from a template that already holds the migrated schema.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from broker.store.postgres import PostgresStore

TEMPLATE = "mesh_template"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def server_binary(name: str) -> str:
    """A PostgreSQL server program: from PATH, else from Debian's versioned folder (the `postgresql` package
    installs there and puts only the client programs on PATH); the newest version wins."""
    found = shutil.which(name)
    if found:
        return found
    debian = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    if debian:
        return str(debian[-1])
    raise RuntimeError(
        f"PostgreSQL's {name} is neither on PATH nor under /usr/lib/postgresql (make test installs Debian's "
        "postgresql package); or set MESH_TEST_DATABASE_URL to a server the tests may create databases on"
    )


@dataclass
class Cluster:
    """A local cluster this process made; stop() and start() play a database outage on the same port and data."""

    root: Path
    port: int
    env: dict[str, str]

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
        self._pg_ctl("-o", options, "-l", str(self.root / "log"), "-w", "start", check=True)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl's shutdown modes: "fast" ends every session (clients see their connection closed), "immediate"
        is a crash (recovery on the next start)."""
        self._pg_ctl("-m", mode, "-w", "stop", check=False)

    @property
    def running(self) -> bool:
        return self._pg_ctl("status", check=False) == 0

    def _pg_ctl(self, *args: str, check: bool) -> int:
        command = _as_postgres([server_binary("pg_ctl"), "-D", str(self.root / "data"), *args])
        return subprocess.run(command, check=check, capture_output=True, env=self.env).returncode


#: Room a throwaway cluster may take in memory: a test session clones a database (about 11 MiB) per test.
MEMORY_FOLDER_NEEDS = 4 << 30


def scratch_folder() -> str | None:
    """Where a throwaway cluster keeps its files: /dev/shm (memory) when it is a tmpfs with room, else the default
    temp folder. Its data is discarded anyway (fsync is off), and on a disk mounted with `discard`, as these machines'
    root is, removing a session's hundreds of cloned databases took 25 s a test worker; in memory it takes under
    one, and cloning a database is faster too."""
    memory = Path("/dev/shm")
    try:
        room = shutil.disk_usage(memory).free
    except OSError:
        return None
    return str(memory) if room >= MEMORY_FOLDER_NEEDS and os.access(memory, os.W_OK) else None


@contextmanager
def own_cluster() -> Iterator[Cluster]:
    """A running cluster of the caller's own, always local (MESH_TEST_DATABASE_URL is not used: a test may stop
    and start this one); stopped and removed afterwards."""
    initdb = server_binary("initdb")
    root = Path(tempfile.mkdtemp(prefix="mesh-pg-", dir=scratch_folder()))
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    subprocess.run(
        _as_postgres([initdb, "-D", str(root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]),
        check=True,
        capture_output=True,
        env=env,
    )
    running = Cluster(root, _free_port(), env)
    running.start()
    try:
        yield running
    finally:
        running.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def cluster() -> Iterator[str]:
    """Yield an admin DSN (database `postgres`) for a running cluster; stop and remove it afterwards."""
    given = os.environ.get("MESH_TEST_DATABASE_URL")
    if given:
        yield given
        return
    with own_cluster() as running:
        yield running.admin_dsn


def with_database(dsn: str, database: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/" + database


async def create_template(admin_dsn: str) -> None:
    """Create the template database and migrate it once; clones then start with the schema in place."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await conn.close()
    store = PostgresStore(with_database(admin_dsn, TEMPLATE), min_size=1, max_size=1)
    await store.open()
    await store.close()


async def clone_database(admin_dsn: str, template: str = TEMPLATE) -> str:
    """A fresh database cloned from a template (by default the migrated one; `template0` for an empty
    database); returns its DSN."""
    name = f"mesh_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, dsn: str) -> None:
    """Drop a database clone_database made, ending any session still on it."""
    name = dsn.rsplit("/", 1)[1]
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


def prepare_template(admin_dsn: str) -> None:
    """Synchronous, and safe to call from inside a running event loop (session fixtures are started lazily)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create_template(admin_dsn)).result()
