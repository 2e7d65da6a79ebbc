"""The OpenTelemetry bridge: the same statistics as observable instruments, read by the
SDK's in-memory reader (an SDK is the application's choice; the tests use the real one)."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import safemap
from safemap import metrics
from safemap.metrics import otel
from safemap.metrics._schema import METRICS


@pytest.fixture(autouse=True)
def clean_table() -> Iterator[None]:
    yield
    for name in metrics.registered():
        metrics.unregister(name)


def points(reader: InMemoryMetricReader) -> dict[tuple[str, frozenset[tuple[str, Any]]], float]:
    data = reader.get_metrics_data()
    if data is None:  # no instrument observed anything
        return {}
    return {
        (metric.name, frozenset(dict(p.attributes or {}).items())): p.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for p in metric.data.data_points
    }


@pytest.mark.timeout(60)
def test_counts_under_threads_are_exact_and_dropped_maps_leave() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel.instrument(provider)
    otel.instrument(provider)  # again: no second set of instruments
    held = {"sessions": safemap.RWLockMap()}  # the only strong reference
    metrics.register(held["sessions"], "sessions")
    threads, per_thread = 4, 500

    def work(t: int) -> None:
        m = held["sessions"]
        for i in range(per_thread):
            m[(t, i)] = i
            m[(t, i)]
            m.get((t, -1))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=50)
    assert not any(w.is_alive() for w in workers)

    got = points(reader)
    ops = "safemap_operations"
    sessions = {("map", "sessions")}
    assert got[(ops, frozenset({*sessions, ("op", "read"), ("result", "hit")}))] == 2000
    assert got[(ops, frozenset({*sessions, ("op", "read"), ("result", "miss")}))] == 2000
    assert got[(ops, frozenset({*sessions, ("op", "write"), ("result", "insert")}))] == 2000
    assert got[("safemap_entries", frozenset(sessions))] == threads * per_thread
    names = {name for name, _ in got}
    assert names <= {m.name for m in METRICS if m.kind != "histogram"}
    units = {
        metric.name: metric.unit
        for resource in reader.get_metrics_data().resource_metrics  # type: ignore[union-attr]
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert units["safemap_lock_wait_seconds"] == "s"
    assert units["safemap_entries"] == ""

    held.clear()
    gc.collect()
    assert not [k for k in points(reader) if ("map", "sessions") in k[1]]
    provider.shutdown()


def test_register_and_otel_work_without_prometheus_client() -> None:
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None  # as if not installed\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from opentelemetry.sdk.metrics.export import InMemoryMetricReader\n"
        "import safemap\n"
        "from safemap import metrics\n"
        "from safemap.metrics import otel\n"
        "reader = InMemoryMetricReader()\n"
        "otel.instrument(MeterProvider(metric_readers=[reader]))\n"
        "m = safemap.LockedMap(a=1, b=2)\n"
        "metrics.register(m, 'plain')\n"
        "data = reader.get_metrics_data()\n"
        "entries = [p.value for r in data.resource_metrics for s in r.scope_metrics\n"
        "           for x in s.metrics if x.name == 'safemap_entries'\n"
        "           for p in x.data.data_points]\n"
        "assert entries == [2], entries\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
