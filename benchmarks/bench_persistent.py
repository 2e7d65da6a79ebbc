"""Benchmark of safemap.PersistentMap against dict, immutables.Map and a dict copy.

Prints one markdown report (the tables of docs/persistent.md), every ratio measured in the
same run:

1. Version capture: ``m._current()`` (the O(1) step a trie snapshot is made of) for
   1,000 and 1,000,000 entries, next to ``snapshot()`` (a FrozenMap holding that version)
   and ``dict.copy()``.
2. Lookups, ns/op on 1,000 and 100,000 int keys (quick: 1,000), keys in order and in random
   order: ``m[k]`` and ``m.get(k)`` hits of ``dict``, ``PersistentMap`` and
   ``immutables.Map`` (when installed), interleaved in one process (best of N each), as
   ratios to ``dict`` and ``PersistentMap`` against ``immutables.Map``; timed in windows of
   10,000 lookups, the best of each window summed (``windowed_min``). Then ``m[k] = v`` on
   an existing key (``immutables.Map``: its persistent ``set``), ns/op on N keys.
3. Memory for 1,000,000 int -> int entries (tracemalloc, container only), and the memory
   a kept version costs after 1% of the keys changed, against a full dict copy; reads of
   the changed keys (through the delta nodes the change made) against a map without them.
4. Snapshot per request: one writer thread storing, R reader threads that each take a
   snapshot per request and read 8 keys from it; PersistentMap (version capture) against
   dict + Lock with a copy per request. Requests per second.
5. Writers at 1, 2 and 4 threads (one writer lock): total stores per second; and readers at
   1, 2 and 4 threads (lock-free on free-threaded 3.14+): total reads per second, and the
   ratio to one thread (the read scaling).
7. FrozenMap reads (``m[k]`` in order and random, ``get``, ``in``, iteration): trie-backed
   and dict-backed, against ``dict`` and ``immutables.Map``.
8. Construction from a dict: ``PersistentMap(d)`` (one batch), ``Trie.from_dict``,
   ``dict(d)``, ``immutables.Map(d)``; ns per key.
6. Batches: 10,000 keys of a 100,000-entry FrozenMap changed through one ``mutate()`` batch
   (built in place with a mutation id) against 10,000 repeated ``set()`` calls (each a new
   version); ``immutables.Map`` the same two ways.

Run ``python benchmarks/bench_persistent.py`` (``--quick`` for a run under a minute).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import sysconfig
import threading
import time
import tracemalloc
from collections.abc import Callable
from types import ModuleType
from typing import Any

from safemap import PersistentMap

immutables: ModuleType | None
try:
    import immutables as _immutables
except ImportError:  # optional peer
    immutables = None
else:
    immutables = _immutables


def ns_per_op(fn: Callable[[], Any], ops: int, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / ops)
    return statistics.median(samples)


def interleaved_min(fns: list[Callable[[], Any]], ops: int, repeat: int) -> list[float]:
    """ns/op of each fn, run in turn ``repeat`` times; the best of each. On a shared machine
    the minimum of interleaved runs is the least disturbed measurement of each, and every fn
    sees the same conditions."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter_ns()
            fn()
            best[i] = min(best[i], (time.perf_counter_ns() - t0) / ops)
    return best


def windowed_min(
    objs: list[Any],
    make: Callable[[Any, list[int]], Callable[[], Any]],
    looked: list[int],
    repeat: int,
    window: int = 10_000,
) -> list[float]:
    """ns/op of ``make(obj, keys)`` for each obj over ``looked``, timed in windows of
    ``window`` keys: each window is run for every obj in turn, ``repeat`` times, and the
    best time of each (obj, window) is kept; the result sums the windows. On a loaded
    machine a short window is far more often undisturbed than a whole pass, so the sum of
    the windows' bests is the least disturbed measurement of a whole pass."""
    windows = [looked[i : i + window] for i in range(0, len(looked), window)]
    runs = [[make(o, w) for w in windows] for o in objs]
    best = [[float("inf")] * len(windows) for _ in objs]
    for _ in range(repeat):
        for j in range(len(windows)):
            for i in range(len(objs)):
                t0 = time.perf_counter_ns()
                runs[i][j]()
                best[i][j] = min(best[i][j], time.perf_counter_ns() - t0)
    return [sum(b) / len(looked) for b in best]


def calls(fn: Callable[[], Any], n: int) -> Callable[[], None]:
    """A pass of ``n`` calls of ``fn``."""

    def run() -> None:
        for _ in range(n):
            fn()

    return run


def ratio(x: float, base: float) -> str:
    return f"{x:,.1f} ({x / base:.2f}x)"


def capture_table(repeat: int) -> list[str]:
    rows = [
        "| entries | version capture ns | snapshot() ns | dict.copy() ns |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for n in (1_000, 1_000_000):
        d = {i: i for i in range(n)}
        m: PersistentMap[int, int] = PersistentMap(d)
        loops = 20_000
        cap = ns_per_op(calls(m._current, loops), loops, repeat)
        few = 3 if n > 10_000 else 200  # dict.copy() is O(n)
        snap = ns_per_op(calls(m.snapshot, loops), loops, repeat)
        cp = ns_per_op(calls(d.copy, few), few, 3)
        rows.append(f"| {n:,} | {cap:,.0f} | {snap:,.0f} | {cp:,.0f} |")
    return rows


def lookup_table(sizes: list[int], repeat: int) -> list[str]:
    """``m[k]`` and ``m.get(k)`` of every map, interleaved in one process per cell."""

    def subscript(obj: Any, order: list[int]) -> Callable[[], None]:
        def run() -> None:
            for k in order:
                obj[k]

        return run

    def get(obj: Any, order: list[int]) -> Callable[[], None]:
        def run(get: Callable[[int], Any] = obj.get) -> None:
            for k in order:
                get(k)

        return run

    peer = "immutables.Map" if immutables is not None else "immutables.Map (not installed)"
    rows = [
        f"| keys | order | operation | dict | PersistentMap | {peer} | PersistentMap / immut. |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for n in sizes:
        keys = list(range(n))
        d = dict.fromkeys(keys, 0)
        maps: list[Any] = [d, PersistentMap(d)]
        if immutables is not None:
            maps.append(immutables.Map(d))
        shuffled = keys[:]
        random.Random(1).shuffle(shuffled)
        for name, order in (("in order", keys), ("random", shuffled)):
            # At least 100,000 lookups per run: a small map is looked up several times.
            looked = order * max(1, 100_000 // n)
            for op, make in (("m[k]", subscript), ("m.get(k)", get)):
                best = windowed_min(maps, make, looked, repeat)
                peer_ns = ratio(best[2], best[0]) if len(best) > 2 else "-"
                vs = f"{best[1] / best[2]:.3f}" if len(best) > 2 else "-"
                rows.append(
                    f"| {n:,} | {name} | {op} | {best[0]:,.1f} | {ratio(best[1], best[0])} | "
                    f"{peer_ns} | {vs} |"
                )
    return rows


def single_thread_table(n: int, repeat: int) -> list[str]:
    keys = list(range(n))
    d = dict.fromkeys(keys, 0)
    m: PersistentMap[int, int] = PersistentMap(d)

    def set_all(obj: Any) -> Callable[[], None]:
        flip = [0]

        def run() -> None:
            flip[0] ^= 1  # a different value on every pass: every store really changes
            for k in keys:
                obj[k] = k ^ flip[0]

        return run

    rows = [
        f"| operation ({n:,} keys) | dict | PersistentMap | immutables.Map |",
        "| --- | ---: | ---: | ---: |",
    ]
    s_d = ns_per_op(set_all(d), n, repeat)
    s_m = ns_per_op(set_all(m), n, repeat)
    s_i = None
    if immutables is not None:
        im = immutables.Map(d)

        def iset() -> None:
            cur = im
            for k in keys:
                cur = cur.set(k, k ^ 1)

        s_i = ns_per_op(iset, n, repeat)
    na = "not installed"
    rows.append(
        f"| m[k] = v existing (immutables: m.set) | {s_d:,.1f} | {ratio(s_m, s_d)} | "
        f"{ratio(s_i, s_d) if s_i else na} |"
    )
    return rows


def traced(build: Callable[[], Any]) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    try:
        obj = build()
        gc.collect()
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return obj, size


def memory_table(n: int) -> list[str]:
    keys = list(range(n))  # created before measuring: only the container is counted
    pairs = [(k, k) for k in keys]
    d, dict_size = traced(lambda: dict(pairs))
    m, pm_size = traced(lambda: PersistentMap(d))
    changed = keys[: n // 100]
    new_values = [-k for k in changed]  # made before measuring: only new nodes are counted

    def change_one_percent() -> Any:
        for k, v in zip(changed, new_values, strict=True):
            m[k] = v
        return None

    kept = m._current()  # the version a reader keeps
    _, delta = traced(change_one_percent)
    del kept

    # Reads through the delta nodes the change made (every changed key's node is one),
    # against the same keys of a map built without them, in one run.
    fresh: PersistentMap[int, int] = PersistentMap(d)

    def get_changed(obj: Any) -> Callable[[], None]:
        def run() -> None:
            for k in changed:
                obj[k]

        return run

    through, plain = interleaved_min([get_changed(m), get_changed(fresh)], len(changed), 9)
    mib = 1 << 20
    return [
        f"| measure ({n:,} int -> int) | MiB | ratio |",
        "| --- | ---: | ---: |",
        f"| dict | {dict_size / mib:.1f} | 1.00x |",
        f"| PersistentMap | {pm_size / mib:.1f} | {pm_size / dict_size:.2f}x (to dict) |",
        f"| kept version after changing 1% of the keys (new nodes) | {delta / mib:.1f} | "
        f"{delta / dict_size:.3f}x (to a full dict copy) |",
        "",
        f"m[k] of the {len(changed):,} changed keys (through delta nodes): {through:,.1f} ns, "
        f"the same keys of a map without deltas: {plain:,.1f} ns ({through / plain:.2f}x).",
    ]


class LockedDict:
    """dict + Lock, a copy per snapshot: the snapshot-per-request baseline."""

    def __init__(self, d: dict[int, int]) -> None:
        self.d = dict(d)
        self.lock = threading.Lock()

    def __setitem__(self, k: int, v: int) -> None:
        with self.lock:
            self.d[k] = v

    def snapshot(self) -> dict[int, int]:
        with self.lock:
            return self.d.copy()


def run_threads(targets: list[Callable[[], int]]) -> tuple[int, float]:
    """Run the targets together; return the total count they report and the seconds."""
    results = [0] * len(targets)
    barrier = threading.Barrier(len(targets) + 1)

    def body(i: int) -> None:
        barrier.wait()
        results[i] = targets[i]()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(len(targets))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return sum(results), time.perf_counter() - t0


def snapshot_per_request_table(n: int, requests: int) -> list[str]:
    base = {i: i for i in range(n)}
    rows = [
        f"| readers ({n:,} keys, 1 writer) | PersistentMap req/s | dict+Lock+copy req/s | ratio |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for readers in (1, 2, 4):
        rates = []
        for kind in ("persistent", "copy"):
            target: Any = PersistentMap(base) if kind == "persistent" else LockedDict(base)
            take: Callable[[], Any] = target._current if kind == "persistent" else target.snapshot
            stop = threading.Event()

            def writer(target: Any = target, stop: threading.Event = stop) -> int:
                i = 0
                while not stop.is_set():
                    target[i % n] = i
                    i += 1
                return 0

            def reader(take: Callable[[], Any] = take) -> int:
                for r in range(requests):
                    snap = take()
                    for j in range(8):
                        snap[(r * 8 + j) % n]
                return requests

            w = threading.Thread(target=writer)
            w.start()
            done, secs = run_threads([reader] * readers)
            stop.set()
            w.join()
            rates.append(done / secs)
        rows.append(
            f"| {readers} | {rates[0]:,.0f} | {rates[1]:,.0f} | {rates[0] / rates[1]:.1f}x |"
        )
    return rows


def contention_table(ops: int) -> list[str]:
    """Writers and readers at 1, 2 and 4 threads. Reads also report CPU ns per read (each
    thread's own CPU time): on a busy machine threads may not overlap, and wall-clock
    totals then show the scheduler more than the map; CPU time per read rises when readers
    that do overlap fight over a cache line. ``dict`` reads are the reference."""
    rows = [
        "| threads | stores/s (one writer lock) | ratio to 1 thread | reads/s | ratio to 1 "
        "thread | CPU ns/read | dict reads/s ratio to 1 thread | dict CPU ns/read |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base_w = base_r = base_d = 0.0
    for threads in (1, 2, 4):
        m: PersistentMap[int, int] = PersistentMap({i: i for i in range(1000)})
        d = {i: i for i in range(1000)}
        per = ops // threads
        cpu: list[int] = []

        def store(m: PersistentMap[int, int] = m, per: int = per) -> int:
            for i in range(per):
                m[i % 1000] = i
            return per

        def reader(obj: Any, per: int = per, cpu: list[int] = cpu) -> Callable[[], int]:
            def read() -> int:
                t0 = time.thread_time_ns()
                for i in range(per):
                    obj[i % 1000]
                cpu.append(time.thread_time_ns() - t0)
                return per

            return read

        done, secs = run_threads([store] * threads)
        w = done / secs
        done, secs = run_threads([reader(m)] * threads)
        r, r_cpu = done / secs, sum(cpu) / done
        cpu.clear()
        done, secs = run_threads([reader(d)] * threads)
        dr, d_cpu = done / secs, sum(cpu) / done
        if threads == 1:
            base_w, base_r, base_d = w, r, dr
        rows.append(
            f"| {threads} | {w:,.0f} | {w / base_w:.2f} | {r:,.0f} | {r / base_r:.2f} | "
            f"{r_cpu:.0f} | {dr / base_d:.2f} | {d_cpu:.0f} |"
        )
    return rows


def batch_table(n: int, changed: int, repeat: int) -> list[str]:
    from safemap import FrozenMap

    base = FrozenMap({i: i for i in range(n)})
    base.set(0, 0)  # builds the trie once, outside the measurement
    keys = list(range(0, n, n // changed))[:changed]

    def by_mutate(f: Any = base) -> None:
        b = f.mutate()
        for k in keys:
            b[k] = -k
        b.finish()

    def by_set(f: Any = base) -> None:
        for k in keys:
            f = f.set(k, -k)

    rows = [
        f"| {changed:,} keys of a {n:,}-entry map | mutate() ns/key | repeated set() ns/key "
        "| set / mutate |",
        "| --- | ---: | ---: | ---: |",
    ]
    mu = ns_per_op(by_mutate, changed, repeat)
    se = ns_per_op(by_set, changed, repeat)
    rows.append(f"| FrozenMap | {mu:,.0f} | {se:,.0f} | {se / mu:.1f}x |")
    if immutables is not None:
        im = immutables.Map({i: i for i in range(n)})

        def im_mutate() -> None:
            with im.mutate() as b:
                for k in keys:
                    b[k] = -k
                b.finish()

        def im_set() -> None:
            f = im
            for k in keys:
                f = f.set(k, -k)

        imu = ns_per_op(im_mutate, changed, repeat)
        ise = ns_per_op(im_set, changed, repeat)
        rows.append(f"| immutables.Map | {imu:,.0f} | {ise:,.0f} | {ise / imu:.1f}x |")
    return rows


def frozen_table(n: int, repeat: int) -> list[str]:
    """``FrozenMap`` reads (answered in C from either backing): a trie-backed one (what
    ``PersistentMap.snapshot()`` returns) and a dict-backed one (the dict-based maps'
    snapshots), against ``dict`` and ``immutables.Map``; best of interleaved runs."""
    from safemap import FrozenMap

    d = {i: i for i in range(n)}
    keys = list(range(n))
    shuffled = keys[:]
    random.Random(2).shuffle(shuffled)
    objs: list[tuple[str, Any]] = [
        ("dict", d),
        ("FrozenMap, trie-backed (snapshot())", PersistentMap(d).snapshot()),
        ("FrozenMap, dict-backed", FrozenMap(d)),
    ]
    if immutables is not None:
        objs.append(("immutables.Map", immutables.Map(d)))

    def subscript(obj: Any, order: list[int]) -> Callable[[], None]:
        def run() -> None:
            for k in order:
                obj[k]

        return run

    def get(obj: Any) -> Callable[[], None]:
        def run() -> None:
            g = obj.get
            for k in keys:
                g(k)

        return run

    def contains(obj: Any) -> Callable[[], None]:
        def run() -> None:
            for k in keys:
                k in obj  # noqa: B015

        return run

    def iterate(obj: Any) -> Callable[[], None]:
        def run() -> None:
            for _ in obj:
                pass

        return run

    columns: list[tuple[str, Callable[[Any], Callable[[], None]]]] = [
        ("m[k], keys in order", lambda o: subscript(o, keys)),
        ("m[k], random order", lambda o: subscript(o, shuffled)),
        ("m.get(k)", get),
        ("k in m", contains),
        ("iteration, per key", iterate),
    ]
    results = [interleaved_min([make(o) for _, o in objs], n, repeat) for _, make in columns]
    rows = [
        f"| map ({n:,} int keys) | " + " | ".join(name for name, _ in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for i, (name, _) in enumerate(objs):
        cells = [ratio(col[i], col[0]) for col in results]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def build_table(n: int, repeat: int) -> list[str]:
    """Construction from a dict, ns per key: ``PersistentMap(d)`` (one batch published as
    one version), ``FrozenMap(d).set(...)``'s first trie (``Trie.from_dict``), ``dict(d)``
    and ``immutables.Map(d)``."""
    from safemap.persistent import Trie

    d = {i: i for i in range(n)}
    fns: list[tuple[str, Callable[[], Any]]] = [
        ("dict(d)", lambda: dict(d)),
        ("PersistentMap(d)", lambda: PersistentMap(d)),
        ("Trie.from_dict(d)", lambda: Trie.from_dict(d)),
    ]
    if immutables is not None:
        fns.append(("immutables.Map(d)", lambda: immutables.Map(d)))
    best = interleaved_min([f for _, f in fns], n, repeat)
    rows = [
        f"| construction ({n:,} int keys) | ns per key | ratio to dict |",
        "| --- | ---: | ---: |",
    ]
    for (name, _), ns in zip(fns, best, strict=True):
        rows.append(f"| {name} | {ns:,.1f} | {ns / best[0]:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (under a minute)")
    args = parser.parse_args()
    quick = args.quick
    gil = "GIL" if not sysconfig.get_config_var("Py_GIL_DISABLED") else "free-threaded"
    if gil == "free-threaded" and sys._is_gil_enabled():  # type: ignore[attr-defined]
        gil += " (GIL re-enabled!)"
    peer = (
        f"immutables {getattr(immutables, '__version__', '?')}"
        if immutables
        else "immutables not installed"
    )
    print(
        f"Python {platform.python_version()} ({gil} build), {len(os.sched_getaffinity(0))} "
        f"CPUs, {platform.machine()}; {peer}; mode: {'quick' if quick else 'full'}.\n"
    )
    sections: list[tuple[str, list[str]]] = [
        ("Version capture and snapshot, ns per call", capture_table(5 if quick else 9)),
        (
            "Lookups, ns/op (ratio to dict)",
            lookup_table([1_000] if quick else [1_000, 100_000], 5 if quick else 15),
        ),
        (
            "Stores, ns/op (ratio to dict)",
            single_thread_table(1_000 if quick else 100_000, 5 if quick else 9),
        ),
        (
            "FrozenMap reads, ns/op (ratio to dict)",
            frozen_table(1_000 if quick else 100_000, 5 if quick else 9),
        ),
        ("Construction", build_table(10_000 if quick else 100_000, 3 if quick else 7)),
        ("Memory", memory_table(200_000 if quick else 1_000_000)),
        ("Snapshot per request", snapshot_per_request_table(10_000, 5_000 if quick else 30_000)),
        ("Contention and read scaling", contention_table(100_000 if quick else 400_000)),
        ("Batches", batch_table(100_000, 10_000, 3 if quick else 7)),
    ]
    for title, rows in sections:
        print(f"### {title}\n")
        print("\n".join(rows))
        print()


if __name__ == "__main__":
    main()
