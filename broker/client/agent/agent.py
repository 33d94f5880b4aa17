"""The folder agent: the Java MESH Client's folder contract (mesh-ecosystem.md section 2) on our async client.

Per mailbox, under its InterfaceRoot: a `.dat` dropped in OUT is sent once its `.ctl` is there and readable, then
moved with its control file to SENT (DTSId and a StatusRecord added) or to FAILED (an error StatusRecord saying
what was wrong). Messages arriving are downloaded into TEMP, renamed into IN as `<message id>.dat` + `.ctl` and
acknowledged only after both are durable; a REPORT arrives as a lone `.ctl`. OUT is watched (inotify through
watchfiles, with a rescan as fallback) and the inbox long-polled where the server offers it (our extension),
else polled every PollPeriod minutes.

Crash safety: every transfer has a record in the mailbox's journal (TEMP/.journal, journal.py) made durable before
each step that could not be repeated blindly, so an agent killed at any point and started again finishes what it
had taken:

- send: "taken" (recorded, with a fresh Idempotency-Key, before the pair leaves OUT for TEMP) -> "sent" (with the
  message ID) or "failed" (with the refusal), either with the control file that was sent -> filed: the amended
  control file written over TEMP's copy and fsynced, the data file and then the control file renamed into SENT or
  FAILED -> record removed. A send cut short is made again with the same key, so the server answers the message
  it already has (our broker: exactly once); a chunked one resumes at its next chunk. A "sent" or "failed" record
  whose control file is no longer in TEMP was filed already; one whose control file is still there is filed again
  from the record's copy (TEMP's may be half rewritten).
- receive: downloaded into TEMP (resumable by chunk when chunked), control file beside it, both fsynced ->
  "filing" -> renamed into IN -> acknowledged -> record removed. Once "filing" is recorded the message is never
  downloaded again, so a file a consumer has already taken from IN is not put back.

Throughput: many files are in flight at once (`parallel` sends and as many downloads per mailbox), and the fsyncs
that order these steps are shared between them (group commit, groupcommit.py): one fsync of the journal log
covers every record saved while the previous one ran, one fsync of a folder every rename made into it meanwhile.
Nothing blocking runs on the event loop. Once the fsyncs were shared, the CPU went on thread hops and on the system
calls made in threads beside the busy loop (each a hand-over of the GIL): the steps for one file share their hops
(a move into TEMP also looks at the data file the send needs), batches hop once per share of their files, small
files are read and written with plain os calls, and OUT is neither listed nor watched while the queue is long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from broker.client import client as mesh
from broker.client.agent import control as ctl
from broker.client.agent.config import AgentConfig, MailboxConfig
from broker.client.agent.groupcommit import Batch
from broker.client.agent.journal import Journal
from broker.client.journal import fsync_dir, write_atomically

FOLDERS = ("OUT", "IN", "SENT", "FAILED", "TEMP")
#: The live service asks for polls no more often than every 5 minutes (mesh-api.md section 4.4); other servers
#: without our long poll are polled at most once a minute.
LIVE_HOSTS = ("spineservices.nhs.uk", "ncrs.nhs.uk")
LIVE_MIN_POLL_SECONDS = 300.0
MIN_POLL_SECONDS = 60.0
#: Waits between tries after a failure that may pass (server down, 5xx, 429, refused credentials).
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
#: How often OUT is listed when nothing was heard (watchfiles wakes the agent sooner), and how often the queue's
#: gauges are brought up to date while OUT is left unlisted (more pairs queued than can be sent at once).
RESCAN_SECONDS = 2.0
#: Threads for the per-file fsyncs of one batch (each takes a share of the batch: one hop a share, not a file).
IO_THREADS = 8
#: MESH refusals that are about the file, not about the moment: the pair goes to FAILED.
TRANSIENT_STATUSES = frozenset({0, 403, 408, 425, 429})

log = logging.getLogger("broker.agent")
T = TypeVar("T")
R = TypeVar("R")


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
            "Age of the oldest control file waiting in OUT or being sent.",
            ("mailbox",),
            registry=r,
        )


@dataclass(frozen=True)
class Pending:
    """A pair found in OUT: its stem, its control file's bytes and mtime, whether its data file was beside it."""

    stem: str
    control: bytes
    mtime: float
    has_data: bool


@dataclass(frozen=True)
class Filing:
    """A sent or refused pair on its way from TEMP into SENT or FAILED."""

    name: str
    stem: str
    folder: Path
    amend: Callable[[ctl.Control], ctl.Control]
    #: The control file that was sent (None: a record of an earlier version, whose TEMP copy is still the original).
    control: ctl.Control | None = None


@dataclass(frozen=True)
class Moved:
    """A pair moved from OUT into TEMP: its data file's size and small content (None: the data file is missing)."""

    data: mesh.Sized | None


class MailboxAgent:
    def __init__(self, config: AgentConfig, mailbox: MailboxConfig, metrics: AgentMetrics):
        self.config = config
        self.mailbox = mailbox
        self.metrics = metrics
        self.out, self.inbox, self.sent, self.failed, self.temp = (mailbox.folder(f) for f in FOLDERS)
        self.journal = Journal(self.temp / ".journal")
        # Steps made for many files in one thread hop, each with one fsync per folder (groupcommit.py).
        self._mover: Batch[tuple[str, str], Moved | None] = Batch(self._move_batch)
        self._filer: Batch[Filing, bool] = Batch(self._file_batch)
        self._stager: Batch[tuple[str, mesh.ReceivedMessage], None] = Batch(self._stage_batch)
        self._intake: Batch[tuple[str, str], None] = Batch(self._intake_batch)
        # A batch's per-file fsyncs run side by side: the file system commits concurrent fsyncs together, where
        # one after another each waits for a commit of its own.
        self._io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="agent-io")
        self._taken: dict[str, float] = {}  # stems in OUT being handled -> their control file's mtime
        self._receiving: set[str] = set()
        # Messages received since the listing under way began (-> the listing's number): that listing may still
        # show them, answered before their acknowledgement.
        self._finished: dict[str, int] = {}
        self._listings = 0
        self._received = asyncio.Event()  # a receive has finished (a slot is free, the inbox has changed)
        self._wake = asyncio.Event()
        # Set while at most `parallel` pairs are queued: OUT is worth listing (and watching) again.
        self._low = asyncio.Event()
        self._low.set()
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    def _log(self, action: str, message: str, level: int = logging.INFO, **extra: Any) -> None:
        log.log(level, message, extra={"action": action, "mailbox": self.mailbox.mailbox_id, **extra})

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Lifetime --------------------------------------------------------------------------------------------
    async def run(self) -> None:
        for folder in (self.out, self.inbox, self.sent, self.failed, self.temp):
            folder.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.journal.open)
        client = mesh.MeshClient(
            self.config.credentials(self.mailbox),
            chunk_size=self.config.chunk_size,
            # sends and receives run at once, up to `parallel` each
            connections=2 * self.config.parallel + 1,
        )
        try:
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
                    for task in (*loops, *workers, *self._tasks):
                        task.cancel()
                    await asyncio.gather(*loops, *workers, *self._tasks, return_exceptions=True)
        finally:
            await self.journal.aclose()
            self._io.shutdown(wait=False)

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
            self._taken[record["stem"]] = time.time()
            self._log("agent_recover", "finishing an interrupted send", stem=record["stem"], state=record["state"])
            self._spawn(self._send_taken(client, name, record))
        for name in self.journal.names("recv-"):
            message_id = name.removeprefix("recv-")
            self._receiving.add(message_id)
            self._log("agent_recover", "finishing an interrupted receive", message_id=message_id)
            await self._receive(client, message_id)

    # Sending ---------------------------------------------------------------------------------------------
    def _new_pairs(self, taken: frozenset[str]) -> list[Pending]:
        """Control files in OUT not yet taken, oldest first, read (only new ones are looked at: OUT may hold
        thousands of pairs waiting their turn)."""
        names: set[str] = set()
        found = []
        with os.scandir(self.out) as entries:
            for entry in entries:
                names.add(entry.name)
                if not entry.name.endswith(".ctl") or entry.name[: -len(".ctl")] in taken:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file():
                        found.append((entry.stat().st_mtime, entry.name[: -len(".ctl")]))
        found.sort()
        pairs = []
        for mtime, stem in found:
            with contextlib.suppress(FileNotFoundError):  # taken away meanwhile
                raw = _read(self.out / f"{stem}.ctl")
                # A listing is not a snapshot: a .dat made before its .ctl may be missed while the .ctl is seen.
                has_data = f"{stem}.dat" in names or (self.out / f"{stem}.dat").is_file()
                pairs.append(Pending(stem, raw, mtime, has_data))
        return pairs

    async def _scan_loop(self) -> None:
        while True:
            self._wake.clear()
            pairs = await asyncio.to_thread(self._new_pairs, frozenset(self._taken))
            for pair in pairs:
                if pair.stem not in self._taken:
                    self._taken[pair.stem] = pair.mtime
                    self._queue.put_nowait(pair)
            self._gauge()
            if self._queue.qsize() > self.config.parallel:
                # Work in hand: OUT is listed again only once the workers are down to their last round of it. A
                # listing costs a step per pair in OUT (thousands while thousands arrive), and pairs found sooner
                # would only have waited behind these.
                self._low.clear()
                while not self._low.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RESCAN_SECONDS):
                            await self._low.wait()
                    self._gauge()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESCAN_SECONDS):
                    await self._wake.wait()

    def _gauge(self) -> None:
        mailbox = self.mailbox.mailbox_id
        self.metrics.queue.labels(mailbox).set(len(self._taken))
        oldest = min(self._taken.values(), default=None)
        self.metrics.oldest.labels(mailbox).set(time.time() - oldest if oldest is not None else 0.0)

    async def _watch(self) -> None:
        """Wake the scan as soon as something changes in OUT (inotify); without watchfiles, the rescan alone."""
        try:
            from watchfiles import awatch
        except ImportError:  # the client extra is not installed: polling only
            return
        # watchfiles logs every batch of changes at INFO: thousands of lines when thousands of files are dropped.
        logging.getLogger("watchfiles.main").setLevel(logging.WARNING)
        while True:
            # No filter: any change is only a reason to list OUT, which judges the names itself.
            changes = awatch(self.out, debounce=200, step=50, recursive=False, watch_filter=None)
            async with contextlib.aclosing(changes):
                async for _changes in changes:
                    self._wake.set()
                    if self._queue.qsize() > self.config.parallel:
                        # Work in hand: OUT is not listed until the queue runs low (_scan_loop), so each change
                        # seen meanwhile would cost a step here for nothing. Stop watching until then.
                        break
            await self._low.wait()
            self._wake.set()  # whatever arrived while OUT was not watched

    async def _send_worker(self, client: mesh.MeshClient) -> None:
        while True:
            pair = await self._queue.get()
            if self._queue.qsize() <= self.config.parallel:
                self._low.set()
            try:
                await self._take(client, pair)
            except Exception:
                self._log("agent_error", "sending failed unexpectedly", logging.ERROR, stem=pair.stem, exc_info=True)
                self._taken.pop(pair.stem, None)

    async def _take(self, client: mesh.MeshClient, pair: Pending) -> None:
        """Check a pair in OUT, record it as taken and move it to TEMP, then send it."""
        stem = pair.stem
        control, problem = _check(pair)
        if problem is not None:
            # Read at the scan, perhaps long ago and while still being written: judge the file as it is now.
            fresh = await asyncio.to_thread(self._read_pair, stem)
            if fresh is None:  # taken away meanwhile
                self._taken.pop(stem, None)
                return
            pair = fresh
            control, problem = _check(pair)
        if problem is not None:
            age = time.time() - pair.mtime
            if age < self.config.processing_delay:  # perhaps still being written: look again once it has settled
                self._taken.pop(stem, None)
                asyncio.get_running_loop().call_later(self.config.processing_delay - age + 0.05, self._wake.set)
                return
            await asyncio.to_thread(self._fail_collect, stem, pair.control, *problem)
            self._taken.pop(stem, None)
            self.metrics.failed.labels(self.mailbox.mailbox_id).inc()
            self._log(
                "agent_failed", "control file refused; moved to FAILED", logging.WARNING, stem=stem, reason=problem[1]
            )
            return
        assert control is not None
        name = f"send-{uuid.uuid4().hex}"
        record = {"state": "taken", "stem": stem, "key": str(uuid.uuid4())}
        # Recorded first: from here on, a crash finds the pair in OUT or in TEMP.
        await self.journal.save(name, record)
        moved = await self._mover.run((name, stem))
        if moved is None:  # taken away meanwhile
            self.journal.remove(name)
            self._taken.pop(stem, None)
            return
        await self._send_taken(client, name, record, (pair.control, control), moved)

    def _read_pair(self, stem: str) -> Pending | None:
        try:
            raw = _read(self.out / f"{stem}.ctl")
            mtime = (self.out / f"{stem}.ctl").stat().st_mtime  # after the read: no older than what was read
        except FileNotFoundError:
            return None
        return Pending(stem, raw, mtime, (self.out / f"{stem}.dat").is_file())

    def _move_batch(self, pairs: list[tuple[str, str]]) -> list[Moved | None]:
        """The pairs into TEMP (None: not there), each with a look at its data file, which its send needs first
        and which is cheaper here, in this batch's thread hop, than in a hop of its own."""
        moved = [self._move_to_temp(name, stem) for name, stem in pairs]
        fsync_dir(self.temp)
        fsync_dir(self.out)
        return [
            Moved(_look(self.temp / f"{name}.dat")) if done else None
            for (name, _), done in zip(pairs, moved, strict=True)
        ]

    def _move_to_temp(self, name: str, stem: str) -> bool:
        """The pair from OUT into TEMP under its record's name; False if its control file is not there (taken
        away meanwhile). Also finishes a move a crash cut short (recovery): what is in TEMP already stays."""
        moved = False
        for suffix in (".ctl", ".dat"):
            target = self.temp / f"{name}{suffix}"
            try:
                os.replace(self.out / f"{stem}{suffix}", target)
                moved = True
            except FileNotFoundError:
                moved = moved or target.exists()
                if suffix == ".ctl" and not moved:
                    return False
        return moved

    async def _send_taken(
        self,
        client: mesh.MeshClient,
        name: str,
        record: dict[str, Any],
        read: tuple[bytes, ctl.Control] | None = None,
        moved: Moved | None = None,
    ) -> None:
        """read: the control file's bytes and their parse; moved: what its move into TEMP found (both None when
        recovering: found again here)."""
        stem = record["stem"]
        try:
            if record["state"] == "taken":
                if read is None or moved is None:
                    # recovery: the pair may still be in OUT if its move was not yet durable
                    moved = await self._mover.run((name, stem))
                    try:
                        raw = await asyncio.to_thread(_read, self.temp / f"{name}.ctl")
                        read = (raw, ctl.parse(raw))
                    except (FileNotFoundError, ctl.ControlError):  # nothing (readable) left to send
                        self._log("agent_error", "a taken pair has gone", logging.ERROR, stem=stem)
                        self.journal.remove(name)
                        return
                outcome = await self._send(client, name, stem, record["key"], read[1], moved.data if moved else None)
                # The control file sent goes into the record: filing rewrites TEMP's copy in place (see _file_pair).
                sent = {"control": read[0].decode("latin-1")}
                if isinstance(outcome, str):
                    record = {**record, "state": "sent", "message_id": outcome, **sent}
                else:
                    record = {**record, "state": "failed", **outcome, **sent}
                await self.journal.save(name, record)
            control = read[1] if read is not None else _recorded(record)
            if record["state"] == "sent":
                if await self._file(name, stem, self.sent, self._sent_control(record["message_id"]), control):
                    self.metrics.sent.labels(self.mailbox.mailbox_id).inc()
                    self._log("agent_sent", "sent", stem=stem, message_id=record["message_id"])
            elif await self._file(name, stem, self.failed, self._failed_control(record), control):
                self.metrics.failed.labels(self.mailbox.mailbox_id).inc()
                self._log(
                    "agent_failed",
                    "sending refused; moved to FAILED",
                    logging.WARNING,
                    stem=stem,
                    code=record["code"],
                    reason=record["text"],
                )
        finally:
            self._taken.pop(stem, None)

    async def _send(
        self, client: mesh.MeshClient, name: str, stem: str, key: str, control: ctl.Control, looked: mesh.Sized | None
    ) -> str | dict[str, str]:
        """The message ID, or why the server refused the file (event, code, text: it goes to FAILED). looked: the
        data file in TEMP as its move found it (None: missing)."""
        data = self.temp / f"{name}.dat"
        if looked is None:
            return {"event": "COLLECT", "code": "02", "text": f"the data file {stem}.dat went missing"}
        size = looked.size
        chunked = control.flag("AllowChunking") if control.get("AllowChunking") else True
        if not chunked and size > mesh.MAX_CHUNK_BYTES:
            reason = (
                f"the data file is {size} bytes, over the {mesh.MAX_CHUNK_BYTES} one transfer may carry: "
                "set AllowChunking Y"
            )
            return {"event": "TRANSFER", "code": "06", "text": reason}
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
                looked=looked,
            )

        try:
            message_id: str = await self._retrying(f"send of {stem}", attempt)
            return message_id
        except mesh.MeshError as exc:
            return {"event": exc.event or "SEND", "code": exc.code or str(exc.status), "text": exc.description}

    @staticmethod
    def _sent_control(message_id: str) -> Callable[[ctl.Control], ctl.Control]:
        record = ctl.StatusRecord("TRANSFER", "SUCCESS", "00", "Transferred to recipient mailbox")
        return lambda control: control.with_fields(DTSId=message_id).with_record(record)

    @staticmethod
    def _failed_control(record: dict[str, Any]) -> Callable[[ctl.Control], ctl.Control]:
        status = ctl.StatusRecord(record["event"], "ERROR", record["code"], record["text"])
        return lambda control: control.with_record(status)

    async def _file(
        self,
        name: str,
        stem: str,
        folder: Path,
        amend: Callable[[ctl.Control], ctl.Control],
        control: ctl.Control | None,
    ) -> bool:
        """A sent or refused pair into SENT or FAILED, its control file amended. False if it was filed before (a
        record left behind by a crash)."""
        filed = await self._filer.run(Filing(name, stem, folder, amend, control))
        self.journal.remove(name)
        return filed

    def _file_batch(self, pairs: list[Filing]) -> list[bool]:
        """The control file leaving TEMP is what says "filed" to recovery."""
        filed = self._each(self._file_pair, pairs)
        for folder in sorted({p.folder for p, done in zip(pairs, filed, strict=True) if done}):
            fsync_dir(folder)
        for pair, done in zip(pairs, filed, strict=True):
            if done:
                self.journal.path(f"upload-{pair.name}").unlink(missing_ok=True)
        return filed

    def _file_pair(self, pair: Filing) -> bool:
        """The amended control file is written over TEMP's copy, fsynced and renamed into the folder after the
        data file. Rewriting a file in place cost a third of the CPU of writing a new one and deleting the old
        (inodes made and freed). A crash midway leaves TEMP's copy in any state, which is why the record keeps
        the control file that was sent: filing again starts from that."""
        source = self.temp / f"{pair.name}.ctl"
        try:
            control = pair.control if pair.control is not None else ctl.parse(_read(source))
            _write_durably(source, pair.amend(control).to_xml(), atomically=False, create=False)
        except FileNotFoundError:  # filed before
            return False
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.temp / f"{pair.name}.dat", pair.folder / f"{pair.stem}.dat")
        os.replace(source, pair.folder / f"{pair.stem}.ctl")
        return True

    def _each(self, step: Callable[[T], R], items: list[T]) -> list[R]:
        """step over items (from a batch's thread), in up to IO_THREADS shares side by side so that their fsyncs
        are committed together; one hop a share, none for a batch of one."""
        if len(items) <= 1:
            return [step(item) for item in items]
        size = -(-len(items) // IO_THREADS)
        shares = [items[i : i + size] for i in range(0, len(items), size)]
        return [result for done in self._io.map(lambda share: [step(i) for i in share], shares) for result in done]

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

    # Receiving -------------------------------------------------------------------------------------------
    def poll_seconds(self) -> float:
        host = urlparse(self.config.url).hostname or ""
        floor = LIVE_MIN_POLL_SECONDS if host.endswith(LIVE_HOSTS) else MIN_POLL_SECONDS
        return max(self.config.poll_minutes * 60, floor)

    async def _receive_loop(self, client: mesh.MeshClient) -> None:
        """List the inbox and hand each new message to one of `parallel` receive slots; list again as soon as a
        page is handed out (messages still being received are left out of the next one)."""
        long_poll = mesh.INBOX_WAIT in client.extensions
        slots = asyncio.Semaphore(self.config.parallel)
        attempt = 0
        while True:
            self._listings += 1
            listing = self._listings
            try:
                page = await client.inbox(wait=self.config.wait_seconds if long_poll else None)
                attempt = 0
            except mesh.MeshError as exc:
                delay = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
                self._log("agent_retry", "inbox failed, retrying", logging.WARNING, error=str(exc), delay=delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            fresh = [m for m in page.message_ids if m not in self._receiving and self._finished.get(m, 0) < listing]
            self._finished = {m: n for m, n in self._finished.items() if n >= listing}
            self._receiving.update(fresh)
            for message_id in fresh:
                await slots.acquire()
                self._spawn(self._receive_in_slot(client, message_id, slots))
            if not fresh and not long_poll:
                await asyncio.sleep(self.poll_seconds())
            elif not fresh and page.message_ids:
                # Only messages being received here or elsewhere: wait for one to finish (or a second), not spin.
                self._received.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._received.wait()

    async def _receive_in_slot(self, client: mesh.MeshClient, message_id: str, slots: asyncio.Semaphore) -> None:
        try:
            await self._receive(client, message_id)
        except Exception:
            self._log(
                "agent_error", "receiving failed unexpectedly", logging.ERROR, message_id=message_id, exc_info=True
            )
            self._receiving.discard(message_id)
        finally:
            self._finished[message_id] = self._listings
            slots.release()
            self._received.set()

    async def _receive(self, client: mesh.MeshClient, message_id: str) -> None:
        name = f"recv-{message_id}"
        try:
            record = self.journal.get(name)
            if record is None or record.get("state") != "filing":
                received = await client.download(
                    message_id, self.temp / f"{name}.dat", journal=self.journal.path(f"download-{name}"), sync=False
                )
                await self._stager.run((name, received))
                await self.journal.save(name, {"state": "filing"})
            await self._intake.run((name, message_id))
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

    def _stage_batch(self, messages: list[tuple[str, mesh.ReceivedMessage]]) -> list[None]:
        """Downloaded messages made durable in TEMP, each with its control file, before "filing" is recorded."""
        self._each(lambda message: self._stage(*message), messages)
        fsync_dir(self.temp)
        return [None] * len(messages)

    def _intake_batch(self, messages: list[tuple[str, str]]) -> list[None]:
        for name, message_id in messages:
            self._file_received(name, message_id)
        fsync_dir(self.inbox)
        return [None] * len(messages)

    def _stage(self, name: str, received: mesh.ReceivedMessage) -> None:
        """The control file beside the downloaded data in TEMP, both fsynced (the caller fsyncs TEMP)."""
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
        # Written in place: TEMP is ours, and until "filing" is recorded a crash means downloading again.
        _write_durably(self.temp / f"{name}.ctl", control.to_xml(), atomically=False)
        data = self.temp / f"{name}.dat"
        if report:
            data.unlink(missing_ok=True)  # a report is its control file alone
        else:
            _fsync(data)  # the download left its fsync to us

    def _file_received(self, name: str, message_id: str) -> None:
        """Data first, then the control file (the consumer's trigger)."""
        data, control = self.temp / f"{name}.dat", self.temp / f"{name}.ctl"
        with contextlib.suppress(FileNotFoundError):
            os.replace(data, self.inbox / f"{message_id}.dat")
        with contextlib.suppress(FileNotFoundError):
            os.replace(control, self.inbox / f"{message_id}.ctl")


def _check(pair: Pending) -> tuple[ctl.Control | None, tuple[str, str] | None]:
    """A pair's control file parsed, or what is wrong with the pair (a COLLECT code and text)."""
    try:
        control = ctl.parse(pair.control)
        ctl.check_outbound(control)
    except ctl.ControlError as exc:
        return None, ("01", str(exc))
    if not pair.has_data:
        return control, ("02", f"the data file {pair.stem}.dat is missing from OUT")
    return control, None


def _recorded(record: dict[str, Any]) -> ctl.Control | None:
    """The control file a "sent" or "failed" record says was sent (None: a record of an earlier version)."""
    text = record.get("control")
    return ctl.parse(text.encode("latin-1")) if isinstance(text, str) else None


def _look(path: Path) -> mesh.Sized | None:
    try:
        return mesh.look(path)
    except FileNotFoundError:
        return None


# The per-file steps below use plain os calls: a Python file object costs three more system calls (fstat, isatty,
# lseek), and each system call made in a thread beside the busy event loop is a hand-over of the GIL (a few
# futex calls and a context switch), which is what the agent's CPU went on once its fsyncs were shared.


def _read(path: Path) -> bytes:
    """A small file's bytes: open, read to the end, close."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pieces = []
        while piece := os.read(fd, 1 << 16):
            pieces.append(piece)
        return b"".join(pieces)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes, *, atomically: bool = True, create: bool = True) -> None:
    """A file whose bytes are on disk (its name becomes durable with its folder's fsync, made by the caller);
    atomically: written beside and renamed, so a reader never sees half of it; create=False: only over a file
    that is there (FileNotFoundError if not)."""
    target = path.with_name(f".{path.name}.tmp") if atomically else path
    flags = os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    fd = os.open(target, flags, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if atomically:
        os.replace(target, path)


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
