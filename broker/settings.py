"""Frozen broker settings; from_env() is the only reader of os.environ (prefix MESH_)."""

from __future__ import annotations

import ipaddress
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
#: The live service's client certificates are named `<MAILBOX>.<ODS>.api.mesh-client.nhs.uk` (mesh-api.md 2.6).
LIVE_CN_SUFFIX = "api.mesh-client.nhs.uk"
_DOMAIN = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*", re.IGNORECASE)
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
    #: Page cache per connection of the embedded (SQLite) store, MiB; reads beyond it come through its memory map.
    sqlite_cache_mib: int = 2
    s3_endpoint_url: str = ""
    s3_region: str = ""
    #: Tries per S3 request, the first included (botocore's "standard" retry mode: backoff with jitter).
    s3_max_attempts: int = 3
    s3_connect_timeout_seconds: float = 5.0
    s3_read_timeout_seconds: float = 30.0
    shared_key: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    tls_client_cert: str = "off"
    #: What follows `<MAILBOX>.<ODS>.` in a client certificate's CN: the live service's convention by default.
    tls_client_cn_suffix: str = LIVE_CN_SUFFIX
    #: Also let `<local id>.<ODS>.<suffix>` act for every mailbox of that ODS code (the spec's other CN form).
    tls_client_cn_ods_wide: bool = False
    demo: bool = False
    sandbox_admin: bool = False
    #: The operator's word that the store holds nothing of value, so sandbox admin may run outside demo mode.
    sandbox_admin_disposable_store: bool = False
    max_request_bytes: int = 100 * 1000 * 1000
    max_message_bytes: int = 100 * 1000 * 1000 * 1000
    max_chunks: int = 100_000
    transfer_memory_bytes: int = 256 * 1024 * 1024
    #: How long a connection may take to send a request's head, counted from when it opened or its last answer
    #: ended; also how long an idle kept-alive connection stays open (aiohttp's keep-alive timeout).
    header_timeout_seconds: float = 75.0
    #: The longest a message body may pause (no byte in, or none taken by the peer) before the transfer is ended.
    body_idle_timeout_seconds: float = 60.0
    #: A transfer may take this long, plus request_seconds_per_mb for each MB of its body, before it is ended.
    request_time_floor_seconds: float = 60.0
    request_seconds_per_mb: float = 10.0
    #: Open connections this node accepts, in all and from one client address; past either, 503 (0: no limit).
    max_connections: int = 4096
    max_connections_per_address: int = 256
    #: Uploads and downloads one mailbox may have in progress on this node; past it, 429 (0: no limit).
    max_transfers_per_mailbox: int = 64
    #: Requests a second one mailbox may make on this node, on average (0: no rate limit), and how many more it
    #: may make at once after a quiet spell (the token bucket's size).
    rate_limit_per_second: float = 0.0
    rate_limit_burst: int = 100
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
    #: The longest a long-poll inbox request (`GET .../inbox?wait=N`, our extension) waits for a message.
    inbox_wait_max_seconds: int = 120
    #: Where not every arrival is heard (SQLite; PostgreSQL while its listener is down), how often a waiting
    #: long poll looks at the inbox itself.
    inbox_wait_poll_seconds: float = 1.0
    #: Distinct workflow IDs given their own label on message metrics; the rest are counted as "other".
    metrics_workflow_labels: int = 50
    #: Serve /metrics on this port (plain HTTP) instead of the MESH port; 0 keeps it on the MESH port.
    metrics_port: int = 0
    #: The address the metrics port listens on ("" is MESH_HOST).
    metrics_host: str = ""
    #: Also answer /metrics on the MESH port, unauthenticated; off, so workflows and volumes stay private.
    metrics_on_mesh_port: bool = False
    #: After SIGTERM, how long requests in flight may take to finish before they are cut and the stores close.
    shutdown_grace_seconds: float = 25.0
    #: How long /readyz waits for the database, and for the blob store, before it reports that one failed.
    readiness_timeout_seconds: float = 2.0
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
    #: The web page for people at /ui (broker/ui, docs/web.md).
    ui: bool = True
    #: The largest file the web page takes; clients in ui_network_ranges get ui_network_max_upload_bytes.
    ui_max_upload_bytes: int = 50 * 1000 * 1000
    ui_network_max_upload_bytes: int = 100 * 1000 * 1000
    #: Client address ranges (CIDR, comma-separated) given the larger limit: the health network's.
    ui_network_ranges: str = ""
    #: How much of a refused upload is read and dropped, so that the browser shows the refusal page.
    ui_discard_limit_bytes: int = 1000 * 1000 * 1000
    ui_session_idle: timedelta = timedelta(minutes=15)
    ui_session_lifetime: timedelta = timedelta(hours=8)
    #: Failed sign-ins before a mailbox, or one client address, is locked out (then back-off doubles the lock).
    ui_lockout_failures: int = 5
    ui_lockout_address_failures: int = 20
    ui_lockout_base: timedelta = timedelta(minutes=1)
    ui_lockout_max: timedelta = timedelta(hours=1)
    #: How long without a failure before a count of failed sign-ins starts again.
    ui_lockout_quiet: timedelta = timedelta(minutes=15)
    #: Take the client's address from the last X-Forwarded-For entry (only behind a proxy that sets it).
    ui_forwarded_for: bool = False
    #: OpenID Connect sign-in (a CIS2-style identity provider); off while ui_oidc_issuer is empty.
    ui_oidc_issuer: str = ""
    ui_oidc_client_id: str = ""
    ui_oidc_client_secret: str = ""
    ui_oidc_redirect_url: str = ""
    #: JSON file mapping each user (the ID token's subject) to the mailboxes they may use.
    ui_oidc_users: Path | None = None
    ui_oidc_label: str = "NHS Care Identity Service 2"

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
        if not _DOMAIN.fullmatch(self.tls_client_cn_suffix):
            raise SettingsError(
                f"MESH_TLS_CLIENT_CN_SUFFIX must be a domain name such as {LIVE_CN_SUFFIX} (no leading dot), "
                f"not {self.tls_client_cn_suffix!r}"
            )
        if self.sandbox_admin and not (self.demo or self.sandbox_admin_disposable_store):
            # Its routes answer without authentication and delete or rewrite messages: never over a real store.
            raise SettingsError(
                "MESH_SANDBOX_ADMIN=on serves unauthenticated routes that delete every message and forge reports "
                "and statuses, so it needs MESH_DEMO=on, or MESH_SANDBOX_ADMIN_DISPOSABLE_STORE=on to say that "
                "this store (MESH_DATABASE_URL, MESH_BLOB_URL, MESH_DATA_DIR) holds nothing that must be kept"
            )
        for name in ("shutdown_grace_seconds", "readiness_timeout_seconds"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"MESH_{name.upper()} must be a number of seconds above zero")
        if not (0 < self.port < 65536):
            raise SettingsError(f"MESH_PORT must be between 1 and 65535, not {self.port}")
        if not 0 <= self.metrics_port < 65536 or self.metrics_port == self.port:
            raise SettingsError(
                f"MESH_METRICS_PORT must be 0 (off) or a port other than MESH_PORT ({self.port}), "
                f"not {self.metrics_port}"
            )
        if not 1 <= self.s3_max_attempts <= 10:
            raise SettingsError(f"MESH_S3_MAX_ATTEMPTS must be between 1 and 10, not {self.s3_max_attempts}")
        if not (self.s3_connect_timeout_seconds > 0 and self.s3_read_timeout_seconds > 0):
            raise SettingsError("MESH_S3_CONNECT_TIMEOUT_SECONDS and MESH_S3_READ_TIMEOUT_SECONDS must be positive")
        if not 0 <= self.inbox_wait_max_seconds <= 3600:
            raise SettingsError(
                "MESH_INBOX_WAIT_MAX_SECONDS must be between 0 (no long poll) and 3600, "
                f"not {self.inbox_wait_max_seconds}"
            )
        if not self.inbox_wait_poll_seconds > 0:
            raise SettingsError("MESH_INBOX_WAIT_POLL_SECONDS must be a number of seconds above zero")
        if self.metrics_workflow_labels < 0:
            raise SettingsError("MESH_METRICS_WORKFLOW_LABELS must be 0 or more")
        if not 1 <= self.sqlite_cache_mib <= 4096:
            raise SettingsError(f"MESH_SQLITE_CACHE_MIB must be between 1 and 4096, not {self.sqlite_cache_mib}")
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
        self._check_ui()
        self._check_limits()

    def _check_limits(self) -> None:
        """Timeouts, connection and transfer limits, and the per-mailbox rate limit (docs/production.md)."""
        for name in ("header_timeout_seconds", "body_idle_timeout_seconds", "request_time_floor_seconds"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"MESH_{name.upper()} must be a number of seconds above zero")
        for name in ("request_seconds_per_mb", "rate_limit_per_second"):
            if not getattr(self, name) >= 0:
                raise SettingsError(f"MESH_{name.upper()} must be 0 or more")
        for name in ("max_connections", "max_connections_per_address", "max_transfers_per_mailbox"):
            if getattr(self, name) < 0:
                raise SettingsError(f"MESH_{name.upper()} must be 0 (no limit) or more")
        if self.rate_limit_burst < 1:
            raise SettingsError(f"MESH_RATE_LIMIT_BURST must be at least 1, not {self.rate_limit_burst}")

    def _check_ui(self) -> None:
        """The web page's limits, sessions, lock-out and OpenID Connect settings."""
        if not 0 < self.ui_max_upload_bytes <= self.ui_network_max_upload_bytes:
            raise SettingsError(
                "MESH_UI_MAX_UPLOAD_BYTES must be positive and at most MESH_UI_NETWORK_MAX_UPLOAD_BYTES"
            )
        if self.ui_discard_limit_bytes < 0:
            raise SettingsError("MESH_UI_DISCARD_LIMIT_BYTES must be 0 or more")
        try:
            ui_networks(self.ui_network_ranges)
        except ValueError as exc:
            raise SettingsError(f"MESH_UI_NETWORK_RANGES must be CIDR ranges separated by commas: {exc}") from None
        if self.ui_session_idle > self.ui_session_lifetime:
            raise SettingsError("MESH_UI_SESSION_IDLE must be at most MESH_UI_SESSION_LIFETIME")
        if self.ui_lockout_failures < 1 or self.ui_lockout_address_failures < 1:
            raise SettingsError("MESH_UI_LOCKOUT_FAILURES and MESH_UI_LOCKOUT_ADDRESS_FAILURES must be 1 or more")
        if self.ui_lockout_base > self.ui_lockout_max:
            raise SettingsError("MESH_UI_LOCKOUT_BASE must be at most MESH_UI_LOCKOUT_MAX")
        if self.ui_oidc_issuer:
            if not self.ui_oidc_issuer.startswith(("https://", "http://")):
                raise SettingsError("MESH_UI_OIDC_ISSUER must be the identity provider's https:// URL")
            if not (self.ui_oidc_client_id and self.ui_oidc_redirect_url and self.ui_oidc_users):
                raise SettingsError(
                    "MESH_UI_OIDC_ISSUER needs MESH_UI_OIDC_CLIENT_ID, MESH_UI_OIDC_REDIRECT_URL (this broker's "
                    "https://.../ui/oidc/callback) and MESH_UI_OIDC_USERS (who may use which mailboxes)"
                )

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


_PATHS = {"data_dir", "tls_cert", "tls_key", "tls_client_ca", "ui_oidc_users"}
_INTS = {
    "port",
    "db_pool_min",
    "db_pool_max",
    "sqlite_cache_mib",
    "max_request_bytes",
    "max_message_bytes",
    "max_chunks",
    "transfer_memory_bytes",
    "max_connections",
    "max_connections_per_address",
    "max_transfers_per_mailbox",
    "rate_limit_burst",
    "inline_chunk_bytes",
    "auth_clock_skew_seconds",
    "metrics_workflow_labels",
    "ui_max_upload_bytes",
    "ui_network_max_upload_bytes",
    "ui_discard_limit_bytes",
    "ui_lockout_failures",
    "ui_lockout_address_failures",
    "pds_retries",
    "s3_max_attempts",
    "pds_cache_seconds",
    "metrics_port",
    "inbox_wait_max_seconds",
}
_FLOATS = {
    "pds_timeout_seconds",
    "header_timeout_seconds",
    "body_idle_timeout_seconds",
    "request_time_floor_seconds",
    "request_seconds_per_mb",
    "rate_limit_per_second",
    "s3_connect_timeout_seconds",
    "s3_read_timeout_seconds",
    "shutdown_grace_seconds",
    "readiness_timeout_seconds",
    "inbox_wait_poll_seconds",
}
_FLAGS = {
    "demo",
    "sandbox_admin",
    "sandbox_admin_disposable_store",
    "db_migrate",
    "db_directory_cache",
    "ui",
    "ui_forwarded_for",
    "tls_client_cn_ods_wide",
    "metrics_on_mesh_port",
}
_DURATIONS = (
    "inbox_expiry",
    "retention",
    "upload_timeout",
    "housekeeping_interval",
    "orphan_grace",
    "ui_session_idle",
    "ui_session_lifetime",
    "ui_lockout_base",
    "ui_lockout_max",
    "ui_lockout_quiet",
)


def ui_networks(ranges: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """MESH_UI_NETWORK_RANGES as networks; raises ValueError for one that is not a CIDR range."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in ranges.split(",") if part.strip())


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
    if field_name in ("tls_client_cert", "tls_client_cn_suffix", "event_loop", "demographics"):
        return raw.strip().lower()
    return raw
