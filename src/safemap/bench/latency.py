"""Single-thread cost of each operation, for the per-operation latency chart.

For each operation below, on a map prefilled with ``keys`` int entries ``k -> k``, one
sample times a batch of :data:`BATCH` calls (cycling over the keys) with
``perf_counter_ns`` and divides by the batch size; the report gives the median and the
90th percentile over the samples. Implementations are interleaved within each sample
round, as in :mod:`.runner`. One thread only: this is the price of one call, not a
scaling measurement.
"""

from __future__ import annotations

import operator
import statistics
from collections.abc import Callable, Sequence
from time import perf_counter_ns
from typing import Any

from .protocol import BenchMap, direct
from .registry import Impl, close_map
from .results import LatencyResult

__all__ = ["BATCH", "LATENCY_OPS", "measure_latency"]

BATCH = 256

Op = Callable[[BenchMap, Sequence[int]], int]
"""Runs calls over ``keys``; returns how many calls it made (or entries it visited)."""


def _load_hit(m: BenchMap, keys: Sequence[int]) -> int:
    get = direct(m).get
    for k in keys:
        get(k, None)
    return len(keys)


def _load_miss(m: BenchMap, keys: Sequence[int]) -> int:
    get = direct(m).get
    for k in keys:
        get(-1 - k, None)
    return len(keys)


def _store(m: BenchMap, keys: Sequence[int]) -> int:
    t = direct(m).target
    for k in keys:
        t[k] = k
    return len(keys)


def _load_or_store(m: BenchMap, keys: Sequence[int]) -> int:
    setdefault = direct(m).setdefault
    for k in keys:
        setdefault(k, k)
    return len(keys)


def _swap(m: BenchMap, keys: Sequence[int]) -> int:
    swap = m.swap
    for k in keys:
        swap(k, k)
    return len(keys)


def _cas(m: BenchMap, keys: Sequence[int]) -> int:
    cas = m.compare_and_swap
    for k in keys:
        cas(k, k, k)
    return len(keys)


def _delete_store(m: BenchMap, keys: Sequence[int]) -> int:
    pop, t = (d := direct(m)).pop, d.target
    for k in keys:
        pop(k, None)
        t[k] = k
    return 2 * len(keys)


def _merge(m: BenchMap, keys: Sequence[int]) -> int:
    merge, add = m.merge, operator.add
    for _ in keys:
        merge(-1, 1, add)
    return len(keys)


def _range(m: BenchMap, keys: Sequence[int]) -> int:
    seen = 0

    def visit(_k: Any, _v: Any) -> bool:
        nonlocal seen
        seen += 1
        return True

    m.range(visit)
    return seen


def _items(m: BenchMap, keys: Sequence[int]) -> int:
    seen = 0
    for _ in m.items():
        seen += 1
    return seen


LATENCY_OPS: dict[str, Op] = {
    "load (hit)": _load_hit,
    "load (miss)": _load_miss,
    "store (overwrite)": _store,
    "load_or_store (hit)": _load_or_store,
    "swap": _swap,
    "compare_and_swap": _cas,
    "load_and_delete + store (per call)": _delete_store,
    "merge (counter)": _merge,
    "range (per entry)": _range,
    "items() (per entry)": _items,
}


def measure_latency(
    impls: Sequence[Impl],
    *,
    rounds: int,
    keys: int = 1000,
    tick: Callable[[], None] = lambda: None,
) -> list[LatencyResult]:
    """Median and p90 ns per call of each operation on each implementation.

    An implementation that raises for an operation gets no result for it. ``tick`` is
    called after each (implementation, round) so a progress bar can follow.
    """
    key_list = list(range(keys))
    batch = key_list[:BATCH]
    samples: dict[tuple[str, str], list[float]] = {}
    maps = {}
    try:
        for impl in impls:
            m = impl.factory()
            for k in key_list:
                m.store(k, k)
            maps[impl.name] = m
        for r in range(rounds):
            shift = r % len(impls) if impls else 0
            for impl in [*impls[shift:], *impls[:shift]]:
                m = maps[impl.name]
                for op_name, op in LATENCY_OPS.items():
                    try:
                        start = perf_counter_ns()
                        calls = op(m, batch)
                        elapsed = perf_counter_ns() - start
                    except Exception:
                        continue
                    if calls:
                        samples.setdefault((impl.name, op_name), []).append(elapsed / calls)
                tick()
    finally:
        for m in maps.values():
            close_map(m)
    results = []
    for impl in impls:
        for op_name in LATENCY_OPS:
            ns = samples.get((impl.name, op_name))
            if not ns:
                continue
            ordered = sorted(ns)
            p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
            results.append(
                LatencyResult(impl.name, op_name, statistics.median(ordered), p90, len(ordered))
            )
    return results
