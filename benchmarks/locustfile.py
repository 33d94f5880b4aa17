"""Locust load test for a MESH API (our broker or mesh-sandbox), with real NHSMESH authentication.

Three kinds of user, weighted 5 : 5 : 1 by default:

* MeshSender: sends single-chunk messages and, one time in four, chunked messages (3 chunks by default).
* MeshReceiver: lists its inbox (v2), downloads every chunk of each message and acknowledges it.
* MeshTracker: tracks a message its mailbox sent (GET /outbox/tracking?messageID=...).

Each user holds one uuid nonce and an increasing nonce_count, so every request carries a fresh token. Users are
spread over the mailboxes given (round robin, and across --processes workers without overlap), and senders
address a random mailbox of the same list. Receivers that share an inbox in one Locust process claim message IDs
so they do not download the same message twice.

Configuration: Locust custom arguments, each defaulting to an environment variable:

    --mesh-mailboxes   MESH_LOAD_MAILBOXES  comma-separated mailbox IDs      (X26ABC1,X26ABC2,X26ABC3)
    --mesh-password    MESH_LOAD_PASSWORD   their common password            (password)
    --mesh-shared-key  MESH_LOAD_SHARED_KEY the NHSMESH HMAC key              (TestKey)
    --mesh-workflow    MESH_LOAD_WORKFLOW   mex-WorkflowID for sends          (LOAD_TEST)
    --payload-size     MESH_LOAD_SIZE       bytes per chunk                   (1024)
    --chunks           MESH_LOAD_CHUNKS     chunks of a chunked message       (3)
    --think-time       MESH_LOAD_THINK      max seconds between tasks (0..x)  (0.5)

    locust -f benchmarks/locustfile.py --headless -u 64 -r 16 -t 60s --host http://127.0.0.1:8700

Requests are named by route template, so Locust's stats are per operation; a response whose status is not the
one MESH promises (202 send, 200/206 download, 200 list/ack/tracking) is a failure.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from locust import FastHttpUser, events, task

from broker.auth import make_token

V2 = "application/vnd.mesh.v2+json"
MX = "/messageexchange"

#: Message IDs that receivers of this process are working on (shared inboxes do not download twice).
_claimed: set[str] = set()
#: Recently sent (mailbox, message_id) pairs, for trackers.
_sent: deque[tuple[str, str]] = deque(maxlen=1000)
_counters: dict[str, itertools.count[int]] = {}


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    env = os.environ.get
    parser.add_argument("--mesh-mailboxes", default=env("MESH_LOAD_MAILBOXES", "X26ABC1,X26ABC2,X26ABC3"))
    parser.add_argument("--mesh-password", default=env("MESH_LOAD_PASSWORD", "password"))
    parser.add_argument("--mesh-shared-key", default=env("MESH_LOAD_SHARED_KEY", "TestKey"))
    parser.add_argument("--mesh-workflow", default=env("MESH_LOAD_WORKFLOW", "LOAD_TEST"))
    parser.add_argument("--payload-size", type=int, default=int(env("MESH_LOAD_SIZE", "1024")))
    parser.add_argument("--chunks", type=int, default=int(env("MESH_LOAD_CHUNKS", "3")))
    parser.add_argument("--think-time", type=float, default=float(env("MESH_LOAD_THINK", "0.5")))


def _worker_count(options: Any) -> int:
    processes = getattr(options, "processes", None) or 1
    if processes == -1:  # Locust's "one per core"
        return os.cpu_count() or 1
    return max(processes, 1)


class MeshUser(FastHttpUser):
    abstract = True

    def wait_time(self) -> float:  # type: ignore[override]
        return random.uniform(0, self.cfg.think_time)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.cfg = options
        self.mailboxes = [m.strip() for m in options.mesh_mailboxes.split(",") if m.strip()]
        counter = _counters.setdefault(type(self).__name__, itertools.count())
        # With --processes, worker k of n takes mailboxes k, k + n, k + 2n, ...: receivers in different processes
        # never share an inbox (they could not see each other's claims, and would download and acknowledge the
        # same message twice).
        workers = _worker_count(options)
        index = max(getattr(self.environment.runner, "worker_index", 0), 0)
        self.mailbox = self.mailboxes[(index + workers * next(counter)) % len(self.mailboxes)]
        self.key = options.mesh_shared_key.encode()
        self.nonce = str(uuid.uuid4())
        self.nonce_count = itertools.count()
        self.payload = os.urandom(options.payload_size)
        self.base = f"{MX}/{self.mailbox}"

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        token = make_token(
            self.key,
            self.mailbox,
            self.cfg.mesh_password,
            nonce=self.nonce,
            nonce_count=next(self.nonce_count),
            at=datetime.now(UTC),
        )
        headers = {"Authorization": token, "Accept": V2}
        if extra:
            headers.update(extra)
        return headers

    def request(self, method: str, path: str, name: str, expect: tuple[int, ...], check: Any = None, **kw: Any) -> Any:
        """One request; a failure unless the status is one of `expect` (and `check(response)` returns None, not
        an error text). Returns the response, or None on failure."""
        headers = self.headers(kw.pop("headers", None))
        with self.client.request(method, path, name=name, headers=headers, catch_response=True, **kw) as response:
            if response.status_code in expect:
                problem = check(response) if check else None
                if problem is None:
                    response.success()
                    return response
                response.failure(problem)
                return None
            body = (response.text or "")[:200] if response.content else ""
            response.failure(f"{method} {name}: {response.status_code}, expected {expect}: {body}")
            return None

    def send(self, chunks: int) -> str | None:
        recipient = random.choice(self.mailboxes)
        headers = {
            "mex-To": recipient,
            "mex-WorkflowID": self.cfg.mesh_workflow,
            "mex-Chunk-Range": f"1:{chunks}",
            "mex-Subject": "load test",
            "mex-LocalID": f"load-{uuid.uuid4().hex[:12]}",
            "Content-Type": "application/octet-stream",
        }
        name = "POST /outbox" if chunks == 1 else "POST /outbox (chunk 1)"
        response = self.request("POST", f"{self.base}/outbox", name, (202,), data=self.payload, headers=headers)
        if response is None:
            return None
        message_id: str = response.json()["message_id"]
        for chunk in range(2, chunks + 1):
            chunk_headers = {"mex-Chunk-Range": f"{chunk}:{chunks}", "Content-Type": "application/octet-stream"}
            path = f"{self.base}/outbox/{message_id}/{chunk}"
            if (
                self.request(
                    "POST", path, "POST /outbox/{id}/{chunk}", (202,), data=self.payload, headers=chunk_headers
                )
                is None
            ):
                return None
        _sent.append((self.mailbox, message_id))
        return message_id


class MeshSender(MeshUser):
    weight = 5

    @task(3)
    def send_single(self) -> None:
        self.send(1)

    @task(1)
    def send_chunked(self) -> None:
        self.send(max(2, self.cfg.chunks))


class MeshReceiver(MeshUser):
    weight = 5

    @task
    def receive(self) -> None:
        response = self.request("GET", f"{self.base}/inbox?max_results=100", "GET /inbox", (200,))
        if response is None:
            return
        for message_id in response.json().get("messages", []):
            if message_id in _claimed:
                continue
            # A claim is kept once the message is acknowledged: a receiver whose list predates the ack must not
            # download it again (the broker answers 410 after an ack, as live MESH does).
            _claimed.add(message_id)
            if not self.download_and_acknowledge(message_id):
                _claimed.discard(message_id)

    def download_and_acknowledge(self, message_id: str) -> bool:
        plain = {"Accept-Encoding": "identity"}
        first = self.request("GET", f"{self.base}/inbox/{message_id}", "GET /inbox/{id}", (200, 206), headers=plain)
        if first is None:
            return False
        total = 1
        chunk_range = first.headers.get("mex-Chunk-Range") or "1:1"
        if first.status_code == 206:
            total = int(chunk_range.split(":")[1])
        for chunk in range(2, total + 1):
            expect = (200,) if chunk == total else (206,)
            path = f"{self.base}/inbox/{message_id}/{chunk}"
            if self.request("GET", path, "GET /inbox/{id}/{chunk}", expect, headers=plain) is None:
                return False
        path = f"{self.base}/inbox/{message_id}/status/acknowledged"
        return self.request("PUT", path, "PUT /inbox/{id}/status/acknowledged", (200,)) is not None


class MeshTracker(MeshUser):
    weight = 1

    def on_start(self) -> None:
        super().on_start()
        self.tracked: str | None = None

    @task
    def track(self) -> None:
        # Track a message this mailbox sent: one a sender of this process sent recently, else send one.
        own = [message_id for mailbox, message_id in list(_sent)[-50:] if mailbox == self.mailbox]
        message_id = random.choice(own) if own else (self.tracked or self.send(1))
        if message_id is None:
            return
        self.tracked = message_id
        path = f"{self.base}/outbox/tracking?messageID={message_id}"

        def same_message(response: Any) -> str | None:
            answered = str(response.json().get("message_id", ""))
            return None if answered.upper() == message_id.upper() else f"tracking answered for {answered!r}"

        self.request("GET", path, "GET /outbox/tracking", (200,), check=same_message)
