"""Export safemap's statistics: Prometheus, OpenTelemetry, Grafana, ``safemap top``.

``register(m, name="sessions")`` names a map for the exporters; every scrape then reads
``m.stats()`` (a :class:`~safemap.MapStats`) and exports it under that name (the label
``map``). The map is held weakly: once the program drops it, it disappears from the next
scrape and its name is free again. Names are process-wide.

- :class:`SafemapCollector` (``safemap[prometheus]``): a prometheus_client collector over
  the registered maps; ``register`` installs one into the registry it is given (default:
  prometheus_client's ``REGISTRY``) the first time.
- :func:`serve`: an HTTP endpoint with ``/metrics`` and a JSON side endpoint for the hot
  keys (read by ``safemap top``; keys are never Prometheus labels).
- :mod:`safemap.metrics.otel` (``safemap[otel]``): the same statistics as OpenTelemetry
  observable instruments.
- :mod:`safemap.metrics.grafana`: the shipped Grafana dashboard and Prometheus alerting
  rules, and the script that generates them.
- :func:`contention_profile`: where the program waits on contended locks (re-exported from
  ``safemap.protocol.contention``).

Importing this package imports no metrics library; each is imported where it is used.
"""

from __future__ import annotations

import importlib
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from ..protocol.contention import ContentionProfile, contention_profile
    from ._server import MetricsServer, serve
    from .prometheus import SafemapCollector

__all__ = [
    "ContentionProfile",
    "MetricsServer",
    "SafemapCollector",
    "contention_profile",
    "register",
    "registered",
    "serve",
    "unregister",
]

# The table of named maps. Dropped maps are pruned when the table is read, not by weakref
# callbacks: a callback runs wherever a map's last reference goes, which can be this
# thread while it holds _lock (a collection inside the locked block), a self-deadlock.
_lock = threading.Lock()
_maps: dict[str, weakref.ref[Any]] = {}
_install_lock = threading.Lock()
# The registries that already hold a collector (each exports every registered map).
_installed: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def register(m: Any, name: str, *, registry: CollectorRegistry | None = None) -> None:
    """Export ``m`` (any object whose ``stats()`` returns a :class:`~safemap.MapStats`;
    every safemap map) under ``name``, the value of the label ``map``.

    ``m`` is held weakly: when the program drops it, it leaves the exports. A name is taken
    until its map is unregistered or dropped; registering another map under a taken name
    raises ``ValueError``. The first registration into a Prometheus ``registry`` (default:
    prometheus_client's ``REGISTRY``, when prometheus_client is installed) installs a
    :class:`SafemapCollector` there; without prometheus_client the map is still exported by
    :mod:`safemap.metrics.otel`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a map's name must be a non-empty string, not {name!r}")
    if not callable(getattr(m, "stats", None)):
        raise TypeError(f"cannot export a {type(m).__name__}: it has no stats() method")

    try:
        ref = weakref.ref(m)
    except TypeError:
        raise TypeError(
            f"cannot export a {type(m).__name__}: it does not support weak references"
        ) from None
    with _lock:
        taken = _maps.get(name)
        held = taken() if taken is not None else None
        if held is not None:
            raise ValueError(
                f"a map is already registered as {name!r} (a {type(held).__name__}); "
                f"unregister({name!r}) it first or choose another name"
            )
        _maps[name] = ref
    try:
        _install(registry)
    except BaseException:
        with _lock:
            if _maps.get(name) is ref:
                del _maps[name]
        raise


def unregister(name: str) -> None:
    """Stop exporting the map registered as ``name`` (``KeyError`` if none is)."""
    with _lock:
        ref = _maps.get(name)
        if ref is None or ref() is None:
            raise KeyError(f"no map is registered as {name!r}")
        del _maps[name]


def registered() -> dict[str, Any]:
    """The registered maps that are still alive, by name (a new dict, sorted by name)."""
    with _lock:
        live = {name: ref() for name, ref in sorted(_maps.items())}
        for name, m in live.items():
            if m is None:  # dropped by the program: its name is free again
                del _maps[name]
    return {name: m for name, m in live.items() if m is not None}


def _install(registry: CollectorRegistry | None) -> None:
    if registry is None:
        try:
            from prometheus_client import REGISTRY
        except ImportError:  # no Prometheus here: the table still serves the other exporters
            return
        registry = REGISTRY
    with _install_lock:
        if registry in _installed:
            return
        from .prometheus import SafemapCollector

        collector = SafemapCollector()
        registry.register(collector)
        _installed[registry] = collector


# Public name -> the module that defines it, imported on first use (PEP 562).
_LAZY = {
    "MetricsServer": "safemap.metrics._server",
    "serve": "safemap.metrics._server",
    "SafemapCollector": "safemap.metrics.prometheus",
    "ContentionProfile": "safemap.protocol.contention",
    "contention_profile": "safemap.protocol.contention",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'safemap.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
