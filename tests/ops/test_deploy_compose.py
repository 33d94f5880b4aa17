"""deploy/compose.yaml against the compose specification's JSON schema (the copy check-jsonschema ships), and the
topology it describes: a migration before the nodes, HAProxy checking each node's /readyz, Prometheus scraping each
node and loading the alert rules, Grafana provisioned, every file it mounts present. `haproxy -c` and
`promtool check config` check the two configuration files it mounts."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.ops.deploy_assets import DEPLOY, ROOT, run, tool

COMPOSE = DEPLOY / "compose.yaml"
HAPROXY = DEPLOY / "haproxy" / "haproxy.cfg"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
NODES = ("broker-1", "broker-2")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def compose_schema() -> dict[str, Any]:
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def test_compose_file_matches_the_compose_schema() -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, "\n".join(errors)


def test_the_schema_check_can_fail() -> None:
    broken = compose()
    broken["services"]["broker-1"]["stop_grace_period"] = {"seconds": 35}
    schema = compose_schema()
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(broken)


def test_services_and_their_order() -> None:
    services = compose()["services"]
    assert set(services) >= {*NODES, "migrate", "postgres", "minio", "bucket", "balancer", "prometheus", "grafana"}
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on {needed}, which is not a service"
    for node in NODES:
        needs = services[node]["depends_on"]
        assert needs["migrate"] == {"condition": "service_completed_successfully"}
        assert services[node]["environment"]["MESH_DB_MIGRATE"] == "off"
        assert services[node]["read_only"] is True and services[node]["cap_drop"] == ["ALL"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return float(match.group(1))


def test_docker_waits_longer_than_the_drain() -> None:
    node = compose()["services"]["broker-1"]
    assert seconds(node["stop_grace_period"]) > float(node["environment"]["MESH_SHUTDOWN_GRACE_SECONDS"])


def test_every_mounted_file_exists() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not in the checkout"


def test_prometheus_scrapes_every_node_and_loads_the_rules() -> None:
    services = compose()["services"]
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = (job for job in config["scrape_configs"] if job["job_name"] == "mesh-broker")
    port = services["broker-1"]["environment"]["MESH_METRICS_PORT"]
    assert job["static_configs"][0]["targets"] == [f"{node}:{port}" for node in NODES]
    assert "../grafana/alerts:/etc/prometheus/rules:ro" in services["prometheus"]["volumes"]
    assert config["rule_files"] == ["/etc/prometheus/rules/mesh-rules.yaml"]
    assert (ROOT / "grafana" / "alerts" / "mesh-rules.yaml").exists()


def test_grafana_is_provisioned_with_our_dashboards() -> None:
    volumes = compose()["services"]["grafana"]["volumes"]
    assert "../grafana/dashboards:/var/lib/grafana/dashboards/mesh:ro" in volumes
    provider = yaml.safe_load((ROOT / "grafana" / "provisioning" / "dashboards" / "mesh.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/mesh"


def test_haproxy_balances_every_node_and_checks_readiness_on_the_metrics_port() -> None:
    text = HAPROXY.read_text()
    servers = re.findall(r"^\s*server (\S+) (\S+):(\d+)", text, re.MULTILINE)
    assert [(name, host) for name, host, _ in servers] == [(node, node) for node in NODES]
    metrics_port = compose()["services"]["broker-1"]["environment"]["MESH_METRICS_PORT"]
    assert re.search(rf"default-server check port {metrics_port} ", text)
    assert "http-check send meth GET uri /readyz" in text
    assert "retry-on conn-failure empty-response" in text and "option redispatch" in text


def test_haproxy_accepts_the_configuration() -> None:
    haproxy = tool("haproxy", "apt-get install haproxy")
    output = run([haproxy, "-c", "-f", str(HAPROXY)])
    assert "Configuration file is valid" in output


@pytest.fixture
def promtool() -> str:
    return tool("promtool", "apt-get install prometheus")


def test_promtool_accepts_the_prometheus_configuration(promtool: str, tmp_path: Path) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    # The path inside the container, pointed at the checkout's copy so promtool can read the rules too.
    config["rule_files"] = [str(ROOT / "grafana" / "alerts" / "mesh-rules.yaml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    run([promtool, "check", "config", str(local)])
