"""Helpers for tests: NHSMESH tokens, and a thin MESH caller over aiohttp's test client."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient

from broker.auth import make_token
from broker.clock import Clock

SHARED_KEY = b"TestKey"
V1 = "application/vnd.mesh.v1+json"
V2 = "application/vnd.mesh.v2+json"


class Tokens:
    """Fresh tokens for one mailbox, the way mesh-client makes them: one nonce, an increasing count."""

    def __init__(self, mailbox_id: str, password: str = "password", shared_key: bytes = SHARED_KEY):
        self.mailbox_id = mailbox_id
        self.password = password
        self.shared_key = shared_key
        self.nonce = str(uuid.uuid4())
        self._count = itertools.count()

    def __call__(self, *, at: datetime | None = None, password: str | None = None) -> str:
        return make_token(
            self.shared_key,
            self.mailbox_id,
            self.password if password is None else password,
            nonce=self.nonce,
            nonce_count=next(self._count),
            at=at or datetime.now(UTC),
        )


class Mesh:
    """Calls the API as one mailbox with fresh tokens; `accept` picks v1 or v2. With a clock (the app's
    ManualClock), tokens are dated by it, so they stay inside the broker's skew window as the clock moves."""

    def __init__(
        self,
        client: TestClient,
        mailbox_id: str,
        password: str = "password",
        accept: str = V2,
        clock: Clock | None = None,
    ):
        self.client = client
        self.mailbox_id = mailbox_id
        self.tokens = Tokens(mailbox_id, password)
        self.accept = accept
        self.clock = clock

    def headers(self, extra: dict[str, str] | None = None, *, accept: str | None = None) -> dict[str, str]:
        token = self.tokens(at=None if self.clock is None else self.clock.now())
        headers = {"Authorization": token, "Accept": accept or self.accept}
        headers.update(extra or {})
        return headers

    @property
    def base(self) -> str:
        return f"/messageexchange/{self.mailbox_id}"

    async def send(
        self, to: str, data: bytes, workflow_id: str = "TEST_WORKFLOW", extra: dict[str, str] | None = None, **kw: Any
    ) -> Any:
        headers = {"mex-To": to, "mex-WorkflowID": workflow_id, "Content-Type": "application/octet-stream"}
        headers.update(extra or {})
        return await self.client.post(f"{self.base}/outbox", data=data, headers=self.headers(headers), **kw)

    async def send_ok(self, to: str, data: bytes, **kw: Any) -> str:
        response = await self.send(to, data, **kw)
        assert response.status == 202, await response.text()
        body = await response.json()
        return str(body.get("message_id") or body.get("messageID"))


#: What every official client sends on a handshake (the broker answers 400 without them).
CLIENT_HEADERS = {
    "mex-ClientVersion": "mesh_client==5.0.2",
    "mex-OSName": "Linux",
    "mex-OSVersion": "6.1",
    "mex-OSArchitecture": "x86_64",
    "mex-JavaVersion": "N/A",
}
