"""The ceiling: a bare aiohttp server answering the locustfile's MESH requests from memory, checking nothing.

No authentication, no validation, no durability, no logging, no metrics: a dict of inboxes and the bytes in
memory, on uvloop and orjson like the broker. Whatever rate it reaches under benchmarks/locustfile.py on this
machine is what the load generator and one Python event loop allow; `load.py --ceiling` runs it in the same
run as the broker so the broker's figures can be read as a fraction of it.

    .venv/bin/python benchmarks/bare_server.py PORT
"""

from __future__ import annotations

import itertools
import sys
from collections import defaultdict
from datetime import UTC, datetime

import orjson
import uvloop
from aiohttp import web

MX = "/messageexchange"


def build() -> web.Application:
    counter = itertools.count()
    inboxes: dict[str, dict[str, None]] = defaultdict(dict)  # recipient -> message IDs in arrival order
    chunks: dict[str, list[bytes]] = {}
    totals: dict[str, int] = {}
    recipients: dict[str, str] = {}

    def new_id() -> str:
        return f"{datetime.now(UTC):%Y%m%d%H%M%S%f}_{next(counter) % 1_000_000:06d}"

    def json(body: object, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    async def send(request: web.Request) -> web.Response:
        message_id = new_id()
        total = int((request.headers.get("mex-Chunk-Range") or "1:1").split(":")[1])
        chunks[message_id] = [await request.read()]
        totals[message_id] = total
        recipients[message_id] = request.headers["mex-To"]
        if total == 1:
            inboxes[request.headers["mex-To"]][message_id] = None
        return json({"message_id": message_id}, 202)

    async def chunk(request: web.Request) -> web.Response:
        message_id = request.match_info["message_id"]
        chunks[message_id].append(await request.read())
        if len(chunks[message_id]) == totals[message_id]:
            inboxes[recipients[message_id]][message_id] = None
        return json({"message_id": message_id}, 202)

    async def inbox(request: web.Request) -> web.Response:
        ids = list(itertools.islice(inboxes[request.match_info["mailbox_id"]], 100))
        return json({"messages": ids, "approx_inbox_count": len(ids), "links": {}})

    async def download(request: web.Request) -> web.Response:
        message_id = request.match_info["message_id"]
        number = int(request.match_info.get("chunk", "1"))
        total = totals[message_id]
        status = 206 if number < total else 200
        headers = {"mex-Chunk-Range": f"{number}:{total}", "mex-MessageID": message_id}
        return web.Response(body=chunks[message_id][number - 1], status=status, headers=headers)

    async def acknowledge(request: web.Request) -> web.Response:
        message_id = request.match_info["message_id"]
        inboxes[request.match_info["mailbox_id"]].pop(message_id, None)
        chunks.pop(message_id, None)
        return json({"message_id": message_id})

    async def tracking(request: web.Request) -> web.Response:
        return json({"message_id": request.query["messageID"], "status": "accepted"})

    async def ping(request: web.Request) -> web.Response:
        return json({"status": "ok"})

    app = web.Application()
    mb = MX + "/{mailbox_id}"
    app.router.add_get(MX + "/_ping", ping)
    app.router.add_post(mb + "/outbox", send)
    app.router.add_post(mb + "/outbox/{message_id}/{chunk}", chunk)
    app.router.add_get(mb + "/outbox/tracking", tracking)
    app.router.add_get(mb + "/inbox", inbox)
    app.router.add_get(mb + "/inbox/{message_id}", download)
    app.router.add_get(mb + "/inbox/{message_id}/{chunk:\\d+}", download)
    app.router.add_put(mb + "/inbox/{message_id}/status/acknowledged", acknowledge)
    return app


if __name__ == "__main__":
    uvloop.install()
    web.run_app(build(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
