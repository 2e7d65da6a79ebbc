"""The Prometheus collector over the registered maps (``safemap[prometheus]``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import registered
from ._schema import BY_NAME, METRICS, cumulative, samples

__all__ = ["SafemapCollector"]

_log = logging.getLogger("safemap.metrics")


class SafemapCollector(Collector):
    """Exports every map registered with :func:`safemap.metrics.register`, read with
    ``m.stats()`` once per map per scrape (``docs/metrics.md`` lists the metrics).

    A map whose ``stats()`` raises is left out of that scrape (logged to the
    ``safemap.metrics`` logger) so that one broken map does not hide the others.
    """

    def describe(self) -> Iterable[Metric]:
        # The names this collector owns, so that a registry refuses a clash at once.
        return list(_families().values())

    def collect(self) -> Iterable[Metric]:
        families = _families()
        for name, m in registered().items():
            try:
                stats = m.stats()
            except Exception:
                _log.exception("safemap.metrics: stats() of the map %r failed", name)
                continue
            for s in samples(name, stats):
                labels = [s.labels[label] for label in BY_NAME[s.metric].labels]
                families[s.metric].add_metric(labels, s.value)
            histogram = families["safemap_operation_duration_seconds"]
            for op, h in sorted(stats.latency.items()):
                buckets = [(_le(bound), count) for bound, count in cumulative(h)]
                histogram.add_metric([name, op], buckets, h.sum_seconds)
        return [family for family in families.values() if family.samples]


def _families() -> dict[str, Any]:
    """An empty family per metric, in the table's order."""
    kinds = {
        "counter": CounterMetricFamily,
        "gauge": GaugeMetricFamily,
        "histogram": HistogramMetricFamily,
    }
    return {m.name: kinds[m.kind](m.name, m.help, labels=list(m.labels)) for m in METRICS}


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
