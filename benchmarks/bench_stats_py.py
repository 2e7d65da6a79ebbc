"""Cost of the always-on statistics of LockedMap and RWLockMap: get and set, with and without.

    python benchmarks/bench_stats_py.py            # full run (about a minute)
    python benchmarks/bench_stats_py.py --quick    # a few seconds

"With" is the shipped map: its point reads and stores make their dict operation, count it
and release the lock in one C call of the lock. "Without" is the same map (the same lock:
LockedMap's re-entrant mutex, RWLockMap's RWLock) with its ``get`` and ``store`` replaced by
the same work minus the statistics: a plain blocking acquire instead of try-first (no
timing), the dict operation in Python, a plain release (no hit/miss/insert/update count, no
writes-during-iteration check); the lock's own acquisition count, which both pay, is the
only count left. Measuring against a subclass in the same process, interleaved, best of
several repeats, cancels what a separate checkout or process would add (interpreter build,
memory layout, machine load). A ratio below 1 means the shipped call is faster than the
plain one: its single C call replaces the plain code's separate lookup and release calls.
Single thread, no contention: the statistics' fixed cost on the fast path (a contended
acquisition waits far longer than it costs to time it).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import safemap
from safemap import DELETE, MISSING
from safemap.protocol import RecursiveUpdateError
from safemap.protocol.mapping import _sentinel_stored

_ABSENT: Any = object()
_IN_TXN = "inside its transaction"
_IN_OP = "inside one of its own operations"


class _Without:
    """``get`` and ``store`` of the map minus its statistics: the same lock (the map's own),
    a plain blocking acquire (no try-first, no timing), the dict operation in Python, a plain
    release (no count), inline (no helper call)."""

    __slots__ = ()

    def get(self: Any, key: Any, default: Any = None, /) -> Any:
        self._block_read()
        try:
            if self._txn:
                raise RecursiveUpdateError(_IN_TXN)
            return self._data.get(key, default)
        finally:
            self._release_read()

    def store(self: Any, key: Any, value: Any) -> None:
        if value is MISSING or value is DELETE:
            raise _sentinel_stored(value)
        nested = self._held()
        if nested:
            self._nested.acquire()
        else:
            self._block_write()
        try:
            if self._busy:
                raise RecursiveUpdateError(_IN_TXN if self._txn else _IN_OP)
            data = self._data
            old = data.setdefault(key, value)
            if old is not value:
                data[key] = value
        finally:
            if nested:
                self._nested.release()
            else:
                self._release_write()
        del old  # released with the lock free, as the map does


class LockedMapWithout(_Without, safemap.LockedMap[Any, Any]):
    __slots__ = ()


class RWLockMapWithout(_Without, safemap.RWLockMap[Any, Any]):
    __slots__ = ()


PAIRS = [
    ("LockedMap", safemap.LockedMap, LockedMapWithout),
    ("RWLockMap", safemap.RWLockMap, RWLockMapWithout),
]


def _ops(m: Any) -> dict[str, Callable[[int], None]]:
    get = m.get
    store = m.__setitem__

    def run_get(n: int) -> None:
        for i in range(n):
            get(i & 63)

    def run_set(n: int) -> None:
        for i in range(n):
            store(i & 63, i)

    return {"get": run_get, "set": run_set}


def _ns_per_op(fn: Callable[[int], None], n: int) -> float:
    start = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    args = parser.parse_args()
    n, repeats = (10_000, 10) if args.quick else (10_000, 80)
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"# {platform.python_implementation()} {platform.python_version()}"
        f" ({'GIL' if gil else 'free-threaded, GIL disabled'}), {n} ops x best of {repeats}"
    )
    print(f"{'map':<10} {'op':<4} {'with ns':>9} {'without ns':>11} {'ratio':>7}")
    for name, with_cls, without_cls in PAIRS:
        maps = {
            "with": with_cls({i: i for i in range(64)}),
            "without": without_cls({i: i for i in range(64)}),
        }
        best: dict[tuple[str, str], float] = {}
        for _ in range(repeats):
            for side, m in maps.items():  # interleaved: drifts hit both sides alike
                for op, fn in _ops(m).items():
                    ns = _ns_per_op(fn, n)
                    key = (side, op)
                    best[key] = min(best.get(key, ns), ns)
        for op in ("get", "set"):
            w, wo = best[("with", op)], best[("without", op)]
            print(f"{name:<10} {op:<4} {w:>9.1f} {wo:>11.1f} {w / wo:>7.3f}")


if __name__ == "__main__":
    main()
