"""Ops tier: the Grafana dashboards and Prometheus alert rules in grafana/ only use what the broker exports.

A real app (demo mailboxes) serves a message cycle, an error and an auth failure so every labelled series
exists; its /metrics text is the reference for metric names and their labels. promtool parses every rule
expression (alert rules and the dashboards' queries) and runs the alert rules' unit tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from broker.app import create_app
from broker.clock import ManualClock
from broker.keys import HOUSEKEEPING, METRICS
from broker.settings import Settings
from tests.conftest import production_settings
from tests.support import Mesh

AiohttpClient = Callable[..., Awaitable[TestClient]]

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RULES = GRAFANA / "alerts" / "mesh-rules.yaml"
RULE_TESTS = GRAFANA / "alerts" / "mesh-rules.test.yaml"
DATASOURCE = "${datasource}"
MB1, MB2 = "X26ABC1", "X26ABC2"
#: Labels Prometheus attaches to every scraped series, and the series it makes itself for each target.
TARGET_LABELS = frozenset({"job", "instance"})
SCRAPE_SERIES = {"up": TARGET_LABELS}

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
METRIC = re.compile(r"(?<![\w:.$])(mesh_[a-zA-Z0-9_:]*|up)(?![\w:(])")
SELECTOR = re.compile(r"(?<![\w:])(mesh_[a-zA-Z0-9_:]*|up)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)")
TEMPLATE_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
ALERT_LABEL = re.compile(r"\$labels\.(\w+)")


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    #: Labels a legend or annotation template reads from the result.
    reads: frozenset[str] = frozenset()


def load_dashboard(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_queries() -> list[Query]:
    queries = []
    for path in DASHBOARDS:
        for panel in all_panels(load_dashboard(path)["panels"]):
            for target in panel.get("targets", []):
                where = f"{path.name} panel {panel['id']} ({panel['title']!r}) target {target['refId']}"
                reads = frozenset(TEMPLATE_LABEL.findall(target.get("legendFormat", "")))
                queries.append(Query(where, target["expr"], reads))
    return queries


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def rule_queries() -> list[Query]:
    queries = []
    for rule in rules():
        annotations = " ".join(rule.get("annotations", {}).values())
        queries.append(Query(f"alert {rule['alert']}", rule["expr"], frozenset(ALERT_LABEL.findall(annotations))))
    return queries


def all_queries() -> list[Query]:
    return dashboard_queries() + rule_queries()


def without_strings(expr: str) -> str:
    """The expression with every string literal emptied, so matcher values never look like names."""
    return STRING.sub('""', expr)


def metric_names(expr: str) -> list[str]:
    return METRIC.findall(without_strings(expr))


def balanced(text: str, start: int) -> str:
    """The parenthesised group opening at text[start]."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return text[start : index + 1]
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def grouping_scopes(expr: str) -> Iterator[tuple[str, list[str], str]]:
    """(keyword, labels, the expression the clause applies to) for every by/without/on/ignoring clause.

    `sum by (l) (x)` groups the group that follows; `sum(x) by (l)` the group before. on/ignoring match the
    two sides of a binary operator, so they apply to the whole expression.
    """
    text = without_strings(expr)
    for match in GROUPING.finditer(text):
        keyword, labels = match.group(1), [label.strip() for label in match.group(2).split(",") if label.strip()]
        if keyword in ("on", "ignoring"):
            yield keyword, labels, text
            continue
        after = len(text) - len(text[match.end() :].lstrip())
        if after < len(text) and text[after] == "(":
            yield keyword, labels, balanced(text, after)
            continue
        before = text[: match.start()].rstrip()
        assert before.endswith(")"), f"cannot find what {match.group(0)!r} groups in {expr!r}"
        reversed_group = balanced(before[::-1].translate(str.maketrans("()", ")(")), 0)
        yield keyword, labels, before[len(before) - len(reversed_group) :]


async def exercise(client: TestClient) -> None:
    """A message cycle, a MESH error and an auth failure, so every labelled series has a sample."""
    mb1, mb2 = Mesh(client, MB1), Mesh(client, MB2)
    message_id = await mb1.send_ok(MB2, b"observed")
    download = await client.get(f"{mb2.base}/inbox/{message_id}", headers=mb2.headers({"Accept-Encoding": "identity"}))
    assert await download.read() == b"observed"
    ack = await client.put(f"{mb2.base}/inbox/{message_id}/status/acknowledged", headers=mb2.headers())
    assert ack.status == 200
    assert (await mb1.send("NOBODY", b"x")).status == 417
    unreadable = await client.get(f"{mb1.base}/inbox", headers={"Authorization": f"NHSMESH {MB1}:x"})
    assert unreadable.status == 403


@pytest.fixture
async def exported(
    aiohttp_client: AiohttpClient, tmp_path: Path, request: pytest.FixtureRequest
) -> dict[str, frozenset[str]]:
    """Every series name the broker exports, on either backend, with the label names seen on it (target labels
    added). The embedded broker is exercised in full; a PostgreSQL + S3 one adds the series only it has."""
    clock = ManualClock()
    base = Settings(data_dir=tmp_path / "data", shared_key="TestKey", demo=True, metrics_on_mesh_port=True)
    app = create_app(base, clock=clock)
    client = await aiohttp_client(app)
    await exercise(client)
    # A message left unread past the inbox expiry, so housekeeping's labelled series have samples too.
    await Mesh(client, MB1, clock=clock).send_ok(MB2, b"unread")
    clock.advance(timedelta(days=5, seconds=1))
    await app[HOUSEKEEPING].run_once()
    seen: dict[str, set[str]] = {}
    production = create_app(await production_settings(base.with_(data_dir=tmp_path / "production"), request))
    production_client = await aiohttp_client(production)
    await production[HOUSEKEEPING].sample(production[METRICS])
    for scraped in (client, production_client):
        response = await scraped.get("/metrics")
        assert response.status == 200
        for family in text_string_to_metric_families(await response.text()):
            for sample in family.samples:
                seen.setdefault(sample.name, set()).update(sample.labels)
    names = {name: frozenset(labels) | TARGET_LABELS for name, labels in seen.items()}
    return names | SCRAPE_SERIES


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not on PATH. Install Debian's prometheus package "
            "(apt-get install --no-install-recommends prometheus); .ci/run does this before `make test`."
        )
    return found


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"


def test_the_assets_hold_queries() -> None:
    """Guards the tests below against passing vacuously (a moved folder, an empty file)."""
    assert {path.name for path in DASHBOARDS} >= {"mesh-kpi.json", "mesh-capacity.json"}
    assert len(dashboard_queries()) >= 20
    assert {rule["alert"] for rule in rules()} >= {
        "MeshP99LatencyAboveKPI",
        "MeshMedianLatencyAboveKPI",
        "MeshHigh5xxRatio",
        "MeshCorruptChunks",
        "MeshAuthFailureSpike",
        "MeshBrokerDown",
        "MeshDeliveriesStalled",
        "MeshHousekeepingStalled",
    }
    assert all(metric_names(query.expr) for query in all_queries())


def test_promql_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(mesh_x_bucket{route=~"/mesh_not_a_metric"}[5m]))) '
        "/ on (instance) sum(rate(mesh_y_total[5m])) by (workflow) and up == 0"
    )
    assert metric_names(expr) == ["mesh_x_bucket", "mesh_y_total", "up"]
    scopes = [(keyword, labels, metric_names(scope)) for keyword, labels, scope in grouping_scopes(expr)]
    assert scopes == [
        ("by", ["le", "route"], ["mesh_x_bucket"]),
        ("on", ["instance"], ["mesh_x_bucket", "mesh_y_total", "up"]),
        ("by", ["workflow"], ["mesh_y_total"]),
    ]


async def test_every_metric_queried_is_exported(exported: dict[str, frozenset[str]]) -> None:
    unknown = sorted(
        f"{name} (in {query.where})"
        for query in all_queries()
        for name in dict.fromkeys(metric_names(query.expr))
        if name not in exported
    )
    assert not unknown, "metrics the broker does not export:\n" + "\n".join(unknown)


async def test_every_label_queried_is_on_its_metric(exported: dict[str, frozenset[str]]) -> None:
    problems = []
    for query in all_queries():
        names = [name for name in metric_names(query.expr) if name in exported]
        for name, body in SELECTOR.findall(without_strings(query.expr)):
            for label in MATCHER.findall(body):
                if name in exported and label not in exported[name]:
                    problems.append(f"{query.where}: {name} has no label {label!r} (has {sorted(exported[name])})")
        for keyword, labels, scope in grouping_scopes(query.expr):
            for name in (name for name in metric_names(scope) if name in exported):
                problems.extend(
                    f"{query.where}: {keyword} ({label}) but {name} has no label {label!r}"
                    for label in labels
                    if label not in exported[name]
                )
        available = frozenset().union(*(exported[name] for name in names))
        problems.extend(
            f"{query.where}: the legend or annotation reads {label!r}, which no queried metric has"
            for label in sorted(query.reads - available)
        )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_dashboard_structure(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["uid"] == path.stem
    assert dashboard["schemaVersion"] >= 39
    (variable,) = (v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}: {sorted(ids)}"
    for panel in panels:
        if panel["type"] == "row":
            continue
        label = f"{path.name} panel {panel['id']} ({panel['title']!r})"
        assert panel.get("targets"), f"{label} has no targets"
        assert panel["datasource"]["uid"] == DATASOURCE, label
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{label} repeats a refId"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{label} target {target['refId']} has no expression"
            assert target["datasource"]["uid"] == DATASOURCE, label


def thresholds_of(title: str) -> list[float]:
    (panel,) = (
        p for p in all_panels(load_dashboard(GRAFANA / "dashboards" / "mesh-kpi.json")["panels"]) if p["title"] == title
    )
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
    return [step["value"] for step in steps if step["value"] is not None]


def test_the_kpi_panels_draw_the_kpi_lines() -> None:
    assert thresholds_of("Median (p50) response time by route") == [0.2]
    assert thresholds_of("p99 response time by route") == [1]


def test_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (prometheus,) = datasources["datasources"]
    assert (prometheus["type"], prometheus["url"]) == ("prometheus", "http://prometheus:9090")
    dashboards = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "mesh.yaml").read_text())
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_promtool_checks_the_alert_rules(promtool: str) -> None:
    run([promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RULES)])
    for rule in rules():
        assert rule["labels"]["severity"] in {"page", "warning"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_promtool_unit_tests_the_alert_rules(promtool: str) -> None:
    run([promtool, "test", "rules", str(RULE_TESTS)])


def test_promtool_parses_the_dashboard_queries(promtool: str, tmp_path: Path) -> None:
    """promtool has no offline query linter, but check rules parses every expression: wrap each dashboard
    query in a recording rule."""
    records = [
        {"record": f"dashboard:query_{index}:check", "expr": query.expr}
        for index, query in enumerate(dashboard_queries())
    ]
    assert not [q.where for q in dashboard_queries() if "$" in q.expr], "template variables would not parse"
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": records}]}))
    run([promtool, "check", "rules", "--lint=none", str(path)])
