"""Small helpers shared by the API tests: mailbox names, error-body unpacking and common calls."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientResponse

from tests.support import Mesh

MB1, MB2, MB3 = "X26ABC1", "X26ABC2", "X26ABC3"
MESSAGE_ID = r"^\d{20}_[0-9A-F]{6}$"


async def body_of(response: ClientResponse) -> Any:
    """The JSON body of a response, whatever its content type."""
    return await response.json(content_type=None)


def v1_error(body: Any) -> tuple[str, str, str]:
    return body["errorEvent"], body["errorCode"], body["errorDescription"]


def v2_error(body: Any) -> tuple[str, str, str]:
    (detail,) = body["detail"]
    return detail["event"], detail["code"], detail["msg"]


async def send_chunk(
    mesh: Mesh, message_id: str, number: int, total: int, data: bytes, extra: dict[str, str] | None = None
) -> ClientResponse:
    headers = {"mex-Chunk-Range": f"{number}:{total}", "Content-Type": "application/octet-stream"}
    headers.update(extra or {})
    return await mesh.client.post(f"{mesh.base}/outbox/{message_id}/{number}", data=data, headers=mesh.headers(headers))


async def start_chunked(mesh: Mesh, to: str, data: bytes, total: int, extra: dict[str, str] | None = None) -> str:
    """Send chunk 1 of `total`; returns the message ID."""
    return await mesh.send_ok(to, data, extra={"mex-Chunk-Range": f"1:{total}", **(extra or {})})


async def download(mesh: Mesh, message_id: str, number: int | None = None, **kw: Any) -> ClientResponse:
    path = f"{mesh.base}/inbox/{message_id}" + ("" if number is None else f"/{number}")
    headers = mesh.headers(kw.pop("headers", None))
    return await mesh.client.get(path, headers=headers, **kw)


async def head(mesh: Mesh, message_id: str) -> ClientResponse:
    return await mesh.client.head(f"{mesh.base}/inbox/{message_id}", headers=mesh.headers())


async def ack(mesh: Mesh, message_id: str) -> ClientResponse:
    return await mesh.client.put(f"{mesh.base}/inbox/{message_id}/status/acknowledged", headers=mesh.headers())


async def inbox_ids(mesh: Mesh, query: str = "") -> list[str]:
    response = await mesh.client.get(f"{mesh.base}/inbox{query}", headers=mesh.headers())
    assert response.status == 200, await response.text()
    return list((await body_of(response))["messages"])


async def track(mesh: Mesh, message_id: str) -> ClientResponse:
    return await mesh.client.get(
        f"{mesh.base}/outbox/tracking", params={"messageID": message_id}, headers=mesh.headers()
    )


async def tracking_status(mesh: Mesh, message_id: str) -> str:
    response = await track(mesh, message_id)
    assert response.status == 200, await response.text()
    return str((await body_of(response))["status"])
