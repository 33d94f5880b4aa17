"""Clients that misbehave on purpose, over raw sockets: what aiohttp's client will not do (stall, drip, vanish)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.broker_process import HOST
from tests.support import Tokens

V2 = "application/vnd.mesh.v2+json"


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def abort(self) -> None:
        """Vanish: a reset, no goodbye."""
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()


async def connect(port: int, source: str = HOST, *, receive_buffer: int | None = None) -> Connection:
    """A TCP connection to the broker on 127.0.0.1 from `source` (another loopback address stands for another
    client machine); receive_buffer shrinks the kernel's buffer so a client that reads nothing stalls sooner."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    # A small stream buffer: a client that stops reading stops taking bytes after 8 KiB, not 128 KiB.
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    return Connection(reader, writer)


def head(method: str, path: str, tokens: Tokens, extra: dict[str, str] | None = None) -> bytes:
    """A request head with a fresh NHSMESH token for tokens' mailbox."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: {tokens()}", f"Accept: {V2}"]
    lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def send_head(tokens: Tokens, recipient: str, length: int) -> bytes:
    """The head of a send (POST /outbox) of a body of `length` bytes."""
    return head(
        "POST",
        f"/messageexchange/{tokens.mailbox_id}/outbox",
        tokens,
        {
            "mex-To": recipient,
            "mex-WorkflowID": "HOSTILE_TEST",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
        },
    )


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_answer(connection: Connection) -> Answer:
    """One HTTP response with a Content-Length body (what the broker sends for every answer but a download)."""
    raw = await connection.reader.readuntil(b"\r\n\r\n")
    status_line, *lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await connection.reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(status_line.split()[1]), headers, body)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text as {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of name's samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in metrics.items() if sample == name and wanted <= have)
