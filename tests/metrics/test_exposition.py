"""A real scrape of a real process: exact counters, valid exposition (``promtool check
metrics``), no keys as labels, dropped maps gone, and the hot-keys side endpoint."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping

import pytest
from prometheus_client.parser import text_string_to_metric_families

from safemap.metrics._schema import METRICS

from . import serve_maps
from .conftest import scrape

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Series:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    return series[(name, frozenset(labels.items()))]


def values(series: Series, name: str, **labels: str) -> Mapping[frozenset[tuple[str, str]], float]:
    want = set(labels.items())
    return {lab: v for (n, lab), v in series.items() if n == name and want <= lab}


@pytest.mark.parametrize("endpoint", ["prometheus", "metrics"])
@pytest.mark.parametrize("kind", serve_maps.MAP_TYPES)
def test_counters_are_exact(served: dict[str, str], endpoint: str, kind: str) -> None:
    series = parse(scrape(served[endpoint]))
    want = serve_maps.expected()
    ops = "safemap_operations_total"
    assert value(series, ops, map=kind, op="read", result="hit") == want["hit"]
    assert value(series, ops, map=kind, op="read", result="miss") == want["miss"]
    assert value(series, ops, map=kind, op="write", result="insert") == want["insert"]
    assert value(series, ops, map=kind, op="write", result="update") == want["update"]
    assert value(series, ops, map=kind, op="write", result="delete") == want["delete"]
    assert value(series, "safemap_entries", map=kind) == want["entries"]
    assert value(series, "safemap_iterations_total", map=kind) == want["iterations"]
    assert (
        value(series, "safemap_writes_during_iteration_total", map=kind)
        == want["writes_during_iteration"]
    )
    assert value(series, "safemap_map_info", map=kind, kind=kind) == 1
    # Contention is not deterministic; its series exist per shard and stay consistent.
    acquisitions = values(series, "safemap_lock_acquisitions_total", map=kind)
    contentions = values(series, "safemap_lock_contentions_total", map=kind)
    waits = values(series, "safemap_lock_wait_seconds_total", map=kind)
    assert acquisitions and acquisitions.keys() == contentions.keys() == waits.keys()
    for shard, count in contentions.items():
        assert 0 <= count <= acquisitions[shard]
        assert waits[shard] >= 0


def test_a_cache_exports_its_evictions_and_loads(served: dict[str, str]) -> None:
    series = parse(scrape(served["metrics"]))
    loads = serve_maps.EVICTING_LOADS
    evicted = loads - serve_maps.EVICTING_MAXSIZE
    assert value(series, "safemap_evictions_total", map="evicting", cause="size") == evicted
    assert value(series, "safemap_evictions_total", map="evicting", cause="expired") == 0
    assert value(series, "safemap_loads_total", map="evicting", result="ok") == loads
    errors = serve_maps.EVICTING_LOAD_ERRORS
    assert value(series, "safemap_loads_total", map="evicting", result="error") == errors
    assert value(series, "safemap_entries", map="evicting") == serve_maps.EVICTING_MAXSIZE
    # Only maps that evict export these series.
    assert not values(series, "safemap_evictions_total", map="LockedMap")


def test_sampled_latency_is_a_histogram_of_every_sampled_call(served: dict[str, str]) -> None:
    series = parse(scrape(served["metrics"]))
    reads = serve_maps.HOT_READERS * serve_maps.HOT_READS + serve_maps.COLD_KEYS
    name = "safemap_operation_duration_seconds"
    assert value(series, name + "_count", map="hot", op="get") == reads  # 1 in 1 sampled
    buckets = values(series, name + "_bucket", map="hot", op="get")
    by_bound = sorted((float(dict(lab)["le"]), v) for lab, v in buckets.items())
    assert by_bound[-1] == (float("inf"), reads)
    counts = [v for _, v in by_bound]
    assert counts == sorted(counts)  # cumulative
    assert by_bound[0][0] < 1e-6 and by_bound[-2][0] <= 2e-3  # log2 from ~50 ns, not 5 ms+
    assert value(series, name + "_sum", map="hot", op="get") > 0
    # Maps without latency sampling export no histogram.
    assert not values(series, name + "_count", map="LockedMap")


def test_dropped_map_is_not_exported(served: dict[str, str]) -> None:
    text = scrape(served["metrics"])
    assert 'map="dropped"' not in text
    assert 'map="hot"' in text


def test_keys_are_never_labels(served: dict[str, str]) -> None:
    allowed = {label for m in METRICS for label in m.labels} | {"le"}
    series = parse(scrape(served["metrics"]))
    safemap_series = [(n, lab) for n, lab in series if n.startswith("safemap_")]
    assert safemap_series
    for name, labels in safemap_series:
        assert {k for k, _ in labels} <= allowed, name
        assert not any(v == "hot" or "cold" in v for k, v in labels if k != "map"), name


def test_every_declared_metric_is_exported(served: dict[str, str]) -> None:
    """The served maps use every feature (shards, a mailbox, latency sampling), so the
    scrape has exactly the table's series: the dashboard's names are real."""
    declared = {s for m in METRICS for s in m.series_names()}
    exported = {n for n, _ in parse(scrape(served["metrics"])) if n.startswith("safemap_")}
    assert exported == declared


def test_a_sharded_map_exports_each_shard(served: dict[str, str]) -> None:
    import safemap

    series = parse(scrape(served["metrics"]))
    shards = len(safemap.ConcurrentMap().stats().shards)
    entries = values(series, "safemap_shard_entries", map="ConcurrentMap")
    assert sorted(int(dict(lab)["shard"]) for lab in entries) == list(range(shards))
    assert sum(entries.values()) == serve_maps.expected()["entries"]
    acquisitions = values(series, "safemap_lock_acquisitions_total", map="ConcurrentMap")
    assert len(acquisitions) == shards


def test_hot_keys_side_endpoint(served: dict[str, str]) -> None:
    document = json.loads(scrape(served["hot_keys"]))
    hot = document["maps"]["hot"]
    assert hot["kind"] == "LockedMap"
    key, count = hot["hot_keys"][0]
    assert key == repr("hot")
    # Space-Saving over-estimates by at most N/k: the hot key's count is at least its reads.
    assert count >= serve_maps.HOT_READERS * serve_maps.HOT_READS
    assert document["maps"]["LockedMap"]["hot_keys"] == []  # tracking is off there
    assert "dropped" not in document["maps"]


@pytest.mark.parametrize("endpoint", ["prometheus", "metrics"])
def test_promtool_accepts_the_exposition(
    served: dict[str, str], promtool: str, endpoint: str
) -> None:
    text = scrape(served[endpoint])
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr
