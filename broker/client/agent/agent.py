"""The folder agent: the Java MESH Client's folder contract (mesh-ecosystem.md section 2) on our async client.

Per mailbox, under its InterfaceRoot: a `.dat` dropped in OUT is sent once its `.ctl` is there and readable, then
moved with its control file to SENT (DTSId and a StatusRecord added) or to FAILED (an error StatusRecord saying
what was wrong). Messages arriving are downloaded into TEMP, renamed into IN as `<message id>.dat` + `.ctl` and
acknowledged only after both are durable; a REPORT arrives as a lone `.ctl`. OUT is watched (inotify through
watchfiles, with a rescan as fallback) and the inbox long-polled where the server offers it (our extension),
else polled every PollPeriod minutes.

Crash safety: every transfer has a record in the mailbox's journal (TEMP/.journal) written before each step that
could not be repeated blindly, so an agent killed at any point and started again finishes what it had taken:

- send: "taken" (recorded, with a fresh Idempotency-Key, before the pair leaves OUT for TEMP) -> "sent" (with the
  message ID) -> moved to SENT, record removed. A send cut short is made again with the same key, so the server
  answers the message it already has (our broker: exactly once); a chunked one resumes at its next chunk.
- receive: downloaded into TEMP (resumable by chunk) -> "filing" -> renamed into IN -> acknowledged -> record
  removed. Once "filing" is recorded the message is never downloaded again, so a file a consumer has already
  taken from IN is not put back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from broker.client import client as mesh
from broker.client.agent import control as ctl
from broker.client.agent.config import AgentConfig, MailboxConfig
from broker.client.journal import fsync_dir, write_atomically

FOLDERS = ("OUT", "IN", "SENT", "FAILED", "TEMP")
#: The live service asks for polls no more often than every 5 minutes (mesh-api.md section 4.4); other servers
#: without our long poll are polled at most once a minute.
LIVE_HOSTS = ("spineservices.nhs.uk", "ncrs.nhs.uk")
LIVE_MIN_POLL_SECONDS = 300.0
MIN_POLL_SECONDS = 60.0
#: Waits between tries after a failure that may pass (server down, 5xx, 429, refused credentials).
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
#: How often OUT is listed when nothing was heard (watchfiles wakes the agent sooner).
RESCAN_SECONDS = 2.0
#: MESH refusals that are about the file, not about the moment: the pair goes to FAILED.
TRANSIENT_STATUSES = frozenset({0, 403, 408, 425, 429})

log = logging.getLogger("broker.agent")


class AgentMetrics:
    """The agent's own Prometheus metrics, on an optional port (metrics_port)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sent = Counter("mesh_agent_files_sent_total", "Files sent from OUT.", ("mailbox",), registry=r)
        self.received = Counter("mesh_agent_files_received_total", "Files filed into IN.", ("mailbox",), registry=r)
        self.failed = Counter("mesh_agent_files_failed_total", "Pairs moved to FAILED.", ("mailbox",), registry=r)
        self.queue = Gauge("mesh_agent_queue_depth", "Pairs in OUT or being sent.", ("mailbox",), registry=r)
        self.oldest = Gauge(
            "mesh_agent_oldest_waiting_seconds",
            "Age of the oldest control file waiting in OUT.",
            ("mailbox",),
            registry=r,
        )


class Journal:
    """One JSON record per transfer in TEMP/.journal, each replaced atomically."""

    def __init__(self, directory: Path):
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def save(self, name: str, record: dict[str, Any]) -> None:
        write_atomically(self.path(name), orjson.dumps(record))

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = orjson.loads(self.path(name).read_bytes())
            return found
        except (OSError, orjson.JSONDecodeError):
            return None

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()

    def names(self, prefix: str) -> list[str]:
        return sorted(p.stem for p in self.directory.glob(f"{prefix}*.json"))


class MailboxAgent:
    def __init__(self, config: AgentConfig, mailbox: MailboxConfig, metrics: AgentMetrics):
        self.config = config
        self.mailbox = mailbox
        self.metrics = metrics
        self.out, self.inbox, self.sent, self.failed, self.temp = (mailbox.folder(f) for f in FOLDERS)
        self.journal = Journal(self.temp / ".journal")
        self._taken: set[str] = set()  # stems in OUT being handled
        self._receiving: set[str] = set()
        self._wake = asyncio.Event()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._recovering: set[asyncio.Task[None]] = set()

    def _log(self, action: str, message: str, level: int = logging.INFO, **extra: Any) -> None:
        log.log(level, message, extra={"action": action, "mailbox": self.mailbox.mailbox_id, **extra})

    # Lifetime --------------------------------------------------------------------------------------------
    async def run(self) -> None:
        for folder in (self.out, self.inbox, self.sent, self.failed, self.temp, self.journal.directory):
            folder.mkdir(parents=True, exist_ok=True)
        client = mesh.MeshClient(self.config.credentials(self.mailbox), chunk_size=self.config.chunk_size)
        async with client:
            await self._retrying("handshake", client.handshake)
            self._log(
                "agent_started", "agent started", extensions=sorted(client.extensions), root=str(self.mailbox.root)
            )
            await self._recover(client)
            workers = [asyncio.create_task(self._send_worker(client)) for _ in range(self.config.parallel)]
            loops = [
                asyncio.create_task(self._scan_loop()),
                asyncio.create_task(self._watch()),
                asyncio.create_task(self._receive_loop(client)),
            ]
            try:
                await asyncio.gather(*loops, *workers)
            finally:
                for task in (*loops, *workers):
                    task.cancel()
                await asyncio.gather(*loops, *workers, return_exceptions=True)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        attempt = 0
        while True:
            try:
                return await call()
            except mesh.MeshError as exc:
                if exc.status not in TRANSIENT_STATUSES and exc.status < 500:
                    raise
                delay = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
                self._log("agent_retry", f"{what} failed, retrying", logging.WARNING, error=str(exc), delay=delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def _recover(self, client: mesh.MeshClient) -> None:
        """Finish what a previous run had taken (see the module docstring)."""
        for name in self.journal.names("send-"):
            record = self.journal.get(name)
            if record is None:
                continue
            self._taken.add(record["stem"])
            self._log("agent_recover", "finishing an interrupted send", stem=record["stem"], state=record["state"])
            task = asyncio.get_running_loop().create_task(self._send_taken(client, name, record))
            self._recovering.add(task)
            task.add_done_callback(self._recovering.discard)
        for name in self.journal.names("recv-"):
            message_id = name.removeprefix("recv-")
            self._receiving.add(message_id)
            self._log("agent_recover", "finishing an interrupted receive", message_id=message_id)
            await self._receive(client, message_id)

    # Sending ---------------------------------------------------------------------------------------------
    def _waiting_pairs(self) -> list[tuple[float, str]]:
        found = []
        with os.scandir(self.out) as entries:
            for entry in entries:
                if entry.name.endswith(".ctl") and entry.is_file():
                    with contextlib.suppress(FileNotFoundError):
                        found.append((entry.stat().st_mtime, entry.name[: -len(".ctl")]))
        return sorted(found)

    async def _scan_loop(self) -> None:
        while True:
            self._wake.clear()
            waiting = await asyncio.to_thread(self._waiting_pairs)
            for _mtime, stem in waiting:
                if stem not in self._taken:
                    self._taken.add(stem)
                    self._queue.put_nowait(stem)
            mailbox = self.mailbox.mailbox_id
            self.metrics.queue.labels(mailbox).set(len(self._taken))
            self.metrics.oldest.labels(mailbox).set(time.time() - waiting[0][0] if waiting else 0.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESCAN_SECONDS):
                    await self._wake.wait()

    async def _watch(self) -> None:
        """Wake the scan as soon as something changes in OUT (inotify); without watchfiles, the rescan alone."""
        try:
            from watchfiles import awatch
        except ImportError:  # the client extra is not installed: polling only
            return
        async for _changes in awatch(self.out, debounce=200, step=10, recursive=False):
            self._wake.set()

    async def _send_worker(self, client: mesh.MeshClient) -> None:
        while True:
            stem = await self._queue.get()
            try:
                await self._take(client, stem)
            except Exception:
                self._log("agent_error", "sending failed unexpectedly", logging.ERROR, stem=stem, exc_info=True)
                self._taken.discard(stem)

    async def _take(self, client: mesh.MeshClient, stem: str) -> None:
        """Check a pair in OUT, record it as taken and move it to TEMP, then send it."""
        ctl_path, dat_path = self.out / f"{stem}.ctl", self.out / f"{stem}.dat"
        try:
            raw = await asyncio.to_thread(ctl_path.read_bytes)
            age = time.time() - ctl_path.stat().st_mtime
        except FileNotFoundError:  # taken away meanwhile
            self._taken.discard(stem)
            return
        problem: tuple[str, str] | None = None
        try:
            control = ctl.parse(raw)
            ctl.check_outbound(control)
            if not dat_path.is_file():
                problem = ("02", f"the data file {stem}.dat is missing from OUT")
        except ctl.ControlError as exc:
            problem = ("01", str(exc))
        if problem is not None:
            if age < self.config.processing_delay:  # perhaps still being written: look again once it has settled
                self._taken.discard(stem)
                asyncio.get_running_loop().call_later(self.config.processing_delay - age + 0.05, self._wake.set)
                return
            await asyncio.to_thread(self._fail_collect, stem, raw, *problem)
            return
        name = f"send-{uuid.uuid4().hex}"
        record = {"state": "taken", "stem": stem, "key": str(uuid.uuid4())}
        await asyncio.to_thread(self._move_to_temp, name, record, stem)
        await self._send_taken(client, name, record)

    def _move_to_temp(self, name: str, record: dict[str, Any], stem: str) -> None:
        self.journal.save(name, record)  # first: from here on, a crash finds the pair in OUT or in TEMP
        os.replace(self.out / f"{stem}.ctl", self.temp / f"{name}.ctl")
        os.replace(self.out / f"{stem}.dat", self.temp / f"{name}.dat")
        fsync_dir(self.temp)
        fsync_dir(self.out)

    def _locate(self, name: str, stem: str, suffix: str) -> Path:
        """Where a taken pair's file is: TEMP, or still OUT if the agent stopped between the two moves."""
        in_temp = self.temp / f"{name}{suffix}"
        return in_temp if in_temp.exists() else self.out / f"{stem}{suffix}"

    async def _send_taken(self, client: mesh.MeshClient, name: str, record: dict[str, Any]) -> None:
        stem = record["stem"]
        try:
            if record["state"] == "taken":
                control = ctl.parse(self._locate(name, stem, ".ctl").read_bytes())
                message_id = await self._send(client, name, stem, record["key"], control)
                if message_id is None:
                    return
                record = {**record, "state": "sent", "message_id": message_id}
                await asyncio.to_thread(self.journal.save, name, record)
            await asyncio.to_thread(self._file_sent, name, stem, record["message_id"])
            self.metrics.sent.labels(self.mailbox.mailbox_id).inc()
            self._log("agent_sent", "sent", stem=stem, message_id=record["message_id"])
        finally:
            self._taken.discard(stem)

    async def _send(self, client: mesh.MeshClient, name: str, stem: str, key: str, control: ctl.Control) -> str | None:
        """The message ID, or None when the server refused the file (moved to FAILED)."""
        data = self._locate(name, stem, ".dat")
        size = data.stat().st_size
        chunked = control.flag("AllowChunking") if control.get("AllowChunking") else True
        if not chunked and size > mesh.MAX_CHUNK_BYTES:
            reason = (
                f"the data file is {size} bytes, over the {mesh.MAX_CHUNK_BYTES} one transfer may carry: "
                "set AllowChunking Y"
            )
            await asyncio.to_thread(self._fail_send, name, stem, control, "TRANSFER", "06", reason)
            return None
        compress = control.flag("Compress") if control.get("Compress") else self.config.compress
        extra = {"mex-Content-Encrypted": "Y"} if control.flag("Encrypted") else {}
        if control.flag("IsCompressed"):
            extra["mex-Content-Compressed"] = "Y"
        for element, header in (("PartnerId", "mex-PartnerID"), ("DataChecksum", "mex-Content-Checksum")):
            if control.get(element):
                extra[header] = control.get(element)

        async def attempt() -> str:
            return await client.send(
                control.get("To_DTS"),
                data,
                workflow_id=control.get("WorkflowId"),
                subject=control.get("Subject") or None,
                local_id=control.get("LocalId") or None,
                file_name=f"{stem}.dat",
                compress=compress,
                chunk_size=self.config.chunk_size if chunked else mesh.MAX_CHUNK_BYTES,
                idempotency_key=key,
                journal=self.journal.path(f"upload-{name}"),
                extra_headers=extra,
            )

        try:
            message_id: str = await self._retrying(f"send of {stem}", attempt)
            return message_id
        except mesh.MeshError as exc:
            await asyncio.to_thread(
                self._fail_send, name, stem, control, exc.event or "SEND", exc.code or str(exc.status), exc.description
            )
            return None

    def _file_sent(self, name: str, stem: str, message_id: str) -> None:
        control = ctl.parse(self._locate(name, stem, ".ctl").read_bytes())
        record = ctl.StatusRecord("TRANSFER", "SUCCESS", "00", "Transferred to recipient mailbox")
        write_atomically(self.sent / f"{stem}.ctl", control.with_fields(DTSId=message_id).with_record(record).to_xml())
        self._finish(name, stem, self.sent)

    def _fail_send(self, name: str, stem: str, control: ctl.Control, event: str, code: str, text: str) -> None:
        record = ctl.StatusRecord(event, "ERROR", code, text)
        write_atomically(self.failed / f"{stem}.ctl", control.with_record(record).to_xml())
        self._finish(name, stem, self.failed)
        self.metrics.failed.labels(self.mailbox.mailbox_id).inc()
        self._log(
            "agent_failed", "sending refused; moved to FAILED", logging.WARNING, stem=stem, code=code, reason=text
        )

    def _finish(self, name: str, stem: str, folder: Path) -> None:
        """The data file beside its new control file; TEMP's copies and the journal record go."""
        data = self._locate(name, stem, ".dat")
        if data.exists():
            os.replace(data, folder / f"{stem}.dat")
        fsync_dir(folder)
        with contextlib.suppress(FileNotFoundError):
            self._locate(name, stem, ".ctl").unlink()
        self.journal.remove(f"upload-{name}")
        self.journal.remove(name)

    def _fail_collect(self, stem: str, raw: bytes, code: str, text: str) -> None:
        """A pair that cannot be sent as it is: FAILED, with the original control file kept beside the report."""
        failed_ctl = ctl.Control({}, [ctl.StatusRecord("COLLECT", "ERROR", code, text)])
        with contextlib.suppress(ctl.ControlError):
            failed_ctl = ctl.parse(raw).with_record(failed_ctl.records[0])
        if not failed_ctl.fields:
            (self.failed / f"{stem}.ctl.original").write_bytes(raw)
        write_atomically(self.failed / f"{stem}.ctl", failed_ctl.to_xml())
        data = self.out / f"{stem}.dat"
        if data.exists():
            os.replace(data, self.failed / f"{stem}.dat")
        (self.out / f"{stem}.ctl").unlink(missing_ok=True)
        fsync_dir(self.failed)
        fsync_dir(self.out)
        self._taken.discard(stem)
        self.metrics.failed.labels(self.mailbox.mailbox_id).inc()
        self._log("agent_failed", "control file refused; moved to FAILED", logging.WARNING, stem=stem, reason=text)

    # Receiving -------------------------------------------------------------------------------------------
    def poll_seconds(self) -> float:
        host = urlparse(self.config.url).hostname or ""
        floor = LIVE_MIN_POLL_SECONDS if host.endswith(LIVE_HOSTS) else MIN_POLL_SECONDS
        return max(self.config.poll_minutes * 60, floor)

    async def _receive_loop(self, client: mesh.MeshClient) -> None:
        long_poll = mesh.INBOX_WAIT in client.extensions
        attempt = 0
        while True:
            try:
                page = await client.inbox(wait=self.config.wait_seconds if long_poll else None)
                attempt = 0
            except mesh.MeshError as exc:
                delay = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
                self._log("agent_retry", "inbox failed, retrying", logging.WARNING, error=str(exc), delay=delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            fresh = [m for m in page.message_ids if m not in self._receiving]
            self._receiving.update(fresh)
            if fresh:
                await mesh.gather_limited([self._receive(client, m) for m in fresh], self.config.parallel)
            if not fresh and not long_poll:
                await asyncio.sleep(self.poll_seconds())
            elif not fresh and page.message_ids:
                await asyncio.sleep(1.0)  # only messages being received elsewhere: do not spin

    async def _receive(self, client: mesh.MeshClient, message_id: str) -> None:
        name = f"recv-{message_id}"
        try:
            record = self.journal.get(name)
            if record is None or record.get("state") != "filing":
                received = await client.download(
                    message_id, self.temp / f"{name}.dat", journal=self.journal.path(f"download-{name}")
                )
                await asyncio.to_thread(self._stage, name, received)
            await asyncio.to_thread(self._file_received, name, message_id)
            await self._retrying(f"acknowledge of {message_id}", lambda: client.acknowledge(message_id))
            self.journal.remove(name)
            self.metrics.received.labels(self.mailbox.mailbox_id).inc()
            self._log("agent_received", "received", message_id=message_id)
        except mesh.MeshError as exc:
            level = logging.WARNING if exc.status in (404, 410) else logging.ERROR
            self._log("agent_receive_failed", "receiving failed", level, message_id=message_id, error=str(exc))
            if exc.status in (404, 410):  # gone (acknowledged elsewhere, expired): nothing to file
                self.journal.remove(name)
        finally:
            self._receiving.discard(message_id)

    def _stage(self, name: str, received: mesh.ReceivedMessage) -> None:
        """The control file beside the downloaded data in TEMP, both durable; then record "filing"."""
        h = received.headers
        report = received.is_report
        fields = {
            "Version": "1.0",
            "AddressType": "ALL",
            "MessageType": "Report" if report else "Data",
            "WorkflowId": h.get("workflowid", ""),
            "From_DTS": h.get("from", ""),
            "To_DTS": h.get("to", ""),
            "Subject": h.get("subject", ""),
            "LocalId": h.get("localid", ""),
            "DTSId": received.message_id,
            "PartnerId": h.get("partnerid", ""),
            "Encrypted": "Y" if h.get("content-encrypted") == "Y" else "N",
            "IsCompressed": "Y" if h.get("content-compressed") == "Y" else "N",
        }
        if h.get("linkedmsgid"):
            fields["LinkedMsgId"] = h["linkedmsgid"]
        record = ctl.StatusRecord(
            h.get("statusevent", "TRANSFER"),
            "ERROR" if report else h.get("statussuccess", "SUCCESS"),
            h.get("statuscode", "00"),
            h.get("statusdescription", "Transferred to recipient mailbox"),
        )
        control = ctl.Control({k: v for k, v in fields.items() if v}, [record])
        write_atomically(self.temp / f"{name}.ctl", control.to_xml())
        data = self.temp / f"{name}.dat"
        if report:
            data.unlink(missing_ok=True)  # a report is its control file alone
        self.journal.save(name, {"state": "filing"})
        self.journal.remove(f"download-{name}")

    def _file_received(self, name: str, message_id: str) -> None:
        """Data first, then the control file (the consumer's trigger), then the folder's fsync."""
        data, control = self.temp / f"{name}.dat", self.temp / f"{name}.ctl"
        if data.exists():
            os.replace(data, self.inbox / f"{message_id}.dat")
        if control.exists():
            os.replace(control, self.inbox / f"{message_id}.ctl")
        fsync_dir(self.inbox)


async def serve_metrics(metrics: AgentMetrics, host: str, port: int) -> web.AppRunner:
    async def scrape(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info(
        "agent metrics listening", extra={"action": "agent_metrics_started", "url": f"http://{host}:{port}/metrics"}
    )
    return runner


async def run_agent(config: AgentConfig, stop: asyncio.Event) -> None:
    """Every mailbox's agent until stop is set."""
    metrics = AgentMetrics()
    runner = await serve_metrics(metrics, config.metrics_host, config.metrics_port) if config.metrics_port else None
    tasks = [asyncio.create_task(MailboxAgent(config, m, metrics).run()) for m in config.mailboxes]
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in (*tasks, stopper):
            task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
