"""Benchmark of ``safemap.CheckedDict`` (the fail-fast checked dict) against ``dict``.

In one process, interleaved (every round runs both types once per operation, in a
rotating order, so drift in machine load hits both alike), the median ns/op on 1,000 int
keys, single thread, of: ``d[k]`` hit, ``d.get(k)`` miss, ``d[k] = v`` on an existing
key, insert + delete, ``k in d``, iteration (per item, ``for k in d``; and per item of
``for k, v in d.items()``), ``len(d)``. Each is printed with its ratio to ``dict``; the
issue's target is at most 2x.

Run ``python benchmarks/bench_checked.py`` (``--quick``: under a minute).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable
from typing import Any

from safemap.failfast import CheckedDict, checked

NKEYS = 1000  # as in bench_native.py
TARGET = 2.0

IMPLS: dict[str, Callable[[dict[int, int]], Any]] = {
    "dict": dict,
    "CheckedDict": checked,
}

# Each op builds a function run(n) doing n passes over the 1,000 keys (NKEYS operations
# per pass).


def op_get_hit(d: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            for k in keys:
                d[k]

    return run


def op_get_miss(d: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    get = d.get

    def run(n: int) -> None:
        for _ in range(n):
            for k in miss:
                get(k)

    return run


def op_set_existing(d: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    values = (object(), object())  # alternate, so every store really replaces the value

    def run(n: int) -> None:
        for i in range(n):
            v = values[i & 1]
            for k in keys:
                d[k] = v

    return run


def op_insert_delete(d: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            for k in miss:
                d[k] = k
                del d[k]

    return run


def op_contains(d: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            for k in keys:
                k in d  # noqa: B015 - the operation measured

    return run


def op_iter(d: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            for _k in d:
                pass

    return run


def op_iter_items(d: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            for _k, _v in d.items():
                pass

    return run


def op_len(d: Any, keys: list[int], miss: list[int]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            for _k in keys:
                len(d)

    return run


OPS: dict[str, Callable[[Any, list[int], list[int]], Callable[[int], None]]] = {
    "d[k] hit": op_get_hit,
    "d.get(k) miss": op_get_miss,
    "d[k] = v existing": op_set_existing,
    "insert + delete": op_insert_delete,
    "k in d": op_contains,
    "iteration, per item": op_iter,
    "items() iteration, per item": op_iter_items,
    "len(d)": op_len,
}


def bench(rounds: int, passes: int) -> dict[str, dict[str, float]]:
    """ns/op for each (op, implementation): the median of `rounds` interleaved samples."""
    keys = list(range(NKEYS))
    miss = list(range(NKEYS, 2 * NKEYS))
    names = list(IMPLS)
    runners: dict[tuple[str, str], Callable[[int], None]] = {}
    for op, make in OPS.items():
        for name in names:
            d = IMPLS[name](dict.fromkeys(keys, 0))
            assert name == "dict" or isinstance(d, CheckedDict)
            run = make(d, keys, miss)
            run(1)  # warm up (and specialize the bytecode)
            runners[op, name] = run
    samples: dict[str, dict[str, list[float]]] = {op: {n: [] for n in names} for op in OPS}
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for op in OPS:
                for name in order:
                    run = runners[op, name]
                    t0 = time.perf_counter_ns()
                    run(passes)
                    dt = time.perf_counter_ns() - t0
                    samples[op][name].append(dt / (passes * NKEYS))
    finally:
        gc.enable()
    return {op: {n: statistics.median(v) for n, v in per.items()} for op, per in samples.items()}


def report(quick: bool) -> tuple[str, bool]:
    rounds, passes = (9, 60) if quick else (31, 200)
    res = bench(rounds, passes)
    gil = "free-threaded" if sysconfig.get_config_var("Py_GIL_DISABLED") else "GIL"
    lines = [
        f"Python {platform.python_version()} ({gil} build), {os.cpu_count()} CPUs, "
        f"{platform.machine()}; mode: {'quick' if quick else 'full'}; median of {rounds} "
        f"interleaved samples of {passes} passes over {NKEYS:,} int keys.",
        "",
        "| operation | dict ns/op | CheckedDict ns/op | ratio | target |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    ok = True
    for op, per in res.items():
        ratio = per["CheckedDict"] / per["dict"]
        ok = ok and ratio <= TARGET
        lines.append(
            f"| {op} | {per['dict']:.1f} | {per['CheckedDict']:.1f} | {ratio:.2f}x | <= {TARGET}x |"
        )
    return "\n".join(lines) + "\n", ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds: under a minute")
    args = parser.parse_args(argv)
    text, ok = report(args.quick)
    sys.stdout.write(text)
    sys.stdout.write("all within target\n" if ok else "SOME ABOVE TARGET\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
