"""Hand-off cost of the actor maps, side by side with lock-based maps, in one process run.

    python benchmarks/bench_actor.py            # full run (about a minute)
    python benchmarks/bench_actor.py --quick    # a few seconds

Single caller: ns per call of get / store / merge / execute, where "execute" is the
multi-key primitive of each map (ActorMap.execute, transaction() elsewhere, a plain call on
a dict). This is the latency an actor map adds: every call is a hand-off to the owner and
back. Contended: N threads merging into a few keys, wall-clock ns per call over all
threads (throughput). Each cell is the best of several repeats; ratios are against
LockedMap measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import platform
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import safemap
from safemap.actor import ActorMap, AsyncActorMap

try:
    from safemap.native import ConcurrentMap as _ConcurrentMap
except ImportError:  # the native core is not built: compare with the pure-Python maps only
    _ConcurrentMap = None  # type: ignore[assignment,misc]
ConcurrentMap: Any = _ConcurrentMap

KEYS = 64


def multi_key(d: Any) -> int:
    """The 'execute' body: a two-key read-modify-write."""
    d[1] = d[1] + 1
    d[2] = d[2] - 1
    return 0


def single_caller_ops(m: Any, kind: str) -> dict[str, Callable[[int], None]]:
    if kind == "dict":

        def get(n: int) -> None:
            for i in range(n):
                m.get(i & 63)

        def store(n: int) -> None:
            for i in range(n):
                m[i & 63] = i

        def merge(n: int) -> None:  # the unsafe equivalent: read, add, write
            for i in range(n):
                m[i & 63] = m.get(i & 63, 0) + 1

        def execute(n: int) -> None:
            for _ in range(n):
                multi_key(m)

    else:
        call = m.execute if kind == "actor" else m.transaction

        def get(n: int) -> None:
            for i in range(n):
                m.get(i & 63)

        def store(n: int) -> None:
            for i in range(n):
                m.store(i & 63, i)

        def merge(n: int) -> None:
            for i in range(n):
                m.merge(i & 63, 1, operator.add)

        def execute(n: int) -> None:
            for _ in range(n):
                call(multi_key)

    return {"get": get, "store": store, "merge": merge, "execute": execute}


def best_ns_per_op(fn: Callable[[int], None], n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn(n)
        times.append((time.perf_counter_ns() - start) / n)
    return min(times)


def contended_ns_per_op(m: Any, threads: int, n: int, repeats: int) -> float:
    def work() -> None:
        for i in range(n):
            m.merge(i & 3, 1, operator.add)

    best = float("inf")
    for _ in range(repeats):
        pool = [threading.Thread(target=work) for _ in range(threads)]
        start = time.perf_counter_ns()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        best = min(best, (time.perf_counter_ns() - start) / (threads * n))
    return best


def async_ns_per_op(n: int, repeats: int) -> dict[str, float]:
    """AsyncActorMap awaited from a task on its own loop (no thread hand-off)."""

    async def main() -> dict[str, float]:
        async with AsyncActorMap[int, int]({k: 0 for k in range(KEYS)}) as m:
            out: dict[str, float] = {}
            bodies: tuple[tuple[str, Callable[[int], Awaitable[Any]]], ...] = (
                ("get", lambda i: m.get(i & 63)),
                ("store", lambda i: m.store(i & 63, i)),
                ("merge", lambda i: m.merge(i & 63, 1, operator.add)),
                ("execute", lambda i: m.execute(multi_key)),
            )
            for name, body in bodies:
                times = []
                for _ in range(repeats):
                    start = time.perf_counter_ns()
                    for i in range(n):
                        await body(i)
                    times.append((time.perf_counter_ns() - start) / n)
                out[name] = min(times)
            return out

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (a few seconds)")
    args = parser.parse_args(argv)
    n, repeats, contended_n = (2_000, 3, 2_000) if args.quick else (20_000, 5, 20_000)

    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"safemap {safemap.__version__}, Python {platform.python_version()} "
        f"({'GIL' if gil else 'free-threaded, GIL disabled'}), {platform.machine()}, "
        f"{threading.active_count()} thread(s) at start; n={n}, best of {repeats}"
    )

    initial = {k: 0 for k in range(KEYS)}
    subjects: list[tuple[str, Any, str]] = [("dict", dict(initial), "dict")]
    subjects.append(("LockedMap", safemap.LockedMap(initial), "locked"))
    if ConcurrentMap is not None:
        subjects.append(("ConcurrentMap", ConcurrentMap(initial), "locked"))
    actor: ActorMap[int, int] = ActorMap(initial)
    subjects.append(("ActorMap", actor, "actor"))

    ops = ("get", "store", "merge", "execute")
    results: dict[str, dict[str, float]] = {}
    for name, m, kind in subjects:
        bodies = single_caller_ops(m, kind)
        results[name] = {op: best_ns_per_op(bodies[op], n, repeats) for op in ops}
    results["AsyncActorMap (await)"] = async_ns_per_op(n, repeats)
    actor.close()

    print("\nsingle caller, ns per call (ratio to LockedMap)")
    print(f"{'map':<24}" + "".join(f"{op:>20}" for op in ops))
    base = results["LockedMap"]
    for name, row in results.items():
        cells = "".join(f"{row[op]:>11,.0f} ({row[op] / base[op]:>5.1f}x)" for op in ops)
        print(f"{name:<24}{cells}")

    print("\ncontended merge on 4 keys, wall-clock ns per call over all threads")
    thread_counts = (1, 2, 4)
    print(f"{'map':<24}" + "".join(f"{f'{t} thread(s)':>20}" for t in thread_counts))
    rows: dict[str, list[float]] = {}
    for name, factory in (
        ("LockedMap", safemap.LockedMap),
        *((("ConcurrentMap", ConcurrentMap),) if ConcurrentMap is not None else ()),
        ("ActorMap", ActorMap),
    ):
        m = factory()
        rows[name] = [contended_ns_per_op(m, t, contended_n // t, repeats) for t in thread_counts]
        if isinstance(m, ActorMap):
            m.close()
    for name, times in rows.items():
        cells = "".join(
            f"{v:>11,.0f} ({v / rows['LockedMap'][i]:>5.1f}x)" for i, v in enumerate(times)
        )
        print(f"{name:<24}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
