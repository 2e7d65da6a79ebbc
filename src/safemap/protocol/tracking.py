"""Opt-in per-map tracking: hot keys (Space-Saving top-k) and sampled latency per operation.

``m.track(hot_keys=k, latency_every=n)`` switches ``m`` (alone) to its variant with the
:class:`Tracking` mixin (``safemap.protocol.variants``) and keeps the state in its sidecar
(``safemap.protocol.sidecar``): a map that never calls ``track`` runs its own methods
unchanged and pays nothing.

The mixin wraps the public point operations (reads, writes, the compute family). Only the
outermost tracked call on a thread is counted: a derived method that calls another tracked
method of the map (``get`` calling ``load`` in the base protocol) counts once, as the
method the user called.

Guarantees:
- **Hot keys** (:class:`SpaceSaving`, Metwally et al.): at most ``k`` keys are kept (the map
  holds them strongly while they are in the summary, so a key that refers to its own map
  keeps the map alive until it leaves the summary or tracking is turned off). Replacing
  the least counted key costs O(k). Each estimated count is at least the
  key's true number of operations since tracking started and exceeds it by at most the
  summary's smallest count when the key entered (at most ``N/k`` after ``N`` operations);
  every key used more than ``N/k`` times is in the summary. Thread-safe: updates are under
  one lock, so no operation is lost.
- **Latency** (:class:`LatencySampler`): for each operation kind, the 1st, (N+1)th, (2N+1)th
  ... call is timed (``perf_counter_ns``) and counted in log2 buckets of 64 ns .. ~1 ms
  (doubling) plus one overflow bucket. Sampled calls are counted exactly (under a lock);
  the choice of which call is sampled is per kind and approximate under threads on
  free-threaded builds (the counter that picks them is not locked).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

from ._locked import locked
from .sidecar import existing_sidecar, sidecar
from .stats import LatencyHistogram
from .variants import switch

__all__ = ["LATENCY_BOUNDS", "LatencySampler", "SpaceSaving", "Tracking", "track"]

_FIRST_BOUND_NS = 64
_BUCKETS = 15
LATENCY_BOUNDS: tuple[float, ...] = tuple(_FIRST_BOUND_NS * 2**i / 1e9 for i in range(_BUCKETS))
"""Upper bounds (seconds) of the latency buckets: 64 ns, 128 ns, ... ~1.05 ms."""


class SpaceSaving:
    """Bounded top-``k`` counter (Space-Saving). ``offer(key)`` counts one use of ``key``."""

    __slots__ = ("_counts", "_lock", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._counts: dict[Any, int] = {}

    def offer(self, key: Any) -> None:
        locked(self._lock, self._offer, key)

    def _offer(self, key: Any) -> None:
        counts = self._counts
        count = counts.get(key)
        if count is not None:
            counts[key] = count + 1
        elif len(counts) < self.capacity:
            counts[key] = 1
        else:
            # Replace the least counted key: the newcomer inherits its count (the
            # possible over-estimate) plus one.
            victim = min(counts, key=counts.__getitem__)
            smallest = counts.pop(victim)
            counts[key] = smallest + 1

    def top(self) -> tuple[tuple[Any, int], ...]:
        """``(key, estimated count)`` pairs, most used first."""
        items: list[tuple[Any, int]] = locked(self._lock, list, self._counts.items())
        items.sort(key=lambda item: -item[1])
        return tuple(items)


class LatencySampler:
    """Sampled log2 latency histograms per operation kind."""

    __slots__ = ("_hist", "_lock", "_picks", "every")

    def __init__(self, every: int) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._picks: dict[str, Callable[[], int]] = {}
        # kind -> [counts per bucket..., sum in ns]
        self._hist: dict[str, list[int]] = {}

    def pick(self, kind: str) -> bool:
        """Whether this call of ``kind`` is to be timed (one in ``every``)."""
        counter = self._picks.get(kind)
        if counter is None:
            counter = locked(self._lock, self._picks.setdefault, kind, itertools.count().__next__)
        return counter() % self.every == 0

    def add(self, kind: str, ns: int) -> None:
        locked(self._lock, self._add, kind, min(max(0, ns.bit_length() - 6), _BUCKETS), ns)

    def _add(self, kind: str, index: int, ns: int) -> None:
        hist = self._hist.get(kind)
        if hist is None:
            hist = self._hist[kind] = [0] * (_BUCKETS + 2)
        hist[index] += 1
        hist[-1] += ns

    def histograms(self) -> dict[str, LatencyHistogram]:
        return locked(self._lock, self._histograms)

    def _histograms(self) -> dict[str, LatencyHistogram]:
        return {
            kind: LatencyHistogram(LATENCY_BOUNDS, tuple(hist[:-1]), hist[-1] / 1e9, self.every)
            for kind, hist in sorted(self._hist.items())
        }


class _State:
    __slots__ = ("hot", "latency")

    def __init__(self) -> None:
        self.hot: SpaceSaving | None = None
        self.latency: LatencySampler | None = None


class _Depth(threading.local):
    depth = 0


_here = _Depth()

# Wrapped method -> operation kind (the ``latency`` key and the metrics' ``op`` label).
_KINDS: dict[str, str] = {
    "__getitem__": "get",
    "get": "get",
    "__contains__": "get",
    "load": "get",
    "__setitem__": "set",
    "store": "set",
    "__delitem__": "delete",
    "pop": "delete",
    "delete": "delete",
    "load_and_delete": "delete",
    "compare_and_delete": "delete",
    "swap": "swap",
    "compare_and_swap": "swap",
    "setdefault": "load_or_store",
    "load_or_store": "load_or_store",
    "compute": "compute",
    "compute_if_absent": "compute",
    "compute_if_present": "compute",
    "merge": "compute",
}


def _state(m: object) -> _State | None:
    found = existing_sidecar(m)
    return None if found is None else getattr(found, "tracking", None)


def _wrapped(name: str, kind: str) -> Callable[..., Any]:
    def method(self: Any, key: Any, *args: Any, **kwargs: Any) -> Any:
        call = getattr(super(Tracking, self), name)
        here = _here
        state = _state(self)
        if here.depth or state is None:
            return call(key, *args, **kwargs)
        latency = state.latency
        timed = latency is not None and latency.pick(kind)
        here.depth += 1
        start = perf_counter_ns() if timed else 0
        try:
            return call(key, *args, **kwargs)
        finally:
            if timed:
                latency.add(kind, perf_counter_ns() - start)  # type: ignore[union-attr]
            here.depth -= 1
            hot = state.hot
            if hot is not None:
                # An unhashable key or a raising __eq__: the call itself reported it.
                with contextlib.suppress(Exception):
                    hot.offer(key)

    method.__name__ = name
    method.__qualname__ = f"Tracking.{name}"
    return method


class Tracking:
    """The mixin of a tracked map (see the module doc)."""

    __slots__ = ()
    variant_rank = 50


for _name, _kind in _KINDS.items():
    setattr(Tracking, _name, _wrapped(_name, _kind))


def _check(name: str, value: int | None) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be None or an int >= 0, not {value!r}")


def track(m: object, hot_keys: int | None, latency_every: int | None) -> None:
    """``m.track(...)``: see ``ConcurrentMapping.track``."""
    _check("hot_keys", hot_keys)
    _check("latency_every", latency_every)
    car = sidecar(m)
    state: _State | None = getattr(car, "tracking", None)
    if state is None:
        state = car.tracking = _State()
    if hot_keys is not None:
        state.hot = SpaceSaving(hot_keys) if hot_keys else None
    if latency_every is not None:
        state.latency = LatencySampler(latency_every) if latency_every else None
    if state.hot is None and state.latency is None:
        switch(m, remove=Tracking)
    else:
        switch(m, add=Tracking)


def tracked(m: object) -> tuple[tuple[tuple[Any, int], ...], dict[str, LatencyHistogram]]:
    """``(hot_keys, latency)`` of ``m`` for its ``stats()`` (empty when not tracked)."""
    state = _state(m)
    if state is None:
        return (), {}
    hot = state.hot
    latency = state.latency
    return (
        () if hot is None else hot.top(),
        {} if latency is None else latency.histograms(),
    )
