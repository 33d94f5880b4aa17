"""The agent's configuration: the Java MESH Client's own `meshclient.cfg` (`MESHConfig` XML) or a TOML file of ours.

From meshclient.cfg: PrimaryURL, AuthenticationKey (the shared key), PollPeriod (minutes), ProcessingDelay
(seconds), MaxConnections, and each Client's ClientIdentity, ClientAuthentication and InterfaceRoot. The Java
client's JKS keystore cannot be read here; for TLS the same file may carry elements of ours: CACertPath,
ClientCertPath, ClientKeyPath (PEM files), and ChunkSize (bytes) and Compress (Y/N, the default for control files
that do not say). docs/client.md shows both forms.
"""

from __future__ import annotations

import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.client.client import MAX_CHUNK_BYTES, Credentials

#: The Java client's chunk size (20 MB) when chunking is allowed.
DEFAULT_CHUNK_BYTES = 20 * 1000 * 1000
DEFAULT_POLL_MINUTES = 30.0
#: How long a long poll asks the server to wait: under the 60 s idle timeout of common load balancers.
DEFAULT_WAIT_SECONDS = 50


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the element or key."""


@dataclass(frozen=True)
class MailboxConfig:
    mailbox_id: str
    password: str
    root: Path

    def folder(self, name: str) -> Path:
        return self.root / name


@dataclass(frozen=True)
class AgentConfig:
    url: str
    shared_key: str
    mailboxes: tuple[MailboxConfig, ...]
    poll_minutes: float = DEFAULT_POLL_MINUTES
    #: A control file that cannot be read yet is given this long to be finished before it is failed.
    processing_delay: float = 1.0
    chunk_size: int = DEFAULT_CHUNK_BYTES
    compress: bool = False
    parallel: int = 8
    wait_seconds: int = DEFAULT_WAIT_SECONDS
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    check_hostname: bool = True
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    extra: dict[str, Any] = field(default_factory=dict)

    def credentials(self, mailbox: MailboxConfig) -> Credentials:
        return Credentials(
            self.url,
            mailbox.mailbox_id,
            mailbox.password,
            self.shared_key.encode(),
            ca=self.ca,
            cert=self.cert,
            key=self.key,
            check_hostname=self.check_hostname,
        )


def load(path: Path) -> AgentConfig:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    config = _from_xml(text, path) if text.lstrip().startswith(b"<") else _from_toml(text, path)
    if not config.mailboxes:
        raise ConfigError(f"{path} names no mailbox")
    if not 0 < config.chunk_size <= MAX_CHUNK_BYTES:
        raise ConfigError(f"the chunk size must be between 1 and {MAX_CHUNK_BYTES} bytes")
    return config


def _from_xml(text: bytes, path: Path) -> AgentConfig:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ConfigError(f"{path} is not well-formed XML: {exc}") from None
    if root.tag != "MESHConfig":
        raise ConfigError(f"{path}: the root element is <{root.tag}>, not <MESHConfig>")

    def text_of(element: ET.Element, name: str, default: str = "") -> str:
        found = element.find(name)
        return (found.text or "").strip() if found is not None and found.text else default

    mailboxes = []
    for client in root.findall("Client"):
        identity = text_of(client, "ClientIdentity")
        if not identity:
            raise ConfigError(f"{path}: a <Client> has no <ClientIdentity>")
        interface_root = text_of(client, "InterfaceRoot") or str(path.parent / identity)
        mailboxes.append(MailboxConfig(identity.upper(), text_of(client, "ClientAuthentication"), Path(interface_root)))
    url = text_of(root, "PrimaryURL")
    if not url:
        raise ConfigError(f"{path}: <PrimaryURL> is missing")
    return AgentConfig(
        url=url,
        shared_key=text_of(root, "AuthenticationKey"),
        mailboxes=tuple(mailboxes),
        poll_minutes=_number(text_of(root, "PollPeriod", str(DEFAULT_POLL_MINUTES)), "PollPeriod"),
        processing_delay=_number(text_of(root, "ProcessingDelay", "1"), "ProcessingDelay"),
        parallel=int(_number(text_of(root, "MaxConnections", "8"), "MaxConnections")),
        chunk_size=int(_number(text_of(root, "ChunkSize", str(DEFAULT_CHUNK_BYTES)), "ChunkSize")),
        compress=text_of(root, "Compress", "N").upper() in ("Y", "YES", "TRUE"),
        ca=_path(text_of(root, "CACertPath")),
        cert=_path(text_of(root, "ClientCertPath")),
        key=_path(text_of(root, "ClientKeyPath")),
    )


def _from_toml(text: bytes, path: Path) -> AgentConfig:
    try:
        values = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is neither a MESHConfig XML file nor valid TOML: {exc}") from None
    try:
        mailboxes = tuple(
            MailboxConfig(str(m["id"]).upper(), str(m["password"]), Path(m["root"])) for m in values.get("mailbox", [])
        )
        return AgentConfig(
            url=str(values["url"]),
            shared_key=str(values["shared_key"]),
            mailboxes=mailboxes,
            poll_minutes=float(values.get("poll_period_minutes", DEFAULT_POLL_MINUTES)),
            processing_delay=float(values.get("processing_delay_seconds", 1.0)),
            chunk_size=int(values.get("chunk_size", DEFAULT_CHUNK_BYTES)),
            compress=bool(values.get("compress", False)),
            parallel=int(values.get("parallel", 8)),
            wait_seconds=int(values.get("wait_seconds", DEFAULT_WAIT_SECONDS)),
            ca=_path(values.get("ca", "")),
            cert=_path(values.get("cert", "")),
            key=_path(values.get("key", "")),
            check_hostname=bool(values.get("check_hostname", True)),
            metrics_port=int(values.get("metrics_port", 0)),
            metrics_host=str(values.get("metrics_host", "127.0.0.1")),
        )
    except KeyError as exc:
        raise ConfigError(f"{path}: {exc.args[0]} is missing") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"<{name}> must be a number, not {text!r}") from None


def _path(text: str) -> Path | None:
    return Path(text) if text else None
