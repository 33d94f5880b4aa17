"""Raw HTTP/1.1 requests (header bytes as given, not UTF-8 encoded strings) and the check that an answer is MESH's."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

#: Bytes an HTTP field value may hold (RFC 9110: VCHAR, obs-text, space and tab). Anything else is refused by
#: aiohttp's HTTP parser with its own 400 before the broker sees the request, so it is not fuzzed here.
FIELD_VALUE_BYTES = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
_ALLOWED = frozenset(FIELD_VALUE_BYTES)


def field_value(data: bytes) -> bytes:
    """data with the bytes a field value may not hold removed."""
    return bytes(b for b in data if b in _ALLOWED)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def raw_request(
    port: int, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> Answer:
    """Send one request on its own connection (Connection: close) and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
        head.append(b"Content-Length: %d" % len(body))
        head.extend(name + b": " + value for name, value in headers)
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    return _parse(data)


def _parse(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding") == b"chunked":
        body = _dechunk(body)
    return Answer(int(status_line.split()[1]), headers, body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def assert_mesh_answer(answer: Answer) -> None:
    """Below 500, and an error body in one of the shapes MESH clients read (mesh-api.md section 6): v1
    errorEvent/errorCode/errorDescription, v2 detail[{event, code, msg}], validation detail[{type, loc, msg}],
    or a route's {"detail": reason}."""
    assert answer.status < 500, answer
    if answer.status < 400:
        return
    body = answer.json()
    assert isinstance(body, dict), answer
    if "errorDescription" in body:
        assert all(isinstance(body[key], str) for key in ("errorEvent", "errorCode", "errorDescription")), answer
        return
    detail = body.get("detail")
    if isinstance(detail, str):
        return
    assert isinstance(detail, list) and detail, answer
    for entry in detail:
        assert isinstance(entry.get("msg"), str), answer
        assert {"event", "code"} <= entry.keys() or {"type", "loc"} <= entry.keys(), answer
