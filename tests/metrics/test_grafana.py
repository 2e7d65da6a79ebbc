"""The shipped Grafana dashboard and alerting rules: up to date with their definition,
naming only exported metrics, valid PromQL (``promtool``), and alerts that fire when they
should (``promtool test rules``)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from safemap.metrics import grafana
from safemap.metrics._schema import METRICS

EXPORTED = {s for m in METRICS for s in m.series_names()}
METRIC_NAME = re.compile(r"\bsafemap_[a-z_]+\b")


def dashboard_queries() -> list[str]:
    board = json.loads(grafana.shipped().joinpath(grafana.DASHBOARD_FILE).read_text())
    queries = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    return queries + [v["definition"] for v in board["templating"]["list"]]


def rule_queries() -> list[str]:
    return [rule["expr"] for group in grafana.alert_rules()["groups"] for rule in group["rules"]]


def test_shipped_files_are_generated_from_the_definition(tmp_path: Path) -> None:
    assert grafana.main(["--out", str(tmp_path)]) == 0
    for name in (grafana.DASHBOARD_FILE, grafana.RULES_FILE):
        shipped = grafana.shipped().joinpath(name).read_text(encoding="utf-8")
        regenerated = (tmp_path / name).read_text(encoding="utf-8")
        assert shipped == regenerated, (
            f"{name} is stale: run python -m safemap.metrics.grafana "
            "--out src/safemap/metrics/dashboards"
        )


@pytest.mark.parametrize("query", dashboard_queries() + rule_queries())
def test_every_query_names_only_exported_metrics(query: str) -> None:
    named = set(METRIC_NAME.findall(query))
    assert named, f"names no safemap metric: {query}"
    assert named <= EXPORTED, f"not exported: {named - EXPORTED}"


def test_the_dashboard_covers_the_warning_signs() -> None:
    board = json.loads(grafana.shipped().joinpath(grafana.DASHBOARD_FILE).read_text())
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    used = {n for q in dashboard_queries() for n in METRIC_NAME.findall(q)}
    assert used >= {
        "safemap_operations_total",
        "safemap_entries",
        "safemap_writes_during_iteration_total",
        "safemap_lock_contentions_total",
        "safemap_lock_wait_seconds_total",
        "safemap_operation_duration_seconds_bucket",
        "safemap_mailbox_utilization",
        "safemap_mailbox_timeouts_total",
    }
    assert "heatmap" in {p["type"] for p in board["panels"]}


def test_promtool_accepts_the_rules(promtool: str) -> None:
    path = grafana.shipped().joinpath(grafana.RULES_FILE)
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(grafana.ALERTS)} rules found" in result.stdout


def test_promtool_parses_every_dashboard_query(promtool: str, tmp_path: Path) -> None:
    """Each panel's query, with Grafana's variables given values, as a recording rule:
    ``promtool check rules`` parses it as PromQL."""
    exprs = [
        q.replace("$__rate_interval", "5m").replace("$map", ".*")
        for q in dashboard_queries()
        if not q.startswith("label_values(")  # Grafana's function, not PromQL
    ]
    rules: dict[str, Any] = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"safemap:query_{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "queries.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


ALERT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'safemap_mailbox_utilization{{job="app",instance="a:1",map="busy"}}'
        values: '0.9x10'
      - series: 'safemap_mailbox_utilization{{job="app",instance="a:1",map="calm"}}'
        values: '0.85x10'
      - series: 'safemap_mailbox_timeouts_total{{job="app",instance="a:1",map="busy"}}'
        values: '0+6x20'
      - series: 'safemap_mailbox_timeouts_total{{job="app",instance="a:1",map="calm"}}'
        values: '3x20'
      - series: 'safemap_entries{{job="app",instance="a:1",map="sessions"}}'
        values: '1000x5 100x10'
    alert_rule_test:
      - eval_time: 5m
        alertname: SafemapMailboxSaturated
        exp_alerts:
          - exp_labels: {{job: app, instance: "a:1", map: busy, severity: warning}}
            exp_annotations:
              summary: "Actor map busy: mailbox over 85% full"
              description: "The request queue of busy is 90% full: its owner cannot keep up,
                and callers are about to wait, time out or be refused."
      - eval_time: 15m
        alertname: SafemapMailboxTimeouts
        exp_alerts:
          - exp_labels: {{job: app, instance: "a:1", map: busy, severity: warning}}
            exp_annotations:
              summary: "Actor map busy: calls are timing out"
              description: "0.10 calls per second on busy passed their deadline."
      - eval_time: 8m
        alertname: SafemapSizeJump
        exp_alerts:
          - exp_labels: {{job: app, instance: "a:1", map: sessions, severity: warning}}
            exp_annotations:
              summary: "Map sessions: size changed suddenly"
              description: "sessions gained or lost 956 entries in 10 minutes,
                more than half of its size."
      - eval_time: 20m
        alertname: SafemapSizeJump
        exp_alerts: []
"""


def test_alerts_fire_at_their_thresholds(promtool: str, tmp_path: Path) -> None:
    """Over 85% fires, exactly 85% does not; sustained timeouts fire, a flat counter does
    not; a map that loses 90% of its entries fires, then stops once it is steady."""
    rules = tmp_path / grafana.RULES_FILE
    rules.write_text(grafana.shipped().joinpath(grafana.RULES_FILE).read_text())
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(ALERT_TESTS.format(rules=json.dumps(str(rules))))
    result = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
