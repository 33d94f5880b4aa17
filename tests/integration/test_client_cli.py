"""The client commands of `mesh-broker` in a subprocess: send, inbox, get, ack, track, lookup, --json and the exit
codes scripts branch on."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.client.cli import EXIT_AUTH, EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE
from tests.integration.broker_process import CLI_TIMEOUT, SHARED_KEY, BrokerProcess, broker_command, clean_environment


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    env = {"MESH_SHARED_KEY": SHARED_KEY, "MESH_DEMO": "on"}
    with BrokerProcess(data_dir=tmp_path_factory.mktemp("broker"), env=env) as running:
        yield running


def cli(
    broker: BrokerProcess, mailbox: str, *args: str, password: str = "password", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Credentials from the environment, as a script would set them."""
    env = {
        "MESH_CLIENT_URL": broker.url,
        "MESH_CLIENT_MAILBOX": mailbox,
        "MESH_CLIENT_PASSWORD": password,
        "MESH_CLIENT_SHARED_KEY": SHARED_KEY,
        "XDG_CACHE_HOME": str(cwd or Path.cwd()),
        "XDG_CONFIG_HOME": str(cwd or Path.cwd()),
    }
    return subprocess.run(
        [*broker_command(), *args],
        env=clean_environment(env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
        cwd=cwd,
    )


def test_send_list_get_track_ack_lookup(broker: BrokerProcess, tmp_path: Path) -> None:
    source = tmp_path / "report.csv"
    source.write_bytes(b"a,b,c\n" * 50_000)
    sent = cli(
        broker,
        "X26ABC1",
        "send",
        str(source),
        "--to",
        "X26ABC2",
        "--workflow",
        "TEST_WORKFLOW",
        "--subject",
        "monthly",
        "--local-id",
        "R-1",
        "--chunk-size",
        "100KB",
        "--compress",
        "--json",
        cwd=tmp_path,
    )
    assert sent.returncode == EXIT_OK, sent.stderr
    message_id = json.loads(sent.stdout)["message_id"]

    listed = cli(broker, "X26ABC2", "inbox", "--json", cwd=tmp_path)
    assert json.loads(listed.stdout) == [message_id]
    got = cli(broker, "X26ABC2", "get", message_id, "-o", str(tmp_path / "got.csv"), "--json", cwd=tmp_path)
    assert got.returncode == EXIT_OK, got.stderr
    body = json.loads(got.stdout)
    assert body["chunks"] == 3 and body["headers"]["subject"] == "monthly"
    assert (tmp_path / "got.csv").read_bytes() == source.read_bytes()

    tracked = cli(broker, "X26ABC1", "track", message_id, "--json", cwd=tmp_path)
    assert json.loads(tracked.stdout)["status"] == "accepted"
    assert cli(broker, "X26ABC2", "ack", message_id, cwd=tmp_path).returncode == EXIT_OK
    assert (
        json.loads(cli(broker, "X26ABC1", "track", message_id, "--json", cwd=tmp_path).stdout)["status"]
        == "acknowledged"
    )
    looked = cli(broker, "X26ABC1", "lookup", "X26", "TEST_WORKFLOW", cwd=tmp_path)
    assert looked.stdout.split() == ["X26ABC2", "TESTMB2"]


def test_exit_codes(broker: BrokerProcess, tmp_path: Path) -> None:
    source = tmp_path / "x.dat"
    source.write_bytes(b"x")
    refused = cli(broker, "X26ABC1", "send", str(source), "--to", "NOBODY", "--workflow", "W", "--json", cwd=tmp_path)
    assert refused.returncode == EXIT_REFUSED
    assert json.loads(refused.stdout)["code"] == "12"
    assert cli(broker, "X26ABC1", "inbox", password="wrong", cwd=tmp_path).returncode == EXIT_AUTH
    assert cli(broker, "X26ABC2", "get", "20260101000000000000_ABCDEF", cwd=tmp_path).returncode == EXIT_NOT_FOUND
    down = cli(BrokerProcess(data_dir=tmp_path, port=1), "X26ABC1", "inbox", cwd=tmp_path)
    assert down.returncode == EXIT_UNAVAILABLE
    missing = subprocess.run(
        [*broker_command(), "inbox"],
        env=clean_environment({"XDG_CONFIG_HOME": str(tmp_path)}),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert missing.returncode == EXIT_USAGE and "MESH_CLIENT_URL" in missing.stderr


def test_credentials_from_a_config_file(broker: BrokerProcess, tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    config.write_text(
        f'url = "{broker.url}"\nmailbox = "X26ABC3"\npassword = "password"\nshared_key = "{SHARED_KEY}"\n'
    )
    listed = subprocess.run(
        [*broker_command(), "inbox", "--config", str(config), "--json"],
        env=clean_environment({}),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert listed.returncode == EXIT_OK, listed.stderr
    assert json.loads(listed.stdout) == []
