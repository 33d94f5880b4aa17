"""The `mesh-broker` command: serve, mailbox and workflow administration, sandbox and demographics imports.

The only place that picks uvloop. Every command opens the store that the same settings select for `serve`,
so administration works beside a running broker.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker import logs
from broker.client import cli as client_cli
from broker.settings import DEMO_SHARED_KEY, Settings, SettingsError

if TYPE_CHECKING:
    from broker.services.directory import Directory
    from broker.store.protocol import MetadataStore

# The server's modules (the app, stores, blob stores, the web page) are imported by the commands that use them: the
# client commands and the folder agent start in half the CPU without them (about 0.5 s against 1 s here).

log = logging.getLogger("broker")


def _on_off(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("on", "off"):
        raise argparse.ArgumentTypeError("expected on or off")
    return lowered == "on"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mesh-broker", description="A MESH-compatible message exchange.")
    parser.add_argument("--data-dir", type=Path, help="where data lives (MESH_DATA_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a broker node")
    serve.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help="MESH_DATA_DIR")
    serve.add_argument("--database-url", help="MESH_DATABASE_URL")
    serve.add_argument("--blob-url", help="MESH_BLOB_URL")
    serve.add_argument("--host", help="MESH_HOST")
    serve.add_argument("--port", type=int, help="MESH_PORT")
    serve.add_argument("--shared-key", help="MESH_SHARED_KEY")
    serve.add_argument("--tls-cert", type=Path, help="MESH_TLS_CERT")
    serve.add_argument("--tls-key", type=Path, help="MESH_TLS_KEY")
    serve.add_argument("--tls-client-ca", type=Path, help="MESH_TLS_CLIENT_CA")
    serve.add_argument("--tls-client-cert", choices=("off", "optional", "required"), help="MESH_TLS_CLIENT_CERT")
    serve.add_argument("--demo", type=_on_off, metavar="on|off", help="MESH_DEMO")
    serve.add_argument("--sandbox-admin", type=_on_off, metavar="on|off", help="MESH_SANDBOX_ADMIN")
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="apply pending database migrations, then exit")
    migrate.set_defaults(run=_migrate)

    mailbox = commands.add_parser("mailbox", help="manage mailboxes").add_subparsers(dest="action", required=True)
    add = mailbox.add_parser("add", help="create or replace a mailbox")
    add.add_argument("mailbox_id")
    add.add_argument("--password", help="prompted for when left out")
    add.add_argument("--name", default="")
    add.add_argument("--ods-code", default="")
    add.add_argument("--org-code", default="")
    add.add_argument("--org-name", default="")
    add.add_argument("--billing-entity", default="")
    add.set_defaults(run=_mailbox_add)
    mailbox.add_parser("list", help="list mailboxes").set_defaults(run=_mailbox_list)
    passwd = mailbox.add_parser("passwd", help="change a mailbox password")
    passwd.add_argument("mailbox_id")
    passwd.add_argument("--password", help="prompted for when left out")
    passwd.set_defaults(run=_mailbox_passwd)
    for verb, active in (("deactivate", False), ("activate", True)):
        toggle = mailbox.add_parser(verb, help=f"{verb} a mailbox")
        toggle.add_argument("mailbox_id")
        toggle.set_defaults(run=_mailbox_toggle, active=active)

    workflow = commands.add_parser("workflow", help="manage workflows").add_subparsers(dest="action", required=True)
    wf_add = workflow.add_parser("add", help="create or replace a workflow")
    wf_add.add_argument("workflow_id")
    wf_add.add_argument("--restricted", action="store_true", help="only listed senders and receivers may use it")
    wf_add.add_argument("--sender", action="append", default=[], metavar="MAILBOX")
    wf_add.add_argument("--receiver", action="append", default=[], metavar="MAILBOX")
    wf_add.add_argument(
        "--patient-addressing",
        action="store_true",
        help="accept mex-To: GPPROVIDER_<NHS number>_<date of birth>_<surname> (routing to the patient's GP)",
    )
    wf_add.set_defaults(run=_workflow_add)
    workflow.add_parser("list", help="list workflows").set_defaults(run=_workflow_list)

    demographics = commands.add_parser("demographics", help="the local demographics directory (GP routing)")
    demographics_actions = demographics.add_subparsers(dest="action", required=True)
    dm_import = demographics_actions.add_parser(
        "import", help="load patients from CSV (nhs_number,date_of_birth,family_name,gp_ods_code) or a FHIR Bundle"
    )
    dm_import.add_argument("file", type=Path)
    dm_import.set_defaults(run=_demographics_import)
    dm_show = demographics_actions.add_parser("show", help="show what the local directory holds for an NHS number")
    dm_show.add_argument("nhs_number")
    dm_show.set_defaults(run=_demographics_show)

    sandbox = commands.add_parser("import-sandbox", help="import mesh-sandbox mailboxes.jsonl [workflows.jsonl]")
    sandbox.add_argument("mailboxes", type=Path)
    sandbox.add_argument("workflows", type=Path, nargs="?")
    sandbox.add_argument("--restricted", action="store_true", help="mark imported workflows as restricted")
    sandbox.set_defaults(run=_import_sandbox)

    copy = commands.add_parser("backup", help="copy the embedded store (SQLite and the blob folder) into DIR, online")
    copy.add_argument("destination", type=Path, metavar="DIR", help="a new or empty folder")
    copy.set_defaults(run=_backup)
    # The client side (broker/client/): send, inbox, get, ack, track, lookup and the folder agent.
    client_cli.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logs.configure()
    args = build_parser().parse_args(argv)
    if getattr(args, "event_loop", None) == "uvloop":  # a command that asks for it (the folder agent)
        _install_uvloop()
    try:
        result: int = args.run(args)
        return result
    except SettingsError as exc:
        print(f"mesh-broker: {exc}", file=sys.stderr)
        return 2
    except (LookupError, ValueError, OSError) as exc:  # SandboxFileError and PatientFileError are ValueErrors
        print(f"mesh-broker: {exc}", file=sys.stderr)
        return 1


# serve ----------------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from broker import serving, tls
    from broker.app import create_app

    settings = Settings.from_env(
        data_dir=args.data_dir,
        database_url=args.database_url,
        blob_url=args.blob_url,
        host=args.host,
        port=args.port,
        shared_key=args.shared_key,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        tls_client_cert=args.tls_client_cert,
        demo=args.demo,
        sandbox_admin=args.sandbox_admin,
    )
    app = create_app(settings)
    ssl_context = tls.server_context(settings)
    # Demo mode without a certificate of the operator's speaks both on its port, with one it makes itself.
    tls_beside_plain = tls.demo_context(settings) if ssl_context is None else None
    scheme = "https" if ssl_context else "http"
    url = f"{scheme}://{settings.host}:{settings.port}"

    async def announce(_app: web.Application) -> None:
        log.info(
            "broker listening",
            extra={"action": "serve_started", "url": url, "data_dir": str(settings.data_dir)},
        )
        if settings.demo:
            print(demo_banner(url, settings, tls_beside_plain is not None), flush=True)

    app.on_startup.append(announce)
    if settings.event_loop == "uvloop":
        _install_uvloop()
    # Not web.run_app: on SIGTERM the node drains (broker/serving.py) before its stores close.
    asyncio.run(serving.serve(app, settings, ssl_context, tls_beside_plain=tls_beside_plain))
    return 0


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency; stay up without it
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def demo_banner(url: str, settings: Settings, tls_beside_plain: bool = False) -> str:
    key = settings.shared_key or DEMO_SHARED_KEY
    rule = "!" * 78
    https = ""
    if tls_beside_plain:
        from broker.tls import demo_certificate_file

        cert = demo_certificate_file(settings.data_dir)
        https = f"""
The same port speaks HTTPS too: https://localhost:{settings.port} (the sandbox image's and the JavaScript
client's default), with a certificate made for this demo: trust {cert}
(mesh-client: verify="{cert}"; Node.js: NODE_EXTRA_CA_CERTS={cert}).
"""
    return f"""
{rule}
  DEMO MODE: mailboxes X26ABC1, X26ABC2, X26ABC3 (and GP practices X26GP01, X26GP02A, X26GP02B)
  with password 'password' and shared key '{key}'.
  These are public demo credentials. Never run demo mode where real data can reach it.
{rule}

Broker: {url}   data: {settings.data_dir}
{https}
Send and receive a message with the official client (from this checkout, in another terminal):

.venv/bin/pip install --quiet 'mesh-client>=5,<6'
.venv/bin/python - <<'PY'
from mesh_client import MeshClient
with MeshClient("{url}", "X26ABC1", "password", shared_key=b"{key}") as alice, \\
     MeshClient("{url}", "X26ABC2", "password", shared_key=b"{key}") as bob:
    alice.handshake()
    sent = alice.send_message("X26ABC2", b"Hello from X26ABC1", workflow_id="TEST_WORKFLOW", subject="demo")
    for message in bob.iterate_messages():
        with message:  # acknowledged when the block ends without an error
            print(message.message_id, message.sender, message.read())
    print("tracking:", alice.track_message(sent)["status"])
PY

Send to a patient's GP by NHS number (demo practice mailbox X26GP01 receives it; README "GP routing"):

.venv/bin/python - <<'PY'
from mesh_client import MeshClient
with MeshClient("{url}", "X26ABC1", "password", shared_key=b"{key}") as trust, \\
     MeshClient("{url}", "X26GP01", "password", shared_key=b"{key}") as practice:
    trust.send_message("GPPROVIDER_9990000018_19670126_Smith", b"<document/>", workflow_id="GPCONNECT_SEND_DOCUMENT")
    print(practice.list_messages())
PY
"""


# administration -------------------------------------------------------------------------------------------


def _with_directory(
    args: argparse.Namespace, work: Callable[[Directory], Awaitable[Any]], *, settings: Settings | None = None
) -> Any:
    from broker.services.directory import Directory

    return _with_store(args, lambda store: work(Directory(store)), settings=settings)


def _with_store(
    args: argparse.Namespace, work: Callable[[MetadataStore], Awaitable[Any]], *, settings: Settings | None = None
) -> Any:
    from broker import backends

    settings = settings or Settings.from_env(data_dir=args.data_dir)

    async def run() -> Any:
        # A command reads each entry once or twice, so a directory cache (and on PostgreSQL its listening
        # connection) would cost more than it saves.
        store = backends.metadata_store(settings.with_(db_directory_cache=False))
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _migrate(args: argparse.Namespace) -> int:
    # Opening a store applies its pending migrations (PostgreSQL under an advisory lock).
    from broker import backends

    settings = Settings.from_env(data_dir=args.data_dir, db_migrate=True)
    _with_directory(args, lambda d: d.list_mailboxes(), settings=settings)
    print(f"migrations applied to {backends.database_url(settings).split('@')[-1]}")
    return 0


def _backup(args: argparse.Namespace) -> int:
    from broker import backup

    summary = backup.backup(Settings.from_env(data_dir=args.data_dir), args.destination)
    names = ", ".join(path.name for path in summary.databases)
    print(f"backed up {names} and {summary.blobs} blobs ({summary.blob_bytes} bytes) into {args.destination}")
    return 0


def _password(given: str | None, mailbox_id: str) -> str:
    if given:
        return given
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\n")
        if line:
            return line
        raise ValueError("no password given: use --password or pipe it on standard input")
    return getpass.getpass(f"Password for {mailbox_id.upper()}: ")


def _mailbox_add(args: argparse.Namespace) -> int:
    from broker.models import Mailbox

    mailbox = Mailbox(
        mailbox_id=args.mailbox_id,
        password=_password(args.password, args.mailbox_id),
        mailbox_name=args.name,
        ods_code=args.ods_code,
        org_code=args.org_code,
        org_name=args.org_name,
        billing_entity=args.billing_entity,
    )
    added = _with_directory(args, lambda d: d.add_mailbox(mailbox))
    print(f"mailbox {added.mailbox_id} saved")
    return 0


def _mailbox_list(args: argparse.Namespace) -> int:
    mailboxes = _with_directory(args, lambda d: d.list_mailboxes())
    print(f"{'MAILBOX':<12} {'ACTIVE':<7} {'ODS':<8} {'ORG':<8} NAME")
    for m in mailboxes:
        print(f"{m.mailbox_id:<12} {'yes' if m.active else 'no':<7} {m.ods_code:<8} {m.org_code:<8} {m.mailbox_name}")
    return 0


def _mailbox_passwd(args: argparse.Namespace) -> int:
    password = _password(args.password, args.mailbox_id)
    changed = _with_directory(args, lambda d: d.change_password(args.mailbox_id, password))
    print(f"password of {changed.mailbox_id} changed")
    return 0


def _mailbox_toggle(args: argparse.Namespace) -> int:
    changed = _with_directory(args, lambda d: d.set_active(args.mailbox_id, args.active))
    print(f"mailbox {changed.mailbox_id} {'activated' if changed.active else 'deactivated'}")
    return 0


def _workflow_add(args: argparse.Namespace) -> int:
    from broker.models import Workflow

    workflow = Workflow(
        args.workflow_id, args.restricted, tuple(args.sender), tuple(args.receiver), args.patient_addressing
    )
    added = _with_directory(args, lambda d: d.add_workflow(workflow))
    kind = "restricted" if added.restricted else "unrestricted"
    if added.patient_addressing:
        kind += ", patient addressing"
    print(f"workflow {added.workflow_id} saved ({kind})")
    return 0


def _workflow_list(args: argparse.Namespace) -> int:
    workflows = _with_directory(args, lambda d: d.list_workflows())
    print(f"{'WORKFLOW':<30} {'RESTRICTED':<11} {'SENDERS':<30} {'RECEIVERS':<30} PATIENT_ADDRESSING")
    for w in workflows:
        restricted = "yes" if w.restricted else "no"
        patients = "yes" if w.patient_addressing else "no"
        senders, receivers = ",".join(w.senders) or "-", ",".join(w.receivers) or "-"
        print(f"{w.workflow_id:<30} {restricted:<11} {senders:<30} {receivers:<30} {patients}")
    return 0


def _demographics_import(args: argparse.Namespace) -> int:
    from broker.demographics.importer import read_patients
    from broker.demographics.local import LocalDemographics

    settings = Settings.from_env(data_dir=args.data_dir)
    patients = read_patients(args.file.read_text(encoding="utf-8-sig"))
    count = _with_store(args, lambda store: LocalDemographics(store).load(patients), settings=settings)
    practices = len({p.gp_ods_code for p in patients if p.gp_ods_code})
    print(f"imported {count} patients registered at {practices} practices into the local directory")
    if settings.demographics != "local":
        print(f"note: MESH_DEMOGRAPHICS={settings.demographics}, so the broker traces with PDS, not this directory")
    return 0


def _demographics_show(args: argparse.Namespace) -> int:
    from broker.demographics.local import LocalDemographics

    patient = _with_store(args, lambda store: LocalDemographics(store).lookup(args.nhs_number.replace(" ", "")))
    if patient is None:
        raise LookupError(f"no patient {args.nhs_number} in the local directory")
    born = patient.date_of_birth.isoformat() if patient.date_of_birth else "-"
    print(f"{'NHS_NUMBER':<12} {'BORN':<11} {'GP':<8} FAMILY_NAME")
    print(f"{patient.nhs_number:<12} {born:<11} {patient.gp_ods_code or '-':<8} {patient.family_name}")
    return 0


def _import_sandbox(args: argparse.Namespace) -> int:
    mailbox_lines = args.mailboxes.read_text(encoding="utf-8").splitlines()
    workflow_lines = args.workflows.read_text(encoding="utf-8").splitlines() if args.workflows else []
    counts = _with_directory(
        args, lambda d: d.import_sandbox(mailbox_lines, workflow_lines, restricted=args.restricted)
    )
    print(f"imported {counts[0]} mailboxes and {counts[1]} workflows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
