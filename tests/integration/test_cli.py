"""The admin CLI as subprocesses, on a data dir and beside a running broker that must see its changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mesh_client import MeshClient, MeshError

from tests.integration.broker_process import SHARED_KEY, BrokerProcess, free_port, run_cli
from tests.integration.conftest import MakeClient


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    """Run a command that must succeed; its standard output."""
    done = run_cli(data_dir, args, stdin=stdin)
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def table(output: str) -> dict[str, list[str]]:
    """The rows of a `list` command's table by their first column (the header row left out)."""
    return {line.split()[0]: line.split() for line in output.splitlines()[1:] if line.strip()}


def handshake_status(client: MeshClient) -> int:
    try:
        client.handshake()
    except requests.HTTPError as exc:
        return int(exc.response.status_code)
    return 200


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def broker(data_dir: Path) -> Iterator[BrokerProcess]:
    """A broker without demo data: everything it knows comes from the CLI."""
    with BrokerProcess(data_dir=data_dir, env={"MESH_SHARED_KEY": SHARED_KEY}) as process:
        yield process


def test_mailbox_add_and_list(data_dir: Path) -> None:
    assert "mailbox MB1 saved" in cli(
        data_dir, "mailbox", "add", "mb1", "--password", "pw1", "--name", "First", "--ods-code", "A11"
    )
    cli(data_dir, "mailbox", "add", "MB2", "--password", "pw2")

    listing = cli(data_dir, "mailbox", "list").splitlines()
    assert listing[0].split()[:2] == ["MAILBOX", "ACTIVE"]
    rows = table("\n".join(listing))
    assert rows["MB1"][:3] == ["MB1", "yes", "A11"]
    assert rows["MB1"][-1] == "First"
    assert rows["MB2"][:2] == ["MB2", "yes"]


def test_data_dir_from_the_environment(data_dir: Path) -> None:
    assert run_cli(data_dir, ["mailbox", "add", "ENV1", "--password", "p"], data_dir_flag=False).returncode == 0
    assert "ENV1" in cli(data_dir, "mailbox", "list")
    assert (data_dir / "mesh.sqlite3").exists()


def test_password_from_standard_input(data_dir: Path, broker: BrokerProcess, client_for: MakeClient) -> None:
    cli(data_dir, "mailbox", "add", "PIPED1", stdin="from-stdin\n")
    assert client_for(broker, "PIPED1", "from-stdin").handshake() == b"hello"


def test_unknown_mailbox_fails(data_dir: Path) -> None:
    done = run_cli(data_dir, ["mailbox", "passwd", "NOPE1", "--password", "x"])
    assert done.returncode == 1
    assert "NOPE1" in done.stderr


def test_live_broker_sees_password_changes_and_deactivation(
    data_dir: Path, broker: BrokerProcess, client_for: MakeClient
) -> None:
    cli(data_dir, "mailbox", "add", "MB1", "--password", "old")
    cli(data_dir, "mailbox", "add", "MB2", "--password", "pw2")
    assert client_for(broker, "MB1", "old").handshake() == b"hello"

    assert "password of MB1 changed" in cli(data_dir, "mailbox", "passwd", "MB1", "--password", "new")
    assert handshake_status(client_for(broker, "MB1", "old")) == 403
    mb1 = client_for(broker, "MB1", "new")
    assert mb1.handshake() == b"hello"

    assert "mailbox MB2 deactivated" in cli(data_dir, "mailbox", "deactivate", "MB2")
    assert handshake_status(client_for(broker, "MB2", "pw2")) == 403
    assert table(cli(data_dir, "mailbox", "list"))["MB2"][1] == "no"
    with pytest.raises(MeshError, match="Unregistered to address"):
        mb1.send_message("MB2", b"to an inactive mailbox", workflow_id="ANY")

    assert "mailbox MB2 activated" in cli(data_dir, "mailbox", "activate", "MB2")
    mb2 = client_for(broker, "MB2", "pw2")
    assert mb2.handshake() == b"hello"
    message_id = mb1.send_message("MB2", b"to an active mailbox", workflow_id="ANY")
    with mb2.retrieve_message(message_id) as message:
        assert message.read() == b"to an active mailbox"


def test_restricted_workflow(data_dir: Path, broker: BrokerProcess, client_for: MakeClient) -> None:
    for mailbox in ("MB1", "MB2", "MB3"):
        cli(data_dir, "mailbox", "add", mailbox, "--password", "pw", "--ods-code", "A11")
    out = cli(data_dir, "workflow", "add", "CLOSED_WF", "--restricted", "--sender", "mb1", "--receiver", "MB2")
    assert "workflow CLOSED_WF saved (restricted)" in out
    assert "(unrestricted)" in cli(data_dir, "workflow", "add", "OPEN_WF", "--receiver", "MB3")

    rows = table(cli(data_dir, "workflow", "list"))
    assert rows["CLOSED_WF"] == ["CLOSED_WF", "yes", "MB1", "MB2", "no"]
    assert rows["OPEN_WF"] == ["OPEN_WF", "no", "-", "MB3", "no"]

    mb1, mb3 = client_for(broker, "MB1", "pw"), client_for(broker, "MB3", "pw")
    assert mb1.send_message("MB2", b"allowed", workflow_id="CLOSED_WF")
    with pytest.raises(MeshError) as not_a_sender:
        mb3.send_message("MB2", b"sender not listed", workflow_id="CLOSED_WF")
    assert not_a_sender.value.args[1]["detail"][0]["code"] == "16"
    with pytest.raises(MeshError) as not_a_receiver:
        mb1.send_message("MB3", b"receiver not listed", workflow_id="CLOSED_WF")
    assert not_a_receiver.value.args[1]["detail"][0]["code"] == "17"
    assert mb3.send_message("MB1", b"open workflows admit anyone", workflow_id="OPEN_WF")
    assert mb1.lookup_endpoint("A11", "CLOSED_WF")["results"] == [{"mailbox_id": "MB2", "mailbox_name": ""}]


def test_import_sandbox(data_dir: Path, broker: BrokerProcess, client_for: MakeClient, tmp_path: Path) -> None:
    mailboxes = tmp_path / "mailboxes.jsonl"
    workflows = tmp_path / "workflows.jsonl"
    rows = [
        {"mailbox_id": "ALICE", "mailbox_name": "Alice", "billing_entity": "England", "ods_code": "AL1",
         "org_code": "AL1", "password": "apw", "org_name": "Alice Org"},
        {"mailbox_id": "BOB", "mailbox_name": "Bob", "billing_entity": "Wales", "ods_code": "BO1",
         "org_code": "BO1", "password": "bpw"},
        {"mailbox_id": "GONE", "mailbox_name": "Gone", "billing_entity": "England", "ods_code": "GO1",
         "org_code": "GO1", "password": "gpw", "active": False},
    ]  # fmt: skip
    mailboxes.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")
    workflows.write_text(
        json.dumps({"workflow_id": "RESTRICTED_WORKFLOW", "senders": ["ALICE"], "receivers": ["BOB"]}) + "\n",
        encoding="utf-8",
    )

    out = cli(data_dir, "import-sandbox", str(mailboxes), str(workflows), "--restricted")
    assert "imported 3 mailboxes and 1 workflows" in out

    alice = client_for(broker, "ALICE", "apw")
    assert alice.handshake() == b"hello"
    assert handshake_status(client_for(broker, "GONE", "gpw")) == 403
    assert alice.lookup_endpoint("BO1", "RESTRICTED_WORKFLOW")["results"] == [
        {"mailbox_id": "BOB", "mailbox_name": "Bob"}
    ]
    bob = client_for(broker, "BOB", "bpw")
    message_id = alice.send_message("BOB", b"imported", workflow_id="RESTRICTED_WORKFLOW")
    with bob.retrieve_message(message_id) as message:
        assert message.read() == b"imported"
    with pytest.raises(MeshError) as raised:
        bob.send_message("ALICE", b"not a sender", workflow_id="RESTRICTED_WORKFLOW")
    assert raised.value.args[1]["detail"][0]["code"] == "16"
    assert "RESTRICTED_WORKFLOW" in cli(data_dir, "workflow", "list")


@pytest.mark.parametrize(
    ("line", "problem"),
    [("{not json", "not JSON"), ("[1, 2]", "expected a JSON object"), ('{"mailbox_id": "NOPW"}', "password")],
)
def test_import_sandbox_bad_line(data_dir: Path, tmp_path: Path, line: str, problem: str) -> None:
    mailboxes = tmp_path / "mailboxes.jsonl"
    good = {"mailbox_id": "GOOD1", "password": "pw"}
    mailboxes.write_text(json.dumps(good) + "\n" + line + "\n", encoding="utf-8")

    done = run_cli(data_dir, ["import-sandbox", str(mailboxes)])

    assert done.returncode != 0
    assert "line 2" in done.stderr
    assert problem in done.stderr
    # Nothing from a file with a bad line is imported.
    assert "GOOD1" not in cli(data_dir, "mailbox", "list")


def test_import_sandbox_missing_file(data_dir: Path, tmp_path: Path) -> None:
    done = run_cli(data_dir, ["import-sandbox", str(tmp_path / "absent.jsonl")])
    assert done.returncode != 0
    assert "absent.jsonl" in done.stderr


def test_serve_without_shared_key_exits_2(data_dir: Path) -> None:
    done = run_cli(data_dir, ["serve", "--host", "127.0.0.1", "--port", str(free_port())])
    assert done.returncode == 2
    assert "MESH_SHARED_KEY" in done.stderr


def test_serve_rejects_a_bad_setting(data_dir: Path) -> None:
    done = run_cli(
        data_dir, ["serve", "--port", str(free_port())], env={"MESH_SHARED_KEY": SHARED_KEY, "MESH_DEMO": "maybe"}
    )
    assert done.returncode == 2
    assert "MESH_DEMO" in done.stderr


def test_serve_refuses_sandbox_admin_over_a_store_not_declared_disposable(data_dir: Path) -> None:
    done = run_cli(
        data_dir,
        ["serve", "--port", str(free_port()), "--sandbox-admin", "on"],
        env={"MESH_SHARED_KEY": SHARED_KEY},
    )
    assert done.returncode == 2
    assert "MESH_SANDBOX_ADMIN_DISPOSABLE_STORE=on" in done.stderr
    assert "MESH_DEMO=on" in done.stderr
    assert not (data_dir / "mesh.sqlite3").exists()  # refused before anything was opened


PATIENTS_CSV = """nhs_number,date_of_birth,family_name,gp_ods_code
9990000018,1967-01-26,Smith,A11
9990000026,19850714,O'Brien-Núñez,B22
"""


def test_demographics_import_csv_and_gp_routing(data_dir: Path, broker: BrokerProcess, client_for: MakeClient) -> None:
    for mailbox, ods in (("TRUST", "T01"), ("PRACTICE", "A11")):
        cli(data_dir, "mailbox", "add", mailbox, "--password", "pw", "--ods-code", ods)
    out = cli(data_dir, "workflow", "add", "GPCONNECT_SEND_DOCUMENT", "--patient-addressing", "--receiver", "PRACTICE")
    assert "workflow GPCONNECT_SEND_DOCUMENT saved (unrestricted, patient addressing)" in out
    assert table(cli(data_dir, "workflow", "list"))["GPCONNECT_SEND_DOCUMENT"][-1] == "yes"
    patients = data_dir.parent / "patients.csv"
    patients.write_text(PATIENTS_CSV, encoding="utf-8")

    assert "imported 2 patients registered at 2 practices" in cli(data_dir, "demographics", "import", str(patients))
    shown = cli(data_dir, "demographics", "show", "999 000 0026").splitlines()
    assert shown[1].split() == ["9990000026", "1985-07-14", "B22", "O'Brien-Núñez"]

    trust, practice = client_for(broker, "TRUST", "pw"), client_for(broker, "PRACTICE", "pw")
    message_id = trust.send_message(
        "GPPROVIDER_9990000018_19670126_SMITH", b"routed", workflow_id="GPCONNECT_SEND_DOCUMENT"
    )
    assert practice.list_messages() == [message_id]


def test_demographics_import_fhir_bundle(data_dir: Path, tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "id": "9990000042",
                    "birthDate": "2001-11-30",
                    "name": [{"use": "usual", "family": "Taylor"}],
                    "generalPractitioner": [
                        {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "C33"}}
                    ],
                }
            }
        ],
    }
    path = tmp_path / "patients.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    assert "imported 1 patients registered at 1 practices" in cli(data_dir, "demographics", "import", str(path))
    assert cli(data_dir, "demographics", "show", "9990000042").splitlines()[1].split() == [
        "9990000042",
        "2001-11-30",
        "C33",
        "Taylor",
    ]


def test_demographics_import_names_the_bad_line(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    path.write_text(PATIENTS_CSV + "9990000019,1970-01-01,Wrong,A11\n", encoding="utf-8")
    done = run_cli(data_dir, ["demographics", "import", str(path)])
    assert done.returncode == 1
    assert "line 4: the NHS number is not 10 digits with a valid check digit" in done.stderr
    missing = run_cli(data_dir, ["demographics", "show", "9990000018"])
    assert missing.returncode == 1 and "no patient 9990000018" in missing.stderr
