"""deploy/k8s/base/prometheusrule.yaml from grafana/alerts/mesh-rules.yaml: the same groups, text for text, under a
PrometheusRule's spec. Kustomize cannot read files outside deploy/k8s, so the Kubernetes copy is a file of its own;
`make k8s-rules` rewrites it after the rules change, and tests/ops/test_deploy_k8s.py fails while it is stale.

    python -m broker.devsupport.alert_rules [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "grafana" / "alerts" / "mesh-rules.yaml"
PROMETHEUS_RULE = ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
HEADER = """\
# The alert rules of grafana/alerts/mesh-rules.yaml for the Prometheus operator: the same groups, indented under
# spec (kustomize cannot read files outside deploy/k8s). Written by `make k8s-rules`
# (python -m broker.devsupport.alert_rules); tests/ops/test_deploy_k8s.py fails when the two differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: mesh-broker
spec:
"""


def render(rules: str) -> str:
    """The PrometheusRule for a Prometheus rule file's text: its `groups:` block, comments and folded text kept as
    written, indented one level under spec (blank lines stay blank, so block scalars read back unchanged)."""
    lines = rules.splitlines(keepends=True)
    start = next((n for n, line in enumerate(lines) if line.startswith("groups:")), None)
    if start is None:
        raise ValueError(f"{RULES.name} has no top-level groups:")
    return HEADER + "".join(f"  {line}" if line.strip() else line for line in lines[start:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only say whether the copy is current (exit 1 if not)")
    args = parser.parse_args(argv)
    wanted = render(RULES.read_text(encoding="utf-8"))
    current = PROMETHEUS_RULE.read_text(encoding="utf-8") if PROMETHEUS_RULE.exists() else ""
    if args.check:
        if current != wanted:
            print(f"{PROMETHEUS_RULE.relative_to(ROOT)} is stale: run `make k8s-rules`", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        PROMETHEUS_RULE.write_text(wanted, encoding="utf-8")
        print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
