"""broker/settings.py: MESH_* parsing, validation that names the variable, overrides, the shared key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from broker.settings import DEMO_SHARED_KEY, Settings, SettingsError, parse_duration


def test_defaults_without_environment() -> None:
    assert Settings.from_env({}) == Settings()


def test_from_env_parses_each_kind() -> None:
    settings = Settings.from_env(
        {
            "MESH_HOST": "0.0.0.0",
            "MESH_PORT": "9443",
            "MESH_DATA_DIR": "/var/lib/mesh",
            "MESH_SHARED_KEY": "secret",
            "MESH_DEMO": "on",
            "MESH_SANDBOX_ADMIN": "true",
            "MESH_MAX_REQUEST_BYTES": "1000",
            "MESH_INBOX_EXPIRY": "7d",
            "MESH_RETENTION": "40d",
            "MESH_UPLOAD_TIMEOUT": "90m",
            "MESH_HOUSEKEEPING_INTERVAL": "15",
            "MESH_ORPHAN_GRACE": "2h",
            "MESH_AUTH_CLOCK_SKEW_SECONDS": "60",
            "MESH_ENV_NAME": "int",
            "MESH_BUILD_LABEL": "v1.2",
            "OTHER_VARIABLE": "ignored",
        }
    )
    assert settings.host == "0.0.0.0"
    assert settings.port == 9443
    assert settings.data_dir == Path("/var/lib/mesh")
    assert settings.database_path == Path("/var/lib/mesh/mesh.sqlite3")
    assert settings.blob_dir == Path("/var/lib/mesh/blobs")
    assert settings.shared_key == "secret"
    assert settings.demo is True
    assert settings.sandbox_admin is True
    assert settings.max_request_bytes == 1000
    assert settings.inbox_expiry == timedelta(days=7)
    assert settings.retention == timedelta(days=40)
    assert settings.upload_timeout == timedelta(minutes=90)
    assert settings.housekeeping_interval == timedelta(seconds=15)
    assert settings.orphan_grace == timedelta(hours=2)
    assert settings.auth_clock_skew_seconds == 60
    assert (settings.env_name, settings.build_label) == ("int", "v1.2")
    assert settings.tls is False


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_PORT", "8123")
    monkeypatch.setenv("MESH_DEMO", "yes")
    settings = Settings.from_env()
    assert (settings.port, settings.demo) == (8123, True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(v, True) for v in ("on", "ON", "true", "yes", "1", " On ")]
    + [(v, False) for v in ("off", "OFF", "false", "no", "0")],
)
def test_flags(raw: str, expected: bool) -> None:
    assert Settings.from_env({"MESH_DEMO": raw, "MESH_SANDBOX_ADMIN": raw}).demo is expected
    assert Settings.from_env({"MESH_DEMO": "on", "MESH_SANDBOX_ADMIN": raw}).sandbox_admin is expected
    assert Settings.from_env({"MESH_METRICS_ON_MESH_PORT": raw}).metrics_on_mesh_port is expected


def test_empty_values_mean_unset() -> None:
    assert Settings.from_env({"MESH_PORT": "", "MESH_DEMO": ""}) == Settings()


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"MESH_PORT": "eighty"}, "MESH_PORT"),
        ({"MESH_PORT": "0"}, "MESH_PORT"),
        ({"MESH_PORT": "70000"}, "MESH_PORT"),
        ({"MESH_METRICS_PORT": "70000"}, "MESH_METRICS_PORT"),
        ({"MESH_METRICS_PORT": "8700"}, "MESH_METRICS_PORT"),  # the MESH port itself
        ({"MESH_METRICS_PORT": "nine"}, "MESH_METRICS_PORT"),
        ({"MESH_DEMO": "maybe"}, "MESH_DEMO"),
        ({"MESH_SANDBOX_ADMIN": "y"}, "MESH_SANDBOX_ADMIN"),
        ({"MESH_MAX_REQUEST_BYTES": "1.5"}, "MESH_MAX_REQUEST_BYTES"),
        ({"MESH_MAX_REQUEST_BYTES": "0"}, "MESH_MAX_REQUEST_BYTES"),
        ({"MESH_INBOX_EXPIRY": "five"}, "MESH_INBOX_EXPIRY"),
        ({"MESH_INBOX_EXPIRY": "0s"}, "MESH_INBOX_EXPIRY"),
        ({"MESH_RETENTION": "1w"}, "MESH_RETENTION"),
        ({"MESH_RETENTION": "4d"}, "MESH_RETENTION"),
        ({"MESH_UPLOAD_TIMEOUT": "-1h"}, "MESH_UPLOAD_TIMEOUT"),
        ({"MESH_HOUSEKEEPING_INTERVAL": "1.5s"}, "MESH_HOUSEKEEPING_INTERVAL"),
        ({"MESH_ORPHAN_GRACE": "h"}, "MESH_ORPHAN_GRACE"),
        ({"MESH_AUTH_CLOCK_SKEW_SECONDS": "2h"}, "MESH_AUTH_CLOCK_SKEW_SECONDS"),
        ({"MESH_TLS_CLIENT_CERT": "sometimes"}, "MESH_TLS_CLIENT_CERT"),
        ({"MESH_TLS_CERT": "/c.pem"}, "MESH_TLS_KEY"),
        ({"MESH_TLS_CLIENT_CERT": "required"}, "MESH_TLS_CLIENT_CERT"),
        ({"MESH_TLS_CLIENT_CN_SUFFIX": ".api.mesh-client.nhs.uk"}, "MESH_TLS_CLIENT_CN_SUFFIX"),
        ({"MESH_TLS_CLIENT_CN_SUFFIX": "api..nhs.uk"}, "MESH_TLS_CLIENT_CN_SUFFIX"),
        ({"MESH_TLS_CLIENT_CN_SUFFIX": "*.nhs.uk"}, "MESH_TLS_CLIENT_CN_SUFFIX"),
        ({"MESH_TLS_CLIENT_CN_ODS_WIDE": "ods"}, "MESH_TLS_CLIENT_CN_ODS_WIDE"),
        ({"MESH_METRICS_ON_MESH_PORT": "public"}, "MESH_METRICS_ON_MESH_PORT"),
        ({"MESH_SHUTDOWN_GRACE_SECONDS": "0"}, "MESH_SHUTDOWN_GRACE_SECONDS"),
        ({"MESH_SHUTDOWN_GRACE_SECONDS": "-5"}, "MESH_SHUTDOWN_GRACE_SECONDS"),
        ({"MESH_SHUTDOWN_GRACE_SECONDS": "25s"}, "MESH_SHUTDOWN_GRACE_SECONDS"),
        ({"MESH_SHUTDOWN_GRACE_SECONDS": "nan"}, "MESH_SHUTDOWN_GRACE_SECONDS"),
        ({"MESH_READINESS_TIMEOUT_SECONDS": "0"}, "MESH_READINESS_TIMEOUT_SECONDS"),
    ],
)
def test_invalid_values_name_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(environ)


def test_tls_client_cert_mode_is_case_insensitive() -> None:
    settings = Settings.from_env(
        {
            "MESH_TLS_CERT": "/c.pem",
            "MESH_TLS_KEY": "/k.pem",
            "MESH_TLS_CLIENT_CA": "/ca.pem",
            "MESH_TLS_CLIENT_CERT": " Required ",
        }
    )
    assert settings.tls_client_cert == "required"
    assert settings.tls is True
    assert settings.tls_client_ca == Path("/ca.pem")


def test_overrides_win_over_the_environment_and_none_is_no_override() -> None:
    environ = {"MESH_PORT": "9000", "MESH_HOST": "0.0.0.0", "MESH_DEMO": "off"}
    settings = Settings.from_env(environ, port=9100, host=None, demo=True)
    assert (settings.port, settings.host, settings.demo) == (9100, "0.0.0.0", True)


def test_overrides_are_validated_too() -> None:
    with pytest.raises(SettingsError, match="MESH_PORT"):
        Settings.from_env({}, port=0)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
    assert settings.with_(port=1234).port == 1234
    assert settings.port == 8700


def test_effective_shared_key() -> None:
    assert Settings(shared_key="secret").effective_shared_key == b"secret"
    assert Settings(shared_key="secret", demo=True).effective_shared_key == b"secret"
    assert Settings(demo=True).effective_shared_key == DEMO_SHARED_KEY.encode()
    with pytest.raises(SettingsError, match="MESH_SHARED_KEY"):
        _ = Settings().effective_shared_key


def test_demographics_settings_from_env() -> None:
    settings = Settings.from_env(
        {
            "MESH_DEMOGRAPHICS": "PDS",
            "MESH_PDS_URL": "https://pds.example/FHIR/R4",
            "MESH_PDS_TIMEOUT_SECONDS": "1.5",
            "MESH_PDS_RETRIES": "3",
            "MESH_PDS_CACHE_SECONDS": "0",
            "MESH_PDS_API_KEY": "key",
        }
    )
    assert (settings.demographics, settings.pds_url) == ("pds", "https://pds.example/FHIR/R4")
    assert (settings.pds_timeout_seconds, settings.pds_retries, settings.pds_cache_seconds) == (1.5, 3, 0)
    assert settings.pds_api_key == "key"
    assert Settings().demographics == "local"


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"MESH_DEMOGRAPHICS": "spine"}, "MESH_DEMOGRAPHICS"),
        ({"MESH_DEMOGRAPHICS": "pds"}, "MESH_PDS_URL"),
        ({"MESH_DEMOGRAPHICS": "pds", "MESH_PDS_URL": "pds.example"}, "MESH_PDS_URL"),
        ({"MESH_PDS_TIMEOUT_SECONDS": "0"}, "MESH_PDS_TIMEOUT_SECONDS"),
        ({"MESH_PDS_TIMEOUT_SECONDS": "soon"}, "MESH_PDS_TIMEOUT_SECONDS"),
        ({"MESH_PDS_RETRIES": "-1"}, "MESH_PDS_RETRIES"),
        ({"MESH_PDS_CACHE_SECONDS": "-5"}, "MESH_PDS_CACHE_SECONDS"),
    ],
)
def test_demographics_settings_are_checked(environ: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5d", timedelta(days=5)),
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
        ("60s", timedelta(seconds=60)),
        ("3600", timedelta(seconds=3600)),
        (" 2S ", timedelta(seconds=2)),
        ("0", timedelta(0)),
    ],
)
def test_parse_duration(raw: str, expected: timedelta) -> None:
    assert parse_duration("MESH_X", raw) == expected


@pytest.mark.parametrize("raw", ["", "d", "5 d", "5days", "1.5h", "-5s", "5w", "1h30m", "five"])
def test_parse_duration_rejects_other_text_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="MESH_X must be a duration"):
        parse_duration("MESH_X", raw)


def test_lifecycle_defaults() -> None:
    settings = Settings()
    assert settings.inbox_expiry == timedelta(days=5)
    assert settings.retention == timedelta(days=30)
    assert settings.upload_timeout == timedelta(hours=24)
    assert settings.housekeeping_interval == timedelta(seconds=60)
    assert settings.orphan_grace == timedelta(hours=1)


def test_hardening_defaults() -> None:
    settings = Settings()
    assert settings.tls_client_cn_suffix == "api.mesh-client.nhs.uk"  # the live convention (mesh-api.md 2.6)
    assert settings.tls_client_cn_ods_wide is False
    assert settings.metrics_on_mesh_port is False
    assert (settings.sandbox_admin, settings.sandbox_admin_disposable_store) == (False, False)
    assert settings.shutdown_grace_seconds == 25.0  # under Kubernetes' default terminationGracePeriodSeconds (30)
    assert settings.readiness_timeout_seconds == 2.0


def test_hardening_settings_from_env() -> None:
    settings = Settings.from_env(
        {
            "MESH_TLS_CLIENT_CN_SUFFIX": " Mesh-Client.Test.Example ",
            "MESH_TLS_CLIENT_CN_ODS_WIDE": "on",
            "MESH_METRICS_ON_MESH_PORT": "on",
            "MESH_SANDBOX_ADMIN": "on",
            "MESH_SANDBOX_ADMIN_DISPOSABLE_STORE": "on",
            "MESH_SHUTDOWN_GRACE_SECONDS": "7.5",
            "MESH_READINESS_TIMEOUT_SECONDS": "0.5",
        }
    )
    assert settings.tls_client_cn_suffix == "mesh-client.test.example"
    assert settings.tls_client_cn_ods_wide is True
    assert settings.metrics_on_mesh_port is True
    assert (settings.sandbox_admin, settings.sandbox_admin_disposable_store, settings.demo) == (True, True, False)
    assert (settings.shutdown_grace_seconds, settings.readiness_timeout_seconds) == (7.5, 0.5)


@pytest.mark.parametrize(
    "environ",
    [
        {"MESH_SANDBOX_ADMIN": "on"},
        {"MESH_SANDBOX_ADMIN": "on", "MESH_DATABASE_URL": "postgresql://mesh@db/mesh"},
        {"MESH_SANDBOX_ADMIN": "on", "MESH_DEMO": "off", "MESH_SANDBOX_ADMIN_DISPOSABLE_STORE": "off"},
    ],
)
def test_sandbox_admin_refuses_a_store_not_declared_disposable(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ)
    for name in ("MESH_SANDBOX_ADMIN", "MESH_DEMO", "MESH_SANDBOX_ADMIN_DISPOSABLE_STORE"):
        assert name in str(raised.value)


def test_sandbox_admin_runs_in_demo_mode_or_over_a_disposable_store() -> None:
    assert Settings(sandbox_admin=True, demo=True).sandbox_admin
    assert Settings(sandbox_admin=True, sandbox_admin_disposable_store=True).sandbox_admin
    assert not Settings(sandbox_admin_disposable_store=True).sandbox_admin  # the word alone turns nothing on
