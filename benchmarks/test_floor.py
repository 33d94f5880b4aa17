"""The floor servers of benchmarks/floor.py do what its figures claim: `auth` refuses what the NHSMESH contract
refuses (a wrong HMAC, a token used twice, a stale clock, another mailbox's path), and `durable` has the message
and the token in its SQLite file before it answers. A floor that skipped a check would look cheaper than it is.

Collected by the project's pytest run (testpaths), like benchmarks/test_budget.py.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from broker.auth import make_token
from floor import MX, PASSWORD, SHARED_KEY, build

V2 = "application/vnd.mesh.v2+json"


def tokens(mailbox: str) -> Callable[..., str]:
    counts = itertools.count()

    def token(*, key: bytes = SHARED_KEY, at: datetime | None = None) -> str:
        when = at or datetime.now(UTC)
        return make_token(key, mailbox, PASSWORD, nonce="floor-test", nonce_count=next(counts), at=when)

    return token


@pytest.fixture(params=["auth", "durable"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TestClient]:
    app = build(request.param, tmp_path)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def send(client: TestClient, authorization: str, sender: str = "A1") -> int:
    headers = {"Authorization": authorization, "Accept": V2, "mex-To": "B1", "mex-WorkflowID": "W"}
    response = await client.post(f"{MX}/{sender}/outbox", data=b"body", headers=headers)
    return response.status


async def test_a_good_token_is_served_once(client: TestClient) -> None:
    token = tokens("A1")
    first = token()
    assert await send(client, first) == 202
    assert await send(client, first) == 403  # the same token again: a replay


@pytest.mark.parametrize(
    "spoil",
    [
        lambda token: token(key=b"NotTheKey"),
        lambda token: token(at=datetime.now(UTC) - timedelta(hours=3)),
        lambda token: token().replace("NHSMESH ", "Basic "),
        lambda token: token().rsplit(":", 1)[0],
    ],
    ids=["wrong-key", "stale", "scheme", "four-parts"],
)
async def test_what_the_contract_refuses_is_refused(client: TestClient, spoil: Callable[..., str]) -> None:
    assert await send(client, spoil(tokens("A1"))) == 403


async def test_another_mailboxs_path_is_refused(client: TestClient) -> None:
    assert await send(client, tokens("A1")(), sender="B1") == 403


async def test_durable_keeps_the_message_and_the_token_before_it_answers(tmp_path: Path) -> None:
    async with TestClient(TestServer(build("durable", tmp_path))) as client:
        sender, recipient = tokens("A1"), tokens("B1")
        assert await send(client, sender()) == 202
        with sqlite3.connect(tmp_path / "floor.sqlite") as conn:
            assert conn.execute("SELECT recipient, status, body FROM messages").fetchall() == [
                ("B1", "accepted", b"body")
            ]
            assert conn.execute("SELECT count(*) FROM tokens").fetchone() == (1,)
        listed = await client.get(f"{MX}/B1/inbox", headers={"Authorization": recipient(), "Accept": V2})
        (message_id,) = (await listed.json())["messages"]
        download = await client.get(f"{MX}/B1/inbox/{message_id}", headers={"Authorization": recipient()})
        assert await download.read() == b"body"
        url = f"{MX}/B1/inbox/{message_id}/status/acknowledged"
        assert (await client.put(url, headers={"Authorization": recipient()})).status == 200
        with sqlite3.connect(tmp_path / "floor.sqlite") as conn:
            assert conn.execute("SELECT status FROM messages").fetchall() == [("acknowledged",)]
