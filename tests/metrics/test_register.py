"""``register``/``unregister`` and the collector, in process: names, weak references, the
registry, a failing map, and what each ``MapStats`` field becomes."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import safemap
from safemap import metrics
from safemap.protocol.stats import LatencyHistogram, MailboxStats, MapStats, ShardStats


@pytest.fixture(autouse=True)
def clean_table() -> Iterator[None]:
    yield
    for name in metrics.registered():
        metrics.unregister(name)


def exported(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def maps_in(registry: CollectorRegistry) -> set[str]:
    return {dict(labels)["map"] for name, labels in exported(registry) if name == "safemap_entries"}


class Fixed:
    """A map stand-in whose ``stats()`` is given: what the collector makes of each field."""

    def __init__(self, stats: MapStats) -> None:
        self.value = stats

    def stats(self) -> MapStats:
        return self.value


def test_duplicate_name_is_refused_until_unregistered() -> None:
    registry = CollectorRegistry()
    first, second = safemap.LockedMap(), safemap.LockedMap()
    metrics.register(first, "sessions", registry=registry)
    with pytest.raises(ValueError, match=r"already registered as 'sessions'.*LockedMap"):
        metrics.register(second, "sessions", registry=registry)
    with pytest.raises(ValueError, match="already registered"):
        metrics.register(first, "sessions", registry=registry)  # the same map too
    metrics.unregister("sessions")
    assert maps_in(registry) == set()
    metrics.register(second, "sessions", registry=registry)
    assert metrics.registered() == {"sessions": second}


def test_unregister_unknown_name() -> None:
    with pytest.raises(KeyError, match="no map is registered as 'nothing'"):
        metrics.unregister("nothing")


@pytest.mark.parametrize("bad", ["", None, 3])
def test_name_must_be_a_non_empty_string(bad: object) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        metrics.register(safemap.LockedMap(), bad, registry=CollectorRegistry())  # type: ignore[arg-type]


def test_objects_without_stats_or_weak_references_are_refused() -> None:
    with pytest.raises(TypeError, match="no stats"):
        metrics.register({}, "plain", registry=CollectorRegistry())

    class Slotted:
        __slots__ = ()

        def stats(self) -> None:
            return None

    with pytest.raises(TypeError, match="weak references"):
        metrics.register(Slotted(), "slotted", registry=CollectorRegistry())
    assert metrics.registered() == {}


def test_a_dropped_map_disappears_and_frees_its_name() -> None:
    registry = CollectorRegistry()
    m = safemap.RWLockMap(a=1)
    metrics.register(m, "cache", registry=registry)
    assert maps_in(registry) == {"cache"}
    del m
    gc.collect()
    assert maps_in(registry) == set()
    assert metrics.registered() == {}
    metrics.register(safemap.LockedMap(), "cache", registry=registry)  # the name is free


def test_one_collector_per_registry_exports_every_map() -> None:
    registry = CollectorRegistry()
    a, b = safemap.LockedMap(x=1), safemap.RWLockMap(y=1, z=2)
    metrics.register(a, "a", registry=registry)
    metrics.register(b, "b", registry=registry)  # no "Duplicated timeseries" from the registry
    series = exported(registry)
    assert series[("safemap_entries", frozenset({("map", "a")}))] == 1
    assert series[("safemap_entries", frozenset({("map", "b")}))] == 2


def test_a_failing_map_is_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def stats(self) -> MapStats:
            raise RuntimeError("stats broke")

    registry = CollectorRegistry()
    broken, good = Broken(), safemap.LockedMap(k=1)
    metrics.register(broken, "broken", registry=registry)
    metrics.register(good, "good", registry=registry)
    with caplog.at_level(logging.ERROR, logger="safemap.metrics"):
        assert maps_in(registry) == {"good"}
    assert "'broken'" in caplog.text and "stats broke" in caplog.text


def test_every_field_becomes_its_metric() -> None:
    stats = MapStats(
        "Sharded", 5, 2, 3, 1, 1, 2, 4, 3, 10, 2, 0.5,
        shards=(ShardStats(0, 1, 6, 2, 0.25), ShardStats(1, 1, 4, 0, 0.0)),
        hot_keys=(("secret-key", 4),),
        latency={"get": LatencyHistogram((1e-6, 2e-6), (1, 2, 3), 0.001, 8)},
        mailbox=MailboxStats(3, 4, 4, 10, 7, 1, 2, 1, 5, "half-open", 0.125, 2, 3, 4, 6, True),
    )  # fmt: skip
    registry = CollectorRegistry()
    m = Fixed(stats)
    metrics.register(m, "m", registry=registry)
    got = {
        (name, tuple(sorted((k, v) for k, v in labels if k != "map"))): v
        for (name, labels), v in exported(registry).items()
        if name.startswith("safemap_")
    }
    assert got == {
        ("safemap_map_info", (("kind", "Sharded"),)): 1,
        ("safemap_operations_total", (("op", "read"), ("result", "hit"))): 5,
        ("safemap_operations_total", (("op", "read"), ("result", "miss"))): 2,
        ("safemap_operations_total", (("op", "write"), ("result", "insert"))): 3,
        ("safemap_operations_total", (("op", "write"), ("result", "update"))): 1,
        ("safemap_operations_total", (("op", "write"), ("result", "delete"))): 1,
        ("safemap_entries", ()): 2,
        ("safemap_iterations_total", ()): 4,
        ("safemap_writes_during_iteration_total", ()): 3,
        ("safemap_lock_acquisitions_total", (("shard", "0"),)): 6,
        ("safemap_lock_acquisitions_total", (("shard", "1"),)): 4,
        ("safemap_lock_contentions_total", (("shard", "0"),)): 2,
        ("safemap_lock_contentions_total", (("shard", "1"),)): 0,
        ("safemap_lock_wait_seconds_total", (("shard", "0"),)): 0.25,
        ("safemap_lock_wait_seconds_total", (("shard", "1"),)): 0.0,
        ("safemap_shard_entries", (("shard", "0"),)): 1,
        ("safemap_shard_entries", (("shard", "1"),)): 1,
        ("safemap_operation_duration_seconds_bucket", (("le", "1e-06"), ("op", "get"))): 1,
        ("safemap_operation_duration_seconds_bucket", (("le", "2e-06"), ("op", "get"))): 3,
        ("safemap_operation_duration_seconds_bucket", (("le", "+Inf"), ("op", "get"))): 6,
        ("safemap_operation_duration_seconds_count", (("op", "get"),)): 6,
        ("safemap_operation_duration_seconds_sum", (("op", "get"),)): 0.001,
        ("safemap_mailbox_depth", ()): 3,
        ("safemap_mailbox_capacity", ()): 4,
        ("safemap_mailbox_utilization", ()): 0.75,
        ("safemap_mailbox_peak_depth", ()): 4,
        ("safemap_mailbox_accepted_total", ()): 10,
        ("safemap_mailbox_completed_total", ()): 7,
        ("safemap_mailbox_failed_total", ()): 1,
        ("safemap_mailbox_waits_total", ()): 2,
        ("safemap_mailbox_timeouts_total", ()): 1,
        ("safemap_mailbox_rejections_total", ()): 5,
        ("safemap_mailbox_wait_seconds_total", ()): 0.125,
        ("safemap_mailbox_breaker_rejections_total", ()): 2,
        ("safemap_mailbox_cancelled_total", ()): 3,
        ("safemap_mailbox_dropped_total", ()): 4,
        ("safemap_mailbox_breaker_trips_total", ()): 6,
        ("safemap_mailbox_closed", ()): 1,
        ("safemap_mailbox_breaker_state", (("state", "closed"),)): 0,
        ("safemap_mailbox_breaker_state", (("state", "open"),)): 0,
        ("safemap_mailbox_breaker_state", (("state", "half-open"),)): 1,
        ("safemap_mailbox_breaker_state", (("state", "none"),)): 0,
    }


def test_a_map_with_one_lock_is_shard_0() -> None:
    registry = CollectorRegistry()
    m = Fixed(MapStats("OneLock", 0, 0, 0, 0, 0, 0, 0, 0, 9, 4, 1.5))
    metrics.register(m, "one", registry=registry)
    series = exported(registry)
    shard0 = frozenset({("map", "one"), ("shard", "0")})
    assert series[("safemap_lock_acquisitions_total", shard0)] == 9
    assert series[("safemap_lock_contentions_total", shard0)] == 4
    assert series[("safemap_lock_wait_seconds_total", shard0)] == 1.5
    assert not [n for n, _ in series if n == "safemap_shard_entries"]


@pytest.mark.timeout(60)
def test_registering_while_scraping_from_threads() -> None:
    """Threads register and unregister their own names while another scrapes: no scrape
    raises, every registration lands exactly once, and the table ends empty."""
    registry = CollectorRegistry()
    rounds, workers = 200, 4
    keep = [safemap.LockedMap(i=i) for i in range(workers)]
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[int] = [0] * workers

    def churn(w: int) -> None:
        try:
            for r in range(rounds):
                metrics.register(keep[w], f"w{w}", registry=registry)
                seen[w] += 1
                with pytest.raises(ValueError):
                    metrics.register(keep[w], f"w{w}", registry=registry)
                metrics.unregister(f"w{w}")
                if r % 50 == 0:
                    gc.collect()
        except BaseException as exc:
            errors.append(exc)

    def scrape() -> None:
        try:
            while not done.is_set():
                generate_latest(registry)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(w,)) for w in range(workers)]
    scraper = threading.Thread(target=scrape)
    scraper.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=50)
    done.set()
    scraper.join(timeout=50)
    assert not any(t.is_alive() for t in [*threads, scraper])
    assert errors == []
    assert seen == [rounds] * workers
    assert metrics.registered() == {}


def test_importing_does_not_import_metrics_libraries() -> None:
    code = (
        "import sys, safemap, safemap.metrics\n"
        "heavy = [n for n in sys.modules if n.split('.')[0] in "
        "('prometheus_client', 'opentelemetry', 'rich')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_contention_profile_is_reexported() -> None:
    from safemap.protocol.contention import contention_profile

    assert metrics.contention_profile is contention_profile


def test_docs_list_every_metric() -> None:
    from pathlib import Path

    from safemap.metrics._schema import METRICS

    page = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    for metric in METRICS:
        shown = metric.name + ("_total" if metric.kind == "counter" else "")
        assert f"| `{shown}` |" in page, f"docs/metrics.md does not list {shown}"
