"""The timeout, connection, transfer and rate-limit settings: read from MESH_* variables, checked at start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.settings import Settings, SettingsError


def test_limits_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "MESH_HEADER_TIMEOUT_SECONDS": "30",
            "MESH_BODY_IDLE_TIMEOUT_SECONDS": "2.5",
            "MESH_REQUEST_TIME_FLOOR_SECONDS": "20",
            "MESH_REQUEST_SECONDS_PER_MB": "0.5",
            "MESH_MAX_CONNECTIONS": "100",
            "MESH_MAX_CONNECTIONS_PER_ADDRESS": "0",
            "MESH_MAX_TRANSFERS_PER_MAILBOX": "8",
            "MESH_RATE_LIMIT_PER_SECOND": "0.5",
            "MESH_RATE_LIMIT_BURST": "10",
        }
    )
    assert (settings.header_timeout_seconds, settings.body_idle_timeout_seconds) == (30.0, 2.5)
    assert (settings.request_time_floor_seconds, settings.request_seconds_per_mb) == (20.0, 0.5)
    assert (settings.max_connections, settings.max_connections_per_address) == (100, 0)
    assert settings.max_transfers_per_mailbox == 8
    assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (0.5, 10)


def test_the_defaults_limit_connections_and_transfers_but_not_the_rate() -> None:
    settings = Settings()
    assert settings.max_connections and settings.max_connections_per_address and settings.max_transfers_per_mailbox
    assert settings.rate_limit_per_second == 0
    assert settings.header_timeout_seconds > 60  # above a load balancer's usual idle timeout


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"header_timeout_seconds": 0}, "MESH_HEADER_TIMEOUT_SECONDS"),
        ({"body_idle_timeout_seconds": -1}, "MESH_BODY_IDLE_TIMEOUT_SECONDS"),
        ({"request_time_floor_seconds": 0}, "MESH_REQUEST_TIME_FLOOR_SECONDS"),
        ({"request_seconds_per_mb": -0.1}, "MESH_REQUEST_SECONDS_PER_MB"),
        ({"max_connections": -1}, "MESH_MAX_CONNECTIONS"),
        ({"max_connections_per_address": -1}, "MESH_MAX_CONNECTIONS_PER_ADDRESS"),
        ({"max_transfers_per_mailbox": -1}, "MESH_MAX_TRANSFERS_PER_MAILBOX"),
        ({"rate_limit_per_second": -1}, "MESH_RATE_LIMIT_PER_SECOND"),
        ({"rate_limit_burst": 0}, "MESH_RATE_LIMIT_BURST"),
    ],
)
def test_a_limit_out_of_range_names_its_variable(changes: dict[str, float], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings(**changes)  # type: ignore[arg-type]


def test_a_limit_that_is_not_a_number_names_its_variable() -> None:
    with pytest.raises(SettingsError, match="MESH_BODY_IDLE_TIMEOUT_SECONDS"):
        Settings.from_env({"MESH_BODY_IDLE_TIMEOUT_SECONDS": "soon"})


LIMIT_FIELDS = (
    "header_timeout_seconds",
    "body_idle_timeout_seconds",
    "request_time_floor_seconds",
    "request_seconds_per_mb",
    "max_connections",
    "max_connections_per_address",
    "max_transfers_per_mailbox",
    "rate_limit_per_second",
    "rate_limit_burst",
)


def test_every_limit_is_documented() -> None:
    table = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"^\| `(MESH_\w+)`", table, re.MULTILINE))
    assert {f"MESH_{name.upper()}" for name in LIMIT_FIELDS} <= documented
    assert set(LIMIT_FIELDS) <= set(Settings.__dataclass_fields__)
