"""Per-call cost of every safemap map type, as a ratio to a plain ``dict``.

The numbers behind the README's "map types" table. One thread, 1,000 int keys, all
implementations interleaved in one process run (every round runs each implementation once,
in a rotating order, so drift in machine load hits all alike); each cell is the median over
the rounds of the time per call, divided by the same operation on ``dict``:

- ``get`` hit: ``m.get(k)`` on a present key;
- ``set``: ``m[k] = v`` on a present key;
- atomic increment: ``m.merge(k, 1, operator.add)`` (``dict``: ``d[k] = d.get(k, 0) + 1``,
  which is NOT atomic — the unsafe limit).

Run ``python benchmarks/bench_maps.py`` (``--quick``: a few seconds).
"""

from __future__ import annotations

import argparse
import operator
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import safemap

KEYS = list(range(1_000, 2_000))  # outside the small-int cache, like real keys


def _get(m: Any) -> Callable[[], None]:
    get = m.get
    keys = KEYS

    def run() -> None:
        for k in keys:
            get(k)

    return run


def _set(m: Any) -> Callable[[], None]:
    keys = KEYS

    def run() -> None:
        for k in keys:
            m[k] = k

    return run


def _merge(m: Any) -> Callable[[], None]:
    keys = KEYS
    if isinstance(m, dict):
        get = m.get

        def plain_run() -> None:
            for k in keys:
                m[k] = get(k, 0) + 1

        return plain_run
    merge, add = m.merge, operator.add

    def run() -> None:
        for k in keys:
            merge(k, 1, add)

    return run


OPERATIONS: dict[str, Callable[[Any], Callable[[], None]]] = {
    "get hit": _get,
    "set": _set,
    "atomic increment": _merge,
}


def _implementations() -> dict[str, Any]:
    data = dict.fromkeys(KEYS, 0)
    return {
        "dict": dict(data),
        "ConcurrentMap": safemap.ConcurrentMap(data),
        "SyncMap": safemap.SyncMap(data),
        "LockedMap": safemap.LockedMap(data),
        "RWLockMap": safemap.RWLockMap(data),
        "PersistentMap": safemap.PersistentMap(data),
        "Cache": safemap.Cache(data, maxsize=4096),  # bounded, room for every key: no eviction
        "ActorMap": safemap.ActorMap(data),
    }


def measure(rounds: int, passes: int) -> dict[str, dict[str, float]]:
    """Median ns per call, per operation and implementation."""
    impls = _implementations()
    names = list(impls)
    result: dict[str, dict[str, float]] = {}
    for op, make in OPERATIONS.items():
        runners = {name: make(m) for name, m in impls.items()}
        samples: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                run = runners[name]
                n = passes if name != "ActorMap" else max(1, passes // 20)
                start = time.perf_counter_ns()
                for _ in range(n):
                    run()
                samples[name].append((time.perf_counter_ns() - start) / (n * len(KEYS)))
        result[op] = {name: statistics.median(s) for name, s in samples.items()}
    impls["ActorMap"].close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a few seconds)")
    args = parser.parse_args(argv)
    rounds, passes = (5, 10) if args.quick else (15, 40)
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"Python {platform.python_version()} ({'GIL' if gil else 'free-threaded'}), "
        f"{len(KEYS)} int keys, one thread, median of {rounds} interleaved rounds"
    )
    table = measure(rounds, passes)
    names = list(next(iter(table.values())))
    print("| operation | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    for op, row in table.items():
        base = row["dict"]
        cells = [f"{row[n]:.0f} ns ({row[n] / base:.1f}x)" for n in names]
        print(f"| {op} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
