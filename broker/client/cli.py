"""The client commands of `mesh-broker`: send, inbox, get, ack, track, lookup (and agent, broker/client/agent/).

Credentials come from flags, else MESH_CLIENT_* variables, else a TOML file (--config, MESH_CLIENT_CONFIG or
~/.config/mesh-broker/client.toml). Transfers show a progress bar with rate and ETA when stderr is a terminal;
--json prints one JSON document for scripts. Exit codes (EXIT_* below) let scripts branch on what went wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import os
import re
import signal
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from broker.client.client import MAX_CHUNK_BYTES, Credentials, IntegrityError, MeshClient, MeshError, Progress

EXIT_OK = 0
EXIT_ERROR = 1
#: Bad flags, a missing credential, an unreadable config file.
EXIT_USAGE = 2
#: The server refused the credentials (403).
EXIT_AUTH = 3
#: No such message, or no longer downloadable (404, 410).
EXIT_NOT_FOUND = 4
#: The server refused the request (any other 4xx: a MESH error such as 417 unknown recipient, 409, 413).
EXIT_REFUSED = 5
#: The server or the network failed (5xx, connection errors, timeouts) after retries: worth trying again later.
EXIT_UNAVAILABLE = 6
#: A downloaded chunk did not match the SHA-256 the server gave.
EXIT_INTEGRITY = 7

ENV_PREFIX = "MESH_CLIENT_"
FIELDS = ("url", "mailbox", "password", "shared_key", "ca", "cert", "key")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}
_UNITS.update({"ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3})


class UsageError(Exception):
    """A command that cannot run as given (exit code 2)."""


def parse_size(text: str) -> int:
    """`20MB`, `75MiB`, `1048576`: powers of 1000 for kB/MB/GB, of 1024 for KiB/MiB/GiB."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 20MB, 75MiB)")
    number, unit = int(match.group(1)), (match.group(2) or "").lower()
    size = number * _UNITS[unit]
    if not 0 < size <= MAX_CHUNK_BYTES:
        raise argparse.ArgumentTypeError(f"chunk size must be between 1 byte and {MAX_CHUNK_BYTES} bytes (100 MB)")
    return size


def credentials(args: argparse.Namespace, environ: Mapping[str, str]) -> Credentials:
    """Each credential from its flag, else MESH_CLIENT_<NAME>, else the config file."""
    config_path = args.config or environ.get(f"{ENV_PREFIX}CONFIG")
    file_values: dict[str, Any] = {}
    default = Path(environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "mesh-broker" / "client.toml"
    path = Path(config_path) if config_path else default
    if config_path or path.exists():
        try:
            file_values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read the config file {path}: {exc}") from None
    values: dict[str, Any] = {}
    for name in FIELDS:
        flag = getattr(args, name, None)
        value = flag if flag is not None else environ.get(f"{ENV_PREFIX}{name.upper()}", file_values.get(name))
        values[name] = value
    missing = [name for name in ("url", "mailbox", "password", "shared_key") if not values[name]]
    if missing:
        names = ", ".join(f"--{n.replace('_', '-')} / {ENV_PREFIX}{n.upper()}" for n in missing)
        raise UsageError(f"missing {names} (or set them in {path})")
    check_hostname = not args.no_check_hostname and bool(file_values.get("check_hostname", True))
    return Credentials(
        url=str(values["url"]),
        mailbox=str(values["mailbox"]),
        password=str(values["password"]),
        shared_key=str(values["shared_key"]).encode(),
        ca=Path(values["ca"]) if values["ca"] else None,
        cert=Path(values["cert"]) if values["cert"] else None,
        key=Path(values["key"]) if values["key"] else None,
        check_hostname=check_hostname,
    )


def add_commands(commands: Any) -> None:
    """Add the client subcommands to the `mesh-broker` parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection (else MESH_CLIENT_* variables, else the config file)")
    group.add_argument("--config", help="TOML file with url, mailbox, password, shared_key, ca, cert, key")
    group.add_argument("--url", help="server base URL, e.g. https://mesh.example:8700")
    group.add_argument("--mailbox", help="your mailbox ID")
    group.add_argument("--password", help="the mailbox password")
    group.add_argument("--shared-key", dest="shared_key", help="the environment's shared HMAC key")
    group.add_argument("--ca", help="CA bundle the server's certificate must chain to")
    group.add_argument("--cert", help="client certificate (PEM) for mutual TLS")
    group.add_argument("--key", help="the client certificate's private key (PEM)")
    group.add_argument("--no-check-hostname", action="store_true", help="accept a certificate for another name")
    group.add_argument("--json", action="store_true", help="print JSON for scripts (no progress bar)")

    send = commands.add_parser("send", parents=[common], help="send a file to a mailbox")
    send.add_argument("file", type=Path)
    send.add_argument("--to", required=True, help="recipient mailbox (or GPPROVIDER_<NHS no>_<DOB>_<surname>)")
    send.add_argument("--workflow", required=True, help="workflow ID")
    send.add_argument("--subject")
    send.add_argument("--local-id", dest="local_id")
    send.add_argument("--file-name", dest="file_name", help="mex-FileName (default: the file's name)")
    send.add_argument("--chunk-size", type=parse_size, help="raw bytes per chunk, up to 100MB (default 75MiB)")
    send.add_argument("--compress", action="store_true", help="gzip each chunk for transfer")
    send.add_argument("--idempotency-key", dest="idempotency_key", help="default: a fresh UUID (kept when resuming)")
    send.set_defaults(run=functools.partial(run, command=_send))

    inbox = commands.add_parser("inbox", parents=[common], help="list the messages waiting")
    inbox.add_argument("--wait", type=int, default=0, help="seconds to wait for one when empty (servers with it)")
    inbox.add_argument("--workflow-filter", dest="workflow_filter")
    inbox.set_defaults(run=functools.partial(run, command=_inbox))

    get = commands.add_parser("get", parents=[common], help="download a message")
    get.add_argument("message_id")
    get.add_argument("-o", "--output", type=Path, help="where to write it (default: <message id>.dat)")
    get.add_argument("--ack", action="store_true", help="acknowledge once it is safely written")
    get.set_defaults(run=functools.partial(run, command=_get))

    ack = commands.add_parser("ack", parents=[common], help="acknowledge a message")
    ack.add_argument("message_id")
    ack.set_defaults(run=functools.partial(run, command=_ack))

    track = commands.add_parser("track", parents=[common], help="track a message you sent")
    track.add_argument("message_id")
    track.set_defaults(run=functools.partial(run, command=_track))

    lookup = commands.add_parser("lookup", parents=[common], help="mailboxes receiving a workflow in an ODS code")
    lookup.add_argument("ods_code")
    lookup.add_argument("workflow_id")
    lookup.set_defaults(run=functools.partial(run, command=_lookup))

    agent = commands.add_parser("agent", help="run the folder agent, a drop-in for the Java MESH Client")
    agent.add_argument("--config", required=True, type=Path, help="meshclient.cfg (MESHConfig XML) or a TOML file")
    # uvloop (installed by __main__, the one place that picks loops): the agent is many small requests and thread
    # hops, which it makes cheaper (about a tenth of each agent's CPU a file, benchmarks/README.md).
    agent.set_defaults(run=run_agent, event_loop="uvloop")


def run_agent(args: argparse.Namespace) -> int:
    """`mesh-broker agent --config PATH`: until SIGTERM or SIGINT."""
    from broker.client.agent import agent, config

    try:
        loaded = config.load(args.config)
    except config.ConfigError as exc:
        print(f"mesh-broker: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, stop.set)
        await agent.run_agent(loaded, stop)

    asyncio.run(main())
    return EXIT_OK


def run(args: argparse.Namespace, command: Callable[[MeshClient, argparse.Namespace], Any]) -> int:
    """Run one client command; errors become a message on stderr and an exit code."""
    try:
        creds = credentials(args, os.environ)
    except UsageError as exc:
        print(f"mesh-broker: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def go() -> Any:
        async with MeshClient(creds) as client:
            return await command(client, args)

    try:
        result = asyncio.run(go())
    except MeshError as exc:
        _fail(args, exc)
        return exit_code(exc)
    except UsageError as exc:
        print(f"mesh-broker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"mesh-broker: {exc}", file=sys.stderr)
        return EXIT_ERROR
    _print(args, result)
    return EXIT_OK


def exit_code(error: MeshError) -> int:
    if isinstance(error, IntegrityError):
        return EXIT_INTEGRITY
    if error.status == 403:
        return EXIT_AUTH
    if error.status in (404, 410):
        return EXIT_NOT_FOUND
    if error.status == 0 or error.status >= 500:
        return EXIT_UNAVAILABLE
    return EXIT_REFUSED


def _fail(args: argparse.Namespace, error: MeshError) -> None:
    if args.json:
        body = {
            "error": error.description,
            "status": error.status,
            "event": error.event,
            "code": error.code,
            "exit_code": exit_code(error),
        }
        print(orjson.dumps(body).decode())
    else:
        print(f"mesh-broker: {error}", file=sys.stderr)


def _print(args: argparse.Namespace, result: Any) -> None:
    if args.json:
        print(orjson.dumps(result).decode())
        return
    if isinstance(result, dict) and "text" in result:
        print(result["text"])
    elif isinstance(result, list):
        for line in result:
            print(line if isinstance(line, str) else "\t".join(str(v) for v in line.values()))
    elif isinstance(result, dict):
        for name, value in result.items():
            print(f"{name}: {value}")


@contextlib.contextmanager
def progress_bar(args: argparse.Namespace, description: str, total: int | None) -> Iterator[Progress | None]:
    """A rich progress bar (bytes, rate, ETA) on stderr when it is a terminal and --json is off."""
    if args.json or not sys.stderr.isatty():
        yield None
        return
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
    except ImportError:  # the client extra is not installed: no bar
        yield None
        return
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def journal_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mesh-broker" / "journal"


def _journal(kind: str, *parts: str) -> Path:
    name = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    return journal_dir() / f"{kind}-{name}.json"


async def _send(client: MeshClient, args: argparse.Namespace) -> dict[str, Any]:
    path: Path = args.file
    if not await asyncio.to_thread(path.is_file):
        raise UsageError(f"{path} is not a file")
    size = (await asyncio.to_thread(path.stat)).st_size
    await client.handshake()
    where = str(await asyncio.to_thread(path.resolve))
    journal = _journal("send", client.creds.url, client.creds.mailbox, where, args.to, args.workflow)
    with progress_bar(args, f"send {path.name}", size) as progress:
        message_id = await client.send(
            args.to,
            path,
            workflow_id=args.workflow,
            subject=args.subject,
            local_id=args.local_id,
            file_name=args.file_name or path.name,
            compress=args.compress,
            chunk_size=args.chunk_size,
            idempotency_key=args.idempotency_key,
            journal=journal,
            progress=progress,
        )
    return {"message_id": message_id, "text": message_id}


async def _inbox(client: MeshClient, args: argparse.Namespace) -> list[str]:
    if args.wait:
        await client.handshake()  # to learn whether the server can wait
    return [m async for m in client.iterate_inbox(workflow_filter=args.workflow_filter, wait=args.wait or None)]


async def _get(client: MeshClient, args: argparse.Namespace) -> dict[str, Any]:
    output: Path = args.output or Path(f"{args.message_id}.dat")
    where = str(await asyncio.to_thread(output.resolve))
    journal = _journal("get", client.creds.url, client.creds.mailbox, args.message_id, where)
    with progress_bar(args, f"get {args.message_id}", None) as progress:
        received = await client.download(args.message_id, output, journal=journal, progress=progress)
    if args.ack:
        await client.acknowledge(args.message_id)
    return {
        "message_id": received.message_id,
        "file": str(output),
        "size": received.size,
        "chunks": received.chunks,
        "acknowledged": bool(args.ack),
        "headers": received.headers,
        "text": str(output),
    }


async def _ack(client: MeshClient, args: argparse.Namespace) -> dict[str, Any]:
    await client.acknowledge(args.message_id)
    return {"message_id": args.message_id, "acknowledged": True, "text": f"{args.message_id} acknowledged"}


async def _track(client: MeshClient, args: argparse.Namespace) -> dict[str, Any]:
    return await client.track(args.message_id)


async def _lookup(client: MeshClient, args: argparse.Namespace) -> list[dict[str, str]]:
    return await client.lookup(args.ods_code, args.workflow_id)
