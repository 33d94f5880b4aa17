"""The folder agent (`mesh-broker agent`) as real processes against a live broker: two agents exchanging files, the
FAILED folder, and agents SIGKILLed at random points delivering every file exactly once."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from broker.client.agent import control as ctl
from tests.integration.broker_process import SHARED_KEY, BrokerProcess, broker_command, clean_environment

DEADLINE = 30.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    env = {"MESH_SHARED_KEY": SHARED_KEY, "MESH_DEMO": "on"}
    with BrokerProcess(data_dir=tmp_path_factory.mktemp("broker"), env=env) as running:
        yield running


class Agent:
    """One `mesh-broker agent` process for some mailboxes, each rooted in its own folder."""

    def __init__(self, broker: BrokerProcess, home: Path, *mailboxes: str, chunk_size: int = 20_000_000):
        self.home = home
        self.roots = {m: home / m for m in mailboxes}
        home.mkdir(parents=True, exist_ok=True)
        boxes = "".join(
            f'[[mailbox]]\nid = "{m}"\npassword = "password"\nroot = "{root}"\n' for m, root in self.roots.items()
        )
        self.config = home / "agent.toml"
        self.config.write_text(
            f'url = "{broker.url}"\nshared_key = "{SHARED_KEY}"\npoll_period_minutes = 1\nwait_seconds = 20\n'
            f"chunk_size = {chunk_size}\n{boxes}"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Agent:
        self.starts += 1
        with (self.home / f"agent-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(
                [*broker_command(), "agent", "--config", str(self.config)],
                env=clean_environment({}),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: all((root / "TEMP").is_dir() for root in self.roots.values()), "the agent's folders")
        return self

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def folder(self, mailbox: str, name: str) -> Path:
        return self.roots[mailbox] / name


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def drop(out: Path, stem: str, data: bytes, **fields: str) -> None:
    """The Java client's contract: the .dat first, then the .ctl that triggers the send."""
    values = {"Version": "1.0", "AddressType": "DTS", "MessageType": "Data", "WorkflowId": "TEST_WORKFLOW"}
    values.update(fields)
    (out / f"{stem}.dat").write_bytes(data)
    (out / f"{stem}.ctl").write_bytes(ctl.Control(values).to_xml())


def files(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"*{suffix}") if p.is_file())


def test_two_agents_exchange_files(broker: BrokerProcess, tmp_path: Path) -> None:
    alice = Agent(broker, tmp_path / "alice", "X26ABC1", chunk_size=1000).start()
    bob = Agent(broker, tmp_path / "bob", "X26ABC2", "X26GP01").start()
    try:
        out = alice.folder("X26ABC1", "OUT")
        drop(out, "single", b"one small file", To_DTS="X26ABC2", Subject="single", LocalId="L-1")
        drop(out, "chunked", bytes(range(256)) * 20, To_DTS="X26ABC2", AllowChunking="Y", LocalId="L-2")
        drop(out, "zipped", b"squeeze me " * 500, To_DTS="X26ABC2", Compress="Y", LocalId="L-3")
        gp = {"To_DTS": "GPPROVIDER_9990000018_19670126_Smith", "WorkflowId": "GPCONNECT_SEND_DOCUMENT"}
        drop(out, "to-gp", b"<document/>", LocalId="L-4", **gp)
        bad_gp = {**gp, "To_DTS": "GPPROVIDER_1234567890_19670126_Smith"}
        drop(out, "bad-gp", b"<document/>", LocalId="L-5", **bad_gp)
        drop(out, "nobody", b"x", To_DTS="NOBODY", LocalId="L-6")
        (out / "broken.dat").write_bytes(b"y")
        (out / "broken.ctl").write_bytes(b"<DTSControl><To_DTS>X26ABC2</To_DTS>")

        bob_in, gp_in = bob.folder("X26ABC2", "IN"), bob.folder("X26GP01", "IN")
        wait_for(lambda: len(files(bob_in, ".ctl")) == 3 and len(files(gp_in, ".ctl")) == 1, "bob's files")
        received = {ctl.parse(c.read_bytes()).get("LocalId"): c for c in files(bob_in, ".ctl")}
        assert received["L-1"].with_suffix(".dat").read_bytes() == b"one small file"
        assert received["L-2"].with_suffix(".dat").read_bytes() == bytes(range(256)) * 20
        assert received["L-3"].with_suffix(".dat").read_bytes() == b"squeeze me " * 500
        control = ctl.parse(received["L-1"].read_bytes())
        assert control.get("From_DTS") == "X26ABC1" and control.get("Subject") == "single"
        assert control.get("DTSId") == received["L-1"].stem
        assert control.records[-1].status == "SUCCESS"
        (gp_ctl,) = files(gp_in, ".ctl")
        assert gp_ctl.with_suffix(".dat").read_bytes() == b"<document/>"

        # The failed GP trace comes back to alice as a REPORT: a lone .ctl with the error.
        alice_in = alice.folder("X26ABC1", "IN")
        wait_for(lambda: len(files(alice_in, ".ctl")) == 1, "the report")
        (report,) = files(alice_in, ".ctl")
        assert not report.with_suffix(".dat").exists()
        record = ctl.parse(report.read_bytes())
        assert record.get("MessageType") == "Report" and record.records[-1].status == "ERROR"
        assert record.records[-1].code.startswith("EPL-15")

        sent, failed = alice.folder("X26ABC1", "SENT"), alice.folder("X26ABC1", "FAILED")
        wait_for(lambda: len(files(sent, ".ctl")) == 5 and len(files(failed, ".ctl")) == 2, "SENT and FAILED")
        single = ctl.parse((sent / "single.ctl").read_bytes())
        assert single.get("DTSId") == received["L-1"].stem and (sent / "single.dat").exists()
        nobody = ctl.parse((failed / "nobody.ctl").read_bytes()).records[-1]
        assert (nobody.status, nobody.code, nobody.description) == ("ERROR", "12", "Unregistered to address")
        broken = ctl.parse((failed / "broken.ctl").read_bytes()).records[-1]
        assert (broken.event, broken.code) == ("COLLECT", "01")
        assert "not well-formed XML" in broken.description
        assert (failed / "broken.dat").exists() and (failed / "broken.ctl.original").exists()
        assert files(out, "") == []
    finally:
        alice.stop()
        bob.stop()


def test_agents_killed_at_random_points_deliver_every_file_exactly_once(broker: BrokerProcess, tmp_path: Path) -> None:
    rng = random.Random(20261130)
    alice = Agent(broker, tmp_path / "alice", "X26ABC3", chunk_size=3000).start()
    bob = Agent(broker, tmp_path / "bob", "X26ABC2").start()
    out, bob_in = alice.folder("X26ABC3", "OUT"), bob.folder("X26ABC2", "IN")
    payloads = {f"file-{n:03d}": rng.randbytes(rng.choice([50, 2000, 9000])) for n in range(96)}
    try:
        for number, (stem, data) in enumerate(payloads.items()):
            drop(out, stem, data, To_DTS="X26ABC2", LocalId=stem, AllowChunking="Y")
            if number % 8 == 7:  # kill each agent at a random moment of its sending or receiving
                # Soon after a burst of 8, while batches of them are between steps (the agents are quick).
                time.sleep(rng.uniform(0.05, 0.6))
                victim = alice if number % 16 == 7 else bob
                victim.kill()
                time.sleep(rng.uniform(0.0, 0.1))
                victim.start()
        wait_for(lambda: len(files(bob_in, ".ctl")) >= len(payloads), "every file in IN", timeout=60)
        sent = alice.folder("X26ABC3", "SENT")
        try:
            wait_for(lambda: len(files(sent, ".ctl")) == len(payloads), "every file in SENT", timeout=60)
        except AssertionError as exc:
            # Where the files that never reached SENT are: the evidence a rare failure needs.
            root = tmp_path / "alice"
            where = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "SENT" not in p.parts)
            journal = [p.read_text()[-3000:] for p in root.rglob("*.jsonl")]
            raise AssertionError(f"{exc}; outside SENT: {where}; journal tail: {journal}") from None
        for control_file in files(sent, ".ctl"):  # filed whole, however often filing was cut short
            filed = ctl.parse(control_file.read_bytes())
            assert filed.get("LocalId") == control_file.stem and filed.get("DTSId"), control_file
            assert [r.status for r in filed.records] == ["SUCCESS"], control_file
            assert (sent / f"{control_file.stem}.dat").read_bytes() == payloads[control_file.stem]
        time.sleep(1.0)  # anything delivered twice would land by now
        by_local_id = {ctl.parse(c.read_bytes()).get("LocalId"): c for c in files(bob_in, ".ctl")}
        assert len(files(bob_in, ".ctl")) == len(payloads)  # none twice
        assert set(by_local_id) == set(payloads)
        for stem, data in payloads.items():
            assert by_local_id[stem].with_suffix(".dat").read_bytes() == data, stem
        assert alice.starts > 1 and bob.starts > 1
    finally:
        alice.stop()
        bob.stop()


@pytest.mark.parametrize("recorded", [True, False], ids=["control in the record", "record of an earlier version"])
def test_filing_cut_short_is_finished_from_the_record(broker: BrokerProcess, tmp_path: Path, recorded: bool) -> None:
    """Filing rewrites TEMP's control file in place before renaming it into SENT: a crash midway leaves it in any
    state, and the "sent" record's copy of the control file is what filing starts from again. A record written
    before records kept it (an earlier version, which never rewrote TEMP's copy) is filed from TEMP's copy."""
    alice = Agent(broker, tmp_path / "alice", "X26ABC1")
    temp = alice.folder("X26ABC1", "TEMP")
    (temp / ".journal").mkdir(parents=True)
    original = ctl.Control({"Version": "1.0", "WorkflowId": "TEST_WORKFLOW", "To_DTS": "X26ABC2", "LocalId": "L-9"})
    record = {"state": "sent", "stem": "cut", "key": "k", "message_id": "20261201000000000000_ABCDEF"}
    if recorded:
        record["control"] = original.to_xml().decode("latin-1")
        (temp / "send-cut.ctl").write_bytes(original.to_xml()[:40])  # the rewrite was cut short
    else:
        (temp / "send-cut.ctl").write_bytes(original.to_xml())
    (temp / "send-cut.dat").write_bytes(b"the data")
    (temp / ".journal" / "agent.jsonl").write_bytes(orjson.dumps({"n": "send-cut", "r": record}) + b"\n")
    alice.start()
    try:
        sent = alice.folder("X26ABC1", "SENT")
        wait_for(lambda: (sent / "cut.ctl").exists(), "the pair in SENT")
        filed = ctl.parse((sent / "cut.ctl").read_bytes())
        assert filed.fields == {**original.fields, "DTSId": "20261201000000000000_ABCDEF"}
        assert [(r.status, r.code) for r in filed.records] == [("SUCCESS", "00")]
        assert (sent / "cut.dat").read_bytes() == b"the data"
        assert not (temp / "send-cut.ctl").exists() and not (temp / "send-cut.dat").exists()
    finally:
        alice.stop()
