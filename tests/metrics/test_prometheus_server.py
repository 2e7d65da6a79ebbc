"""The shipped dashboard and alerting rules against a real Prometheus server that scrapes a
real process: every panel's query (with Grafana's variables given values) returns series
for the exported maps, the map selector lists them, and the rules load and evaluate
without error. (Grafana itself is not installable here; what a panel shows is exactly
what its query returns from Prometheus.)"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safemap.metrics import grafana

pytestmark = pytest.mark.timeout(240)

# A scrape every 250 ms (Prometheus takes intervals below a second) gives the panels' rates
# their points within a few seconds; at the usual 1 s the fixture waited 20 s for them.
SCRAPE_INTERVAL = "250ms"
SAMPLES = 12  # scrapes before the queries run: rates over RATE_INTERVAL have enough points
RATE_INTERVAL = "15s"  # a value of Grafana's $__rate_interval (it follows the time range)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read().decode())


class Prometheus:
    """One real Prometheus server process on 127.0.0.1, with its own data directory."""

    def __init__(self, binary: str, target: str, tmp: Path) -> None:
        parsed = urllib.parse.urlsplit(target)
        rules = tmp / grafana.RULES_FILE
        rules.write_text(grafana.shipped().joinpath(grafana.RULES_FILE).read_text())
        config = {
            "global": {
                "scrape_interval": SCRAPE_INTERVAL,
                "evaluation_interval": SCRAPE_INTERVAL,
            },
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "app",
                    "metrics_path": parsed.path,
                    "static_configs": [{"targets": [parsed.netloc]}],
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        reply = _get(f"{self.url}/api/v1/{path}?{query}")
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]  # type: ignore[no-any-return]

    def wait_for_samples(self, count: int, *, timeout: float = 120.0) -> None:
        """Until every series has ``count`` scrapes, or fail (a deadlock guard)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited:\n{self.process.stderr.read()}")  # type: ignore[union-attr]
            try:
                got = self.query("min(count_over_time(up[1m]))")
            except OSError:  # not listening yet
                got = []
            if got and float(got[0]["value"][1]) >= count:
                return
            time.sleep(0.2)
        pytest.fail("prometheus did not scrape the program in time")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def prometheus(
    served: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is missing in CI: .ci/run must install Debian's prometheus")
        pytest.skip("the Prometheus server is not installed (apt-get install prometheus)")
    server = Prometheus(binary, served["metrics"], tmp_path_factory.mktemp("prometheus"))
    try:
        server.wait_for_samples(SAMPLES)
        yield server
    finally:
        server.stop()


def _panel_queries() -> list[tuple[str, str]]:
    board = json.loads(grafana.shipped().joinpath(grafana.DASHBOARD_FILE).read_text())
    return [(panel["title"], t["expr"]) for panel in board["panels"] for t in panel["targets"]]


def _grafana_variables(expr: str) -> str:
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$map", ".*")


# Maps the program registers (serve_maps.py) that every panel of a kind must show.
ALL_MAPS = {
    "ConcurrentMap",
    "SyncMap",
    "LockedMap",
    "RWLockMap",
    "ActorMap",
    "AsyncActorMap",
    "Cache",
    "evicting",
}
ACTOR_MAPS = {"ActorMap", "AsyncActorMap"}


def _expected_maps(title: str) -> set[str]:
    if title.startswith("Actor map"):
        return ACTOR_MAPS
    if title.startswith("Cache"):
        return {"Cache", "evicting"}
    if title == "Latency quantiles":
        return {"hot"}  # the one map with latency sampling on
    if title == "Lock contention per shard":
        return {"ConcurrentMap", "busy"}  # sharded native maps
    return ALL_MAPS | {"busy", "hot"}


@pytest.mark.parametrize(("title", "expr"), _panel_queries(), ids=lambda v: str(v)[:40])
def test_every_panel_query_returns_series_for_the_maps(
    prometheus: Prometheus, title: str, expr: str
) -> None:
    result = prometheus.query(_grafana_variables(expr))
    maps = {series["metric"].get("map") for series in result}
    missing = _expected_maps(title) - maps
    assert not missing, f"{title}: no series for {sorted(missing)} from {expr}"
    assert "dropped" not in maps  # a map that was garbage-collected is gone


def test_panels_show_the_busy_maps_work(prometheus: Prometheus) -> None:
    """The map the program keeps writing has a positive write rate and a changing size
    of at most its 100 keys: the numbers are live, not just present."""
    rates = prometheus.query(
        f'sum by (map, op) (rate(safemap_operations_total{{map="busy"}}[{RATE_INTERVAL}]))'
    )
    writes = [float(s["value"][1]) for s in rates if s["metric"]["op"] == "write"]
    assert writes and writes[0] > 0
    (entries,) = prometheus.query('sum by (map) (safemap_entries{map="busy"})')
    assert 0 < float(entries["value"][1]) <= 100
    buckets = 'safemap_operation_duration_seconds_bucket{map="hot"}'
    (hot,) = prometheus.query(f"histogram_quantile(0.5, sum by (map, le) ({buckets}))")
    assert math.isfinite(float(hot["value"][1])) and float(hot["value"][1]) > 0


def test_the_map_selector_lists_every_registered_map(prometheus: Prometheus) -> None:
    # Grafana's label_values(safemap_map_info, map) is this API call.
    names = set(prometheus.api("label/map/values", **{"match[]": "safemap_map_info"}))
    assert names >= ALL_MAPS | {"busy", "hot"}


def test_the_alerting_rules_load_and_evaluate(prometheus: Prometheus) -> None:
    """Every shipped rule is loaded and, once evaluated, healthy (its query ran)."""
    deadline = time.monotonic() + 60
    while True:
        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if len(rules) == len(grafana.ALERTS) and all(r["health"] != "unknown" for r in rules):
            break
        assert time.monotonic() < deadline, f"rules never evaluated: {rules}"
        time.sleep(0.5)
    assert {r["name"] for r in rules} == {a.name for a in grafana.ALERTS}
    assert [r for r in rules if r["health"] != "ok"] == []
