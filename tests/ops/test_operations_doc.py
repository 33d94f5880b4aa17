"""docs/operations.md, the on-call runbook, has a section for every alert in grafana/alerts (what it means, how
to confirm it, what to do), and the README links to it."""

from __future__ import annotations

import re

import yaml

from tests.ops.deploy_assets import ROOT

RUNBOOK = ROOT / "docs" / "operations.md"


def sections() -> dict[str, str]:
    text = RUNBOOK.read_text()
    parts = re.split(r"^### (\S+)\n", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_alert_has_a_runbook_section() -> None:
    rules = yaml.safe_load((ROOT / "grafana" / "alerts" / "mesh-rules.yaml").read_text())
    alerts = [rule["alert"] for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 10
    runbook = sections()
    missing = [alert for alert in alerts if alert not in runbook]
    assert not missing, f"docs/operations.md has no '### <alert>' section for {missing}"
    for alert in alerts:
        for part in ("**Means**", "**Confirm**", "**Do**"):
            assert part in runbook[alert], f"{alert}: no {part}"


def test_the_readme_links_the_runbook() -> None:
    assert "(docs/operations.md)" in (ROOT / "README.md").read_text()
