"""Benchmark of the race detector's cost: a watched dict (detector enabled) against dict.

Measures, in one process, with the two implementations interleaved (every round runs both,
in alternating order, so drift in machine load hits both alike):

1. Median ns/op on 1,000 int keys, single thread (the common case the same-epoch fast path
   is for): ``d[k]`` hit, ``d[k] = v`` on an existing key, ``d.get(k)`` miss, ``k in d``,
   iteration (per item) and ``len(d)``; the ratio to ``dict`` against the budget (25x).
   The cost of a watched dict with the detector *disabled* is shown too.
2. Memory over a million operations on a watched map (tracemalloc): inserts and deletes of
   ever-new keys, misses, reads, with a new epoch (a release) every 16 operations, so the
   slow path, the absent-key eviction and the history ring are all exercised. The traced
   memory after 100,000 operations and after 1,000,000 must be about the same.

Run ``python benchmarks/bench_race.py`` (``--quick`` for a run under a minute).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from bench_native import NKEYS  # same key count as the native maps' benchmark

from safemap import race
from safemap.race import _runtime, _shadow

BUDGET = 25.0  # ratio to dict the detector must stay under (same-thread common case)


def op_get_hit(m: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            for k in keys:
                m[k]

    return run


def op_set_existing(m: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    values = (object(), object())

    def run(n: int) -> None:
        for i in range(n):
            v = values[i & 1]
            for k in keys:
                m[k] = v

    return run


def op_get_miss(m: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    get = m.get

    def run(n: int) -> None:
        for _ in range(n):
            for k in miss:
                get(k)

    return run


def op_contains(m: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            for k in keys:
                k in m  # noqa: B015 - the membership test is what is measured

    return run


def op_iterate(m: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            for _k in m:
                pass

    return run


def op_len(m: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            for _k in keys:
                len(m)

    return run


OPS: dict[str, Callable[..., Callable[[int], None]]] = {
    "d[k] hit": op_get_hit,
    "d[k] = v existing": op_set_existing,
    "get(k) miss": op_get_miss,
    "k in d": op_contains,
    "iteration (per item)": op_iterate,
    "len(d)": op_len,
}

IMPLS = ("dict", "watched, disabled", "watched, enabled")


def make(impl: str, keys: list[int]) -> Any:
    d = {k: k for k in keys}
    return d if impl == "dict" else race.watch(d, name="bench")


def bench_ops(rounds: int, passes: int) -> dict[str, dict[str, float]]:
    """ns/op per (op, implementation): the median of ``rounds`` interleaved samples."""
    keys = list(range(NKEYS))
    miss = list(range(NKEYS, 2 * NKEYS))
    samples: dict[str, dict[str, list[float]]] = {op: {i: [] for i in IMPLS} for op in OPS}
    runners: dict[tuple[str, str], Callable[[int], None]] = {}
    for op, make_op in OPS.items():
        for impl in IMPLS:
            runners[op, impl] = make_op(make(impl, keys), keys, miss)
    race.enable()
    for run in runners.values():
        run(1)  # warm up: specialize the bytecode, create the shadow (first epoch)
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            order = IMPLS if r % 2 == 0 else IMPLS[::-1]
            for op in OPS:
                for impl in order:
                    # Flip only the flag the watched methods test: race.disable() and
                    # enable() would also start a new shadow generation each round.
                    _shadow.on = impl != "watched, disabled"
                    run = runners[op, impl]
                    t0 = time.perf_counter_ns()
                    run(passes)
                    dt = time.perf_counter_ns() - t0
                    _shadow.on = True
                    samples[op][impl].append(dt / (passes * NKEYS))
    finally:
        gc.enable()
        race.disable()
    return {op: {i: statistics.median(v) for i, v in per.items()} for op, per in samples.items()}


def bench_memory(total: int, checkpoint: int) -> tuple[int, int]:
    """Traced memory (bytes) after ``checkpoint`` and after ``total`` operations."""
    race.enable()
    d = race.watch({k: k for k in range(NKEYS)}, name="memory")
    sync = _runtime.SyncVar()
    gc.collect()
    tracemalloc.start()
    at_checkpoint = 0
    fresh = 10**9
    try:
        for i in range(total // 8):
            if i % 2 == 0:
                _runtime.release(sync)  # a new epoch: the next accesses take the slow path
            k = i % NKEYS
            d[k]
            d[k] = i
            d.get(fresh)  # a miss on a key never seen: a new absent-key location
            fresh += 1
            d[fresh] = i  # insert an ever-new key ...
            del d[fresh]  # ... and delete it: its location stays, as an absent key
            fresh += 1
            k in d  # noqa: B015 - a read
            len(d)
            if (i + 1) * 8 == checkpoint:
                gc.collect()
                at_checkpoint = tracemalloc.get_traced_memory()[0]
        gc.collect()
        at_end = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        race.disable()
    return at_checkpoint, at_end


def report(quick: bool) -> str:
    rounds, passes = (5, 10) if quick else (15, 40)
    total = 1_000_000
    ops = bench_ops(rounds, passes)
    lines = [
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; "
        f"mode: {'quick' if quick else 'full'}.",
        "",
        f"### Single thread, {NKEYS:,} int keys: ns/op (ratio to dict)",
        "",
        "| operation | " + " | ".join(IMPLS) + " | budget (enabled) |",
        "| --- | " + " | ".join("---:" for _ in IMPLS) + " | ---: |",
    ]
    worst = 0.0
    for op, per in ops.items():
        base = per["dict"]
        cells = [f"{per[i]:.1f} ({per[i] / base:.1f}x)" for i in IMPLS]
        worst = max(worst, per["watched, enabled"] / base)
        lines.append(f"| {op} | " + " | ".join(cells) + f" | <= {BUDGET:.0f}x |")
    lines += [
        "",
        f"Each cell is the median of {rounds} interleaved samples of {passes} passes over "
        f"the keys. Worst enabled ratio: {worst:.1f}x "
        f"({'within' if worst <= BUDGET else 'OVER'} the {BUDGET:.0f}x budget).",
        "",
        f"### Memory over {total:,} operations on a watched map (tracemalloc)",
        "",
    ]
    checkpoint = total // 10
    at_checkpoint, at_end = bench_memory(total, checkpoint)
    growth = at_end - at_checkpoint
    lines += [
        "| after | traced KiB |",
        "| ---: | ---: |",
        f"| {checkpoint:,} ops | {at_checkpoint / 1024:.0f} |",
        f"| {total:,} ops | {at_end / 1024:.0f} |",
        "",
        f"Growth from {checkpoint:,} to {total:,} operations: {growth / 1024:+.0f} KiB "
        f"({'flat' if abs(growth) < 0.1 * max(at_checkpoint, 1) + 256 * 1024 else 'GROWING'}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds: under a minute")
    args = parser.parse_args(argv)
    sys.stdout.write(report(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
