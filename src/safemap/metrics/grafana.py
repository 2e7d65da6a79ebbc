"""The Grafana dashboard and the Prometheus alerting rules, from one definition.

``PANELS`` and ``ALERTS`` below are the definition; ``python -m safemap.metrics.grafana
--out DIR`` writes ``safemap.json`` (the dashboard, with ``__inputs`` so that Grafana asks
for the Prometheus data source on import) and ``safemap-alerts.yml`` (a Prometheus rule
file). The same two files ship in the package (``dashboards/``, :func:`shipped`); a test
regenerates them and fails when they differ, and checks that every query names only
metrics the collector exports.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "ALERTS",
    "PANELS",
    "Alert",
    "Panel",
    "alert_rules",
    "dashboard",
    "main",
    "render",
    "shipped",
]

DASHBOARD_FILE = "safemap.json"
RULES_FILE = "safemap-alerts.yml"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
MAP = 'map=~"$map"'  # every panel follows the dashboard's map selector
RATE = "[$__rate_interval]"

MAILBOX_UTILIZATION_LIMIT = 0.85  # the Go seeds' alert on a channel-owned map's buffer
WRITES_DURING_ITERATION_LIMIT = 0.01  # of all writes
CONTENDED_SHARE_LIMIT = 0.2  # of lock acquisitions
SIZE_JUMP_SHARE = 0.5  # of the map's recent largest size
SIZE_JUMP_MIN_ENTRIES = 100  # smaller maps never alert on size


class Target(NamedTuple):
    expr: str
    legend: str


class Panel(NamedTuple):
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str = "short"
    kind: str = "timeseries"
    threshold: float | None = None  # drawn as a red line


READS, HITS, WRITES = ',op="read"', ',op="read",result="hit"', ',op="write"'


def _rate(metric: str, selector: str = "") -> str:
    return f"rate({metric}{{{MAP}{selector}}}{RATE})"


PANELS: tuple[Panel, ...] = (
    Panel(
        "Operations per second",
        "Point reads (hit, miss) and the writes that changed the map (insert, update, delete).",
        (
            Target(
                f"sum by (map, op, result) ({_rate('safemap_operations_total')})",
                "{{map}} {{op}} {{result}}",
            ),
        ),
        unit="ops",
    ),
    Panel(
        "Hit ratio",
        "Share of point reads that found their key.",
        (
            Target(
                f"sum by (map) ({_rate('safemap_operations_total', HITS)})"
                f" / sum by (map) ({_rate('safemap_operations_total', READS)})",
                "{{map}}",
            ),
        ),
        unit="percentunit",
    ),
    Panel(
        "Entries",
        "Entries in each map.",
        (Target(f"sum by (map) (safemap_entries{{{MAP}}})", "{{map}}"),),
    ),
    Panel(
        "Entries: rate of change",
        "Entries added (or, below zero, removed) per second: a sudden change of size is a "
        "warning sign (a leak, or a mass eviction).",
        (Target(f"sum by (map) (deriv(safemap_entries{{{MAP}}}[5m]))", "{{map}}"),),
        unit="short",
    ),
    Panel(
        "Writes during iteration",
        "Share of writes made while an iteration of the same map was in progress: code "
        "that mutates what it (or another thread) is walking.",
        (
            Target(
                f"sum by (map) ({_rate('safemap_writes_during_iteration_total')})"
                f" / sum by (map) ({_rate('safemap_operations_total', WRITES)})",
                "{{map}}",
            ),
        ),
        unit="percentunit",
        threshold=WRITES_DURING_ITERATION_LIMIT,
    ),
    Panel(
        "Lock contention per shard",
        "Contended lock acquisitions per second, one row per shard (shard 0 is the whole "
        "map for a map with one lock): a hot row is a hot shard.",
        (
            Target(
                f"sum by (map, shard) ({_rate('safemap_lock_contentions_total')})",
                "{{map}}/{{shard}}",
            ),
        ),
        unit="short",
        kind="heatmap",
    ),
    Panel(
        "Lock wait",
        "Seconds spent waiting for contended locks, per second of wall time (1 = one "
        "thread always waiting).",
        (Target(f"sum by (map) ({_rate('safemap_lock_wait_seconds_total')})", "{{map}}"),),
        unit="s",
    ),
    Panel(
        "Latency quantiles",
        "Sampled operation latency (on with m.track(latency_every=N)).",
        tuple(
            Target(
                f"histogram_quantile({q}, sum by (map, op, le) "
                f"({_rate('safemap_operation_duration_seconds_bucket')}))",
                f"{{{{map}}}} {{{{op}}}} p{round(q * 100)}",
            )
            for q in (0.5, 0.9, 0.99)
        ),
        unit="s",
    ),
    Panel(
        "Cache evictions and loads",
        "Entries a Cache removed per second, to stay within its maxsize (size) or because "
        "their ttl passed (expired), and its loader runs per second (ok, error).",
        (
            Target(
                f"sum by (map, cause) ({_rate('safemap_evictions_total')})",
                "{{map}} evicted: {{cause}}",
            ),
            Target(
                f"sum by (map, result) ({_rate('safemap_loads_total')})", "{{map}} load {{result}}"
            ),
        ),
        unit="ops",
    ),
    Panel(
        "Actor map mailbox utilization",
        "Queue depth / capacity of each actor map (alert above 85%).",
        (Target(f"max by (map) (safemap_mailbox_utilization{{{MAP}}})", "{{map}}"),),
        unit="percentunit",
        threshold=MAILBOX_UTILIZATION_LIMIT,
    ),
    Panel(
        "Actor map timeouts and rejections",
        "Calls whose deadline passed, and calls refused with MapBusyError, per second.",
        (
            Target(f"sum by (map) ({_rate('safemap_mailbox_timeouts_total')})", "{{map}} timeouts"),
            Target(
                f"sum by (map) ({_rate('safemap_mailbox_rejections_total')})", "{{map}} rejected"
            ),
        ),
        unit="ops",
    ),
)


class Alert(NamedTuple):
    name: str
    expr: str
    duration: str
    summary: str
    description: str
    severity: str = "warning"


_BY = "job, instance, map"
ALERTS: tuple[Alert, ...] = (
    Alert(
        "SafemapMailboxSaturated",
        f"max by ({_BY}) (safemap_mailbox_utilization) > {MAILBOX_UTILIZATION_LIMIT}",
        "2m",
        "Actor map {{ $labels.map }}: mailbox over 85% full",
        "The request queue of {{ $labels.map }} is {{ $value | humanizePercentage }} full: "
        "its owner cannot keep up, and callers are about to wait, time out or be refused.",
    ),
    Alert(
        "SafemapMailboxTimeouts",
        f"sum by ({_BY}) (rate(safemap_mailbox_timeouts_total[5m])) > 0",
        "5m",
        "Actor map {{ $labels.map }}: calls are timing out",
        '{{ $value | printf "%.2f" }} calls per second on {{ $labels.map }} passed their deadline.',
    ),
    Alert(
        "SafemapMailboxRejections",
        f"sum by ({_BY}) (rate(safemap_mailbox_rejections_total[5m])) > 0",
        "5m",
        "Actor map {{ $labels.map }}: calls refused with MapBusyError",
        '{{ $value | printf "%.2f" }} calls per second on {{ $labels.map }} were refused (queue '
        "full or circuit open).",
    ),
    Alert(
        "SafemapCircuitOpen",
        f'max by ({_BY}) (safemap_mailbox_breaker_state{{state="open"}}) == 1',
        "1m",
        "Actor map {{ $labels.map }}: circuit breaker open",
        "The circuit breaker of {{ $labels.map }} is open: every call is refused at once.",
    ),
    Alert(
        "SafemapWritesDuringIteration",
        f"sum by ({_BY}) (rate(safemap_writes_during_iteration_total[10m]))"
        f' / sum by ({_BY}) (rate(safemap_operations_total{{op="write"}}[10m]))'
        f" > {WRITES_DURING_ITERATION_LIMIT}",
        "10m",
        "Map {{ $labels.map }}: writes while it is being iterated",
        "{{ $value | humanizePercentage }} of the writes to {{ $labels.map }} happen while "
        "an iteration of it is in progress.",
    ),
    Alert(
        "SafemapSizeJump",
        f"abs(delta(safemap_entries[10m])) > {SIZE_JUMP_SHARE} * max_over_time("
        f"safemap_entries[10m]) and max_over_time(safemap_entries[10m]) >= "
        f"{SIZE_JUMP_MIN_ENTRIES}",
        "0m",
        "Map {{ $labels.map }}: size changed suddenly",
        '{{ $labels.map }} gained or lost {{ $value | printf "%.0f" }} entries in 10 minutes, '
        "more than half of its size.",
    ),
    Alert(
        "SafemapLockContention",
        f"sum by ({_BY}) (rate(safemap_lock_contentions_total[5m]))"
        f" / sum by ({_BY}) (rate(safemap_lock_acquisitions_total[5m]))"
        f" > {CONTENDED_SHARE_LIMIT}",
        "10m",
        "Map {{ $labels.map }}: many lock acquisitions wait",
        "{{ $value | humanizePercentage }} of the lock acquisitions of {{ $labels.map }} "
        "find the lock held; consider a sharded map or more shards.",
    ),
)


def _panel(index: int, panel: Panel) -> dict[str, Any]:
    width = 12
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.threshold is not None:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [
                {"color": "green", "value": None},
                {"color": "red", "value": panel.threshold},
            ],
        }
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    out: dict[str, Any] = {
        "id": index + 1,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": width, "x": (index % 2) * width, "y": (index // 2) * 8},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": t.expr,
                "legendFormat": t.legend,
            }
            for i, t in enumerate(panel.targets)
        ],
        "fieldConfig": {"defaults": defaults, "overrides": []},
    }
    if panel.kind == "heatmap":  # each series (a shard) is a row, as it comes: no buckets
        out["options"] = {
            "calculate": False,
            "rowsFrame": {"layout": "auto"},
            "yAxis": {"axisPlacement": "left", "axisLabel": "shard"},
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "fill": "dark-orange",
                "exponent": 0.5,
                "steps": 64,
                "reverse": False,
            },
            "cellGap": 1,
            "legend": {"show": True},
            "tooltip": {"mode": "single", "yHistogram": False},
        }
    return out


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard (JSON model, for import)."""
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes the programs using safemap",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
            {"type": "panel", "id": "heatmap", "name": "Heatmap", "version": ""},
        ],
        "title": "safemap",
        "uid": "safemap-maps",
        "description": "safemap's maps: operations, hit ratio, size, writes during iteration, "
        "lock contention per shard, latency, actor mailboxes.",
        "tags": ["safemap"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "map",
                    "label": "map",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": "label_values(safemap_map_info, map)", "refId": "maps"},
                    "definition": "label_values(safemap_map_info, map)",
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "sort": 1,
                }
            ]
        },
        "panels": [_panel(i, p) for i, p in enumerate(PANELS)],
    }


def alert_rules() -> dict[str, Any]:
    """The Prometheus rule file (alerting rules), as data."""
    return {
        "groups": [
            {
                "name": "safemap",
                "rules": [
                    {
                        "alert": a.name,
                        "expr": a.expr,
                        "for": a.duration,
                        "labels": {"severity": a.severity},
                        "annotations": {"summary": a.summary, "description": a.description},
                    }
                    for a in ALERTS
                ],
            }
        ]
    }


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """Block-style YAML for dicts, lists and scalars; strings are double-quoted (JSON's
    quoting is valid YAML)."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(_yaml(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            body = _yaml(item, indent + 1)
            lines.append(f"{pad}- {body[0].lstrip()}")
            lines.extend(body[1:])
    else:
        lines.append(pad + _scalar(value))
    return lines


def _scalar(value: Any) -> str:
    return json.dumps(value)


def render() -> dict[str, str]:
    """The generated files, by name."""
    return {
        DASHBOARD_FILE: json.dumps(dashboard(), indent=2) + "\n",
        RULES_FILE: "# Generated by python -m safemap.metrics.grafana; do not edit.\n"
        + "\n".join(_yaml(alert_rules()))
        + "\n",
    }


def shipped() -> Traversable:
    """The directory of the shipped files, inside the installed package."""
    return files("safemap.metrics").joinpath("dashboards")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m safemap.metrics.grafana",
        description=f"Write the Grafana dashboard ({DASHBOARD_FILE}) and the Prometheus "
        f"alerting rules ({RULES_FILE}) into a directory.",
    )
    parser.add_argument("--out", type=Path, required=True, help="the directory to write to")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
