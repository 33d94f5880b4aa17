"""A real S3 endpoint for tests and benchmarks: moto's server mode in a subprocess on 127.0.0.1, fake credentials."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

#: moto accepts any credentials; botocore only needs some to sign with.
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def fake_credentials() -> dict[str, str]:
    """Variables for botocore's credential chain, so no real profile or token is ever picked up."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with code {process.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"moto server at {url} did not answer within {timeout} s")


@contextlib.contextmanager
def moto_server(*, timeout: float = 20.0) -> Iterator[str]:
    """Start `python -m moto.server` on a free port, yield its endpoint URL, stop it afterwards."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **fake_credentials()}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_up(url, process, timeout)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def create_bucket(endpoint: str) -> str:
    """A fresh, uniquely named bucket on the endpoint.

    A plain unsigned PUT: moto's server does not check signatures, and building a botocore client for it loads the
    S3 service model again each time (about a second of CPU per bucket, paid by every PostgreSQL + S3 test)."""
    import uuid

    import aiohttp

    name = f"mesh-{uuid.uuid4().hex[:16]}"
    async with aiohttp.ClientSession() as session, session.put(f"{endpoint}/{name}") as response:
        if response.status != 200:
            raise RuntimeError(f"creating bucket {name} at {endpoint}: HTTP {response.status} {await response.text()}")
    return name
