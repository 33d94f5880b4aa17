"""A blocking MESH caller over requests for the fault tests: one mailbox, fresh tokens, slow bodies on demand."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import requests

from tests.integration.broker_process import BrokerProcess
from tests.support import V2, Tokens

WORKFLOW = "TEST_WORKFLOW"
#: Seconds for a connect and for each read: a broker that was killed answers at once with a refused connection.
TIMEOUT = (5, 30)
#: What a request to a broker that was killed (or is killed while it answers) raises.
GONE = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


def trickle(data: bytes, piece: int = 32 * 1024, pause: float = 0.004) -> Iterator[bytes]:
    """A request body sent slowly, in pieces, so that a crash can land in the middle of it."""
    for start in range(0, len(data), piece):
        yield data[start : start + piece]
        time.sleep(pause)


class Caller:
    """Calls one broker as one mailbox. renew() after a restart: the session's pooled connections died with it."""

    def __init__(self, broker: BrokerProcess, mailbox_id: str, accept: str = V2):
        self.broker = broker
        self.mailbox_id = mailbox_id
        self.tokens = Tokens(mailbox_id)
        self.accept = accept
        self.session = self._new_session()

    @staticmethod
    def _new_session() -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # 127.0.0.1 only: no proxy or CA bundle from the host's environment
        return session

    def renew(self) -> None:
        self.session.close()
        self.session = self._new_session()

    def close(self) -> None:
        self.session.close()

    @property
    def base(self) -> str:
        return f"{self.broker.url}/messageexchange/{self.mailbox_id}"

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": self.tokens(), "Accept": self.accept, **(extra or {})}

    def request(self, method: str, path: str, *, extra: dict[str, str] | None = None, **kw: Any) -> requests.Response:
        return self.session.request(method, self.base + path, headers=self.headers(extra), timeout=TIMEOUT, **kw)

    def send(
        self, to: str, body: bytes | Iterator[bytes], *, local_id: str, chunks: int = 1, workflow_id: str = WORKFLOW
    ) -> requests.Response:
        extra = {
            "mex-To": to,
            "mex-WorkflowID": workflow_id,
            "mex-LocalID": local_id,
            "Content-Type": "application/octet-stream",
        }
        if chunks > 1:
            extra["mex-Chunk-Range"] = f"1:{chunks}"
        return self.request("POST", "/outbox", extra=extra, data=body)

    def upload_chunk(
        self, message_id: str, number: int, total: int, body: bytes | Iterator[bytes]
    ) -> requests.Response:
        extra = {"mex-Chunk-Range": f"{number}:{total}", "Content-Type": "application/octet-stream"}
        return self.request("POST", f"/outbox/{message_id}/{number}", extra=extra, data=body)

    def inbox(self) -> list[str]:
        response = self.request("GET", "/inbox")
        assert response.status_code == 200, response.text
        return list(response.json()["messages"])

    def download(self, message_id: str, number: int = 1, *, pause: float = 0.0) -> tuple[int, bytes]:
        """(status, body); pause between pieces read makes a slow reader that a crash can cut off."""
        extra = {"Accept-Encoding": "identity"}
        with self.request("GET", f"/inbox/{message_id}/{number}", extra=extra, stream=True) as response:
            pieces = []
            for piece in response.iter_content(64 * 1024):
                pieces.append(piece)
                if pause:
                    time.sleep(pause)
            return response.status_code, b"".join(pieces)

    def acknowledge(self, message_id: str) -> requests.Response:
        return self.request("PUT", f"/inbox/{message_id}/status/acknowledged")

    def track(self, message_id: str) -> requests.Response:
        return self.request("GET", "/outbox/tracking", params={"messageID": message_id})

    def track_local_id(self, local_id: str) -> requests.Response:
        return self.request("GET", f"/outbox/tracking/{local_id}")
