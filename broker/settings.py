"""Frozen broker settings; from_env() is the only reader of os.environ (prefix MESH_)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

DEMO_SHARED_KEY = "TestKey"
CLIENT_CERT_MODES = ("off", "optional", "required")
EVENT_LOOPS = ("uvloop", "asyncio")
DEMOGRAPHICS_SOURCES = ("local", "pds")
#: Inline chunks sit in metadata rows and in one request's memory: past 1 MiB the blob store is the better home.
MAX_INLINE_CHUNK_BYTES = 1024 * 1024


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable and what would fix it."""


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0", ""):
        return False
    raise SettingsError(f"{name} must be on or off, not {raw!r}")


def _float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None


_DURATION = re.compile(r"^(\d+)([dhms]?)$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds", "": "seconds"}


def parse_duration(name: str, raw: str) -> timedelta:
    """`5d`, `24h`, `90m`, `60s`, or a bare number of seconds (`3600`)."""
    match = _DURATION.match(raw.strip().lower())
    if match is None:
        raise SettingsError(
            f"{name} must be a duration: a whole number with d, h, m or s (5d, 24h, 90m, 60s) or seconds, not {raw!r}"
        )
    number, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(number)})


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of a broker node. Build directly in tests; from_env() in production."""

    host: str = "127.0.0.1"
    port: int = 8700
    data_dir: Path = Path(".mesh-data")
    database_url: str = ""
    blob_url: str = ""
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_migrate: bool = True
    #: Mailboxes and workflows served from memory, told of changes by LISTEN/NOTIFY (PostgreSQL only).
    db_directory_cache: bool = True
    s3_endpoint_url: str = ""
    s3_region: str = ""
    shared_key: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    tls_client_cert: str = "off"
    demo: bool = False
    sandbox_admin: bool = False
    max_request_bytes: int = 100 * 1000 * 1000
    max_message_bytes: int = 100 * 1000 * 1000 * 1000
    max_chunks: int = 100_000
    transfer_memory_bytes: int = 256 * 1024 * 1024
    #: Chunks of at most this many bytes are kept in their metadata row instead of the blob store (0: none).
    inline_chunk_bytes: int = 64 * 1024
    #: How long a delivered message waits to be acknowledged before it becomes undeliverable (with an NDR).
    inbox_expiry: timedelta = timedelta(days=5)
    #: How long any message's rows and bytes are kept after it was created, whatever its status.
    retention: timedelta = timedelta(days=30)
    #: How long a chunked upload may wait for its missing chunks before it fails (status error).
    upload_timeout: timedelta = timedelta(hours=24)
    housekeeping_interval: timedelta = timedelta(seconds=60)
    #: How old a blob with no row must be before housekeeping takes it for a crash leftover and deletes it.
    orphan_grace: timedelta = timedelta(hours=1)
    auth_clock_skew_seconds: int = 2 * 3600
    #: Distinct workflow IDs given their own label on message metrics; the rest are counted as "other".
    metrics_workflow_labels: int = 50
    #: Serve /metrics on this port (plain HTTP) instead of the MESH port; 0 keeps it on the MESH port.
    metrics_port: int = 0
    #: The address the metrics port listens on ("" is MESH_HOST).
    metrics_host: str = ""
    event_loop: str = "uvloop"
    env_name: str = "local"
    build_label: str = "latest"
    demographics: str = "local"
    pds_url: str = ""
    pds_timeout_seconds: float = 3.0
    pds_retries: int = 2
    pds_cache_seconds: int = 300
    pds_api_key: str = ""
    pds_bearer_token: str = ""

    def __post_init__(self) -> None:
        if self.tls_client_cert not in CLIENT_CERT_MODES:
            raise SettingsError(
                f"MESH_TLS_CLIENT_CERT must be one of {', '.join(CLIENT_CERT_MODES)}, not {self.tls_client_cert!r}"
            )
        if self.event_loop not in EVENT_LOOPS:
            raise SettingsError(f"MESH_EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}, not {self.event_loop!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("MESH_TLS_CERT and MESH_TLS_KEY must be set together")
        if self.tls_client_cert != "off" and (self.tls_cert is None or self.tls_client_ca is None):
            raise SettingsError("MESH_TLS_CLIENT_CERT needs HTTPS (MESH_TLS_CERT, MESH_TLS_KEY) and MESH_TLS_CLIENT_CA")
        if not (0 < self.port < 65536):
            raise SettingsError(f"MESH_PORT must be between 1 and 65535, not {self.port}")
        if not 0 <= self.metrics_port < 65536 or self.metrics_port == self.port:
            raise SettingsError(
                f"MESH_METRICS_PORT must be 0 (off) or a port other than MESH_PORT ({self.port}), "
                f"not {self.metrics_port}"
            )
        if self.metrics_workflow_labels < 0:
            raise SettingsError("MESH_METRICS_WORKFLOW_LABELS must be 0 or more")
        if not 1 <= self.db_pool_min <= self.db_pool_max:
            raise SettingsError("MESH_DB_POOL_MIN must be at least 1 and at most MESH_DB_POOL_MAX")
        if not 0 <= self.inline_chunk_bytes <= MAX_INLINE_CHUNK_BYTES:
            raise SettingsError(
                f"MESH_INLINE_CHUNK_BYTES must be between 0 (off) and {MAX_INLINE_CHUNK_BYTES}, "
                f"not {self.inline_chunk_bytes}"
            )
        if self.max_request_bytes <= 0 or self.max_message_bytes < self.max_request_bytes:
            raise SettingsError("MESH_MAX_REQUEST_BYTES must be positive and at most MESH_MAX_MESSAGE_BYTES")
        for name in _DURATIONS:
            if getattr(self, name) <= timedelta(0):
                raise SettingsError(f"MESH_{name.upper()} must be longer than zero")
        if self.retention < self.inbox_expiry:
            # Purging first would delete unacknowledged messages before their senders were told (no NDR).
            raise SettingsError("MESH_RETENTION must be at least MESH_INBOX_EXPIRY")
        self._check_demographics()

    def _check_demographics(self) -> None:
        if self.demographics not in DEMOGRAPHICS_SOURCES:
            raise SettingsError(
                f"MESH_DEMOGRAPHICS must be one of {', '.join(DEMOGRAPHICS_SOURCES)}, not {self.demographics!r}"
            )
        if self.demographics == "pds" and not self.pds_url.startswith(("http://", "https://")):
            raise SettingsError(
                "MESH_DEMOGRAPHICS=pds needs MESH_PDS_URL, the PDS FHIR base URL (http:// or https://), "
                "e.g. https://sandbox.api.service.nhs.uk/personal-demographics/FHIR/R4"
            )
        if not self.pds_timeout_seconds > 0:
            raise SettingsError(f"MESH_PDS_TIMEOUT_SECONDS must be positive, not {self.pds_timeout_seconds}")
        if not 0 <= self.pds_retries <= 10:
            raise SettingsError(f"MESH_PDS_RETRIES must be between 0 and 10, not {self.pds_retries}")
        if self.pds_cache_seconds < 0:
            raise SettingsError(f"MESH_PDS_CACHE_SECONDS must be 0 (no cache) or more, not {self.pds_cache_seconds}")

    @property
    def effective_shared_key(self) -> bytes:
        """The HMAC key; demo mode falls back to the sandbox's well-known TestKey."""
        if self.shared_key:
            return self.shared_key.encode()
        if self.demo:
            return DEMO_SHARED_KEY.encode()
        raise SettingsError(
            "MESH_SHARED_KEY is required (the environment's shared HMAC secret); "
            "set it, or run with MESH_DEMO=on for local demo credentials"
        )

    @property
    def database_path(self) -> Path:
        return self.data_dir / "mesh.sqlite3"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read MESH_* variables, then apply explicit overrides (CLI flags) that are not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"MESH_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


_PATHS = {"data_dir", "tls_cert", "tls_key", "tls_client_ca"}
_INTS = {
    "port",
    "db_pool_min",
    "db_pool_max",
    "max_request_bytes",
    "max_message_bytes",
    "max_chunks",
    "transfer_memory_bytes",
    "inline_chunk_bytes",
    "auth_clock_skew_seconds",
    "metrics_workflow_labels",
    "pds_retries",
    "pds_cache_seconds",
    "metrics_port",
}
_FLOATS = {"pds_timeout_seconds"}
_FLAGS = {"demo", "sandbox_admin", "db_migrate", "db_directory_cache"}
_DURATIONS = ("inbox_expiry", "retention", "upload_timeout", "housekeeping_interval", "orphan_grace")


def _convert(field_name: str, env_name: str, raw: str) -> Any:
    if field_name in _PATHS:
        return Path(raw)
    if field_name in _INTS:
        return _int(env_name, raw)
    if field_name in _FLOATS:
        return _float(env_name, raw)
    if field_name in _FLAGS:
        return _flag(env_name, raw)
    if field_name in _DURATIONS:
        return parse_duration(env_name, raw)
    if field_name in ("tls_client_cert", "event_loop", "demographics"):
        return raw.strip().lower()
    return raw
