"""Benchmark of the read cost of scoped entries and loading once (docs/scoped.md).

In one process, interleaved (every round runs every variant once, in a rotating order, so
drift in machine load hits all alike), the median ns/op over 1,000 str keys, single
thread, for ``ConcurrentMap`` and ``LockedMap``:

- ``get(k)`` hit on a plain map: the baseline (1.00x);
- ``get(k)`` hit on a map holding bindings without ttl (``bind(owner=)``, ``scoped``):
  these never change the map's class, so the ratio should be 1.00x (nothing to pay);
- ``get(k)`` hit on a map with ttl bindings (the expiring variant): the price of "no read
  returns an expired entry";
- ``get_or_compute(k, loader)`` hit on a plain map: the price of a hit.

Run ``python benchmarks/bench_scoped.py`` (``--quick``: a few seconds).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from typing import Any

from safemap import ConcurrentMap, LockedMap

NKEYS = 1000


class _Owner:
    pass


def _plain(cls: type[Any], keys: list[str]) -> Any:
    m = cls()
    for k in keys:  # stored one by one, as bind() does: the same table growth
        m[k] = k
    return m


def _with_bindings(cls: type[Any], keys: list[str]) -> Any:
    m = cls()
    owner = _Owner()
    _OWNERS.append(owner)
    for i, k in enumerate(keys):
        m.bind(k, k, owner=owner if i % 2 else threading.current_thread())
    return m


def _with_ttl(cls: type[Any], keys: list[str]) -> Any:
    m = cls()
    for k in keys:
        m.bind(k, k, ttl=3600)
    return m


_OWNERS: list[_Owner] = []


def _loader(key: str) -> str:
    raise AssertionError("a hit never loads")


def op_get(m: Any, keys: list[str]) -> Callable[[int], None]:
    get = m.get

    def run(n: int) -> None:
        for _ in range(n):
            for k in keys:
                get(k)

    return run


def op_get_or_compute(m: Any, keys: list[str]) -> Callable[[int], None]:
    get_or_compute = m.get_or_compute

    def run(n: int) -> None:
        for _ in range(n):
            for k in keys:
                get_or_compute(k, _loader)

    return run


VARIANTS: dict[str, tuple[Callable[[type[Any], list[str]], Any], Callable[..., Any]]] = {
    "get, plain map": (_plain, op_get),
    "get, bindings without ttl": (_with_bindings, op_get),
    "get, ttl bindings": (_with_ttl, op_get),
    "get_or_compute hit, plain map": (_plain, op_get_or_compute),
}


def measure(rounds: int, passes: int) -> dict[str, dict[str, float]]:
    keys = [f"key{i}" for i in range(NKEYS)]
    results: dict[str, dict[str, float]] = {}
    for cls in (ConcurrentMap, LockedMap):
        runs = {name: op(make(cls, keys), keys) for name, (make, op) in VARIANTS.items()}
        samples: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                gc.collect()
                start = time.perf_counter_ns()
                runs[name](passes)
                samples[name].append((time.perf_counter_ns() - start) / (passes * NKEYS))
        results[cls.__name__] = {name: statistics.median(s) for name, s in samples.items()}
    return results


def report(results: dict[str, dict[str, float]], rounds: int, passes: int) -> str:
    gil = "free-threaded" if sysconfig.get_config_var("Py_GIL_DISABLED") else "GIL"
    lines = [
        f"Python {platform.python_version()} ({gil} build), {platform.machine()}; "
        f"median of {rounds} interleaved samples of {passes} passes over {NKEYS} keys.",
        "",
        "| operation | " + " | ".join(results) + " |",
        "| --- | " + " | ".join("---:" for _ in results) + " |",
    ]
    for name in VARIANTS:
        cells = []
        for per_type in results.values():
            base = per_type["get, plain map"]
            cells.append(f"{per_type[name]:.1f} ns ({per_type[name] / base:.2f}x)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    args = parser.parse_args(argv)
    rounds, passes = (5, 5) if args.quick else (15, 30)
    print(report(measure(rounds, passes), rounds, passes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
