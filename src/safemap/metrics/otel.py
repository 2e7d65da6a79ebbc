"""The OpenTelemetry bridge (``safemap[otel]``: ``opentelemetry-api`` only).

``instrument()`` creates one observable instrument per counter and gauge of the
Prometheus collector (same names without ``_total``, same attributes), on a meter named
``safemap``; at each collection they read ``stats()`` of every map registered with
:func:`safemap.metrics.register`. The sampled latency histogram is not bridged: the
OpenTelemetry API has no asynchronous histogram. Which SDK and exporter collect the
instruments is the application's choice, as the API intends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from .._version import __version__
from . import registered
from ._schema import METRICS, Metric, samples

__all__ = ["instrument"]

_lock = threading.Lock()
_instrumented: list[Any] = []  # the providers done (identity; providers may not be hashable)


def instrument(meter_provider: MeterProvider | None = None) -> None:
    """Create safemap's observable instruments on ``meter_provider`` (default: the global
    one). Calling it again for the same provider does nothing."""
    provider = meter_provider or otel_metrics.get_meter_provider()
    with _lock:
        if any(p is provider for p in _instrumented):
            return
        _instrumented.append(provider)
    meter = provider.get_meter("safemap", __version__)
    for metric in METRICS:
        unit = _unit(metric.name)
        if metric.kind == "counter":
            meter.create_observable_counter(
                metric.name, callbacks=[_observe(metric)], unit=unit, description=metric.help
            )
        elif metric.kind == "gauge":
            meter.create_observable_gauge(
                metric.name, callbacks=[_observe(metric)], unit=unit, description=metric.help
            )
        # histograms: the API has no asynchronous histogram instrument


def _unit(name: str) -> str:
    # UCUM units: seconds, and "1" for the one ratio; counts have none (an exporter to
    # Prometheus would turn "1" into a "_ratio" suffix).
    if name.endswith("_seconds"):
        return "s"
    return "1" if name.endswith("_utilization") else ""


def _observe(metric: Metric) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        out: list[Observation] = []
        for name, m in registered().items():
            try:
                stats = m.stats()
            except Exception:  # the Prometheus collector logs it; here the map is left out
                continue
            out.extend(
                Observation(s.value, s.labels)
                for s in samples(name, stats)
                if s.metric == metric.name
            )
        return out

    return callback
