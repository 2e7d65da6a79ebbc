"""Thread scaling of the native maps, side by side with their peers.

Prints, for 1 and 2 threads, the total throughput (Mops/s) of ``dict``, ``ConcurrentMap``,
``SyncMap``, ``cereggii.AtomicDict`` and ``ft_utils.concurrency.ConcurrentDict`` (each peer
where installed) on 1,000 int keys, and the ratio of the 2-thread total to the same map's
1-thread total (the scaling).

Rows:

* call style: "natural" is what users write (``m[k]``, ``m[k] = v`` on the shared map
  object, here a module global); "bound" uses per-thread bound methods (``g = m.get``,
  ``s = m.__setitem__`` made in each thread), which keeps the map object's own reference
  count out of the loop;
* key pattern: "uniform" draws keys uniformly; "zipf" draws them with Zipf weights
  (``1 / rank**1.2``), so both threads hit a few hot keys at once;
* reads: 100% reads, or 90% reads with every tenth operation a store to an existing key
  (the 90% loop is unrolled by ten, so it has less loop overhead per call than the 100%
  loop: compare maps within a row, not rows with each other).

Probe keys are int objects equal to, but distinct from, the stored ones (as keys computed at
run time are): a lookup cannot stop at an identity test.

Method: every process runs every implementation once per round, in a rotating order, so
drift in machine load hits all alike; a cell is the median over processes of the median of
the rounds. Two-thread results vary from run to run on a loaded machine: compare the maps
within one run, and repeat.

Run ``python benchmarks/bench_scaling.py`` (on a free-threaded build:
``python3.14t -X gil=0 benchmarks/bench_scaling.py``); ``--quick`` finishes in under a
minute; ``--processes``/``--rounds``/``--ops`` override the defaults. ``--baseline DIR``
adds a column "ConcurrentMap (baseline)": the native core of another build of safemap for
the same interpreter, installed in DIR (``pip install --no-deps --target DIR <checkout>``),
so a change is measured side by side with the code before it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any

NKEYS = 1000
THREADS = (1, 2)
ROWS = [  # (style, pattern, read percentage)
    ("natural", "uniform", 100),
    ("natural", "uniform", 90),
    ("natural", "zipf", 100),
    ("bound", "uniform", 100),
    ("bound", "uniform", 90),
    ("bound", "zipf", 100),
]


BASELINE_ENV = "SAFEMAP_BENCH_BASELINE"


@cache
def baseline_map() -> Callable[[], Any] | None:
    """ConcurrentMap's native core from the build of safemap installed in the directory
    named by $SAFEMAP_BENCH_BASELINE (set by ``--baseline``), or None.  The extension is
    loaded under another module name, so both builds live in one process."""
    root = os.environ.get(BASELINE_ENV)
    if not root:
        return None
    import importlib.machinery
    import importlib.util

    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(root, "safemap", "native", "_core" + suffix)
        if os.path.exists(path):
            break
    else:
        raise SystemExit(f"no safemap/native/_core extension for this Python under {root}")
    name = "safemap_baseline._core"  # the last part names the init function
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None:
        raise SystemExit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    cls: Callable[[], Any] = type("ConcurrentMap", (mod.ConcurrentMapBase,), {"__slots__": ()})
    return cls


def impls() -> dict[str, Callable[[], Any]]:
    from safemap.native import ConcurrentMap, SyncMap

    out: dict[str, Callable[[], Any]] = {
        "dict": dict,
        "ConcurrentMap": ConcurrentMap,
    }
    baseline = baseline_map()
    if baseline is not None:
        out["ConcurrentMap (baseline)"] = baseline
    out["SyncMap"] = SyncMap
    try:
        import cereggii

        out["cereggii"] = cereggii.AtomicDict
    except ImportError:
        pass
    try:
        from ft_utils.concurrency import ConcurrentDict

        out["ft_utils"] = ConcurrentDict
    except ImportError:
        pass
    return out


def filled(name: str, keys: list[int]) -> Any:
    m = impls()[name]()
    for k in keys:
        m[k] = k
    if name == "SyncMap":
        for _ in range(3):  # steady state: keys promoted to the read map (Go's "prime")
            for k in keys:
                m.get(k)
    return m


def probe_keys(pattern: str, n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    if pattern == "uniform":
        ranks = [rng.randrange(NKEYS) for _ in range(n)]
    else:
        weights = [1.0 / (r + 1) ** 1.2 for r in range(NKEYS)]
        ranks = rng.choices(range(NKEYS), weights=weights, k=n)
    # equal to the stored keys, never the same objects (int(str(...)) builds a new int)
    return [int(str(NKEYS + r)) for r in ranks]


# One worker per (style, reads): a tight loop whose only work is the map calls.
# 90% reads run blocks of ten operations: nine reads, then a store of the tenth key.


# The map under test, a module global as in most programs ("natural" loads it per call).
M: Any = None


def _natural_100(m: Any, ks: list[int]) -> None:
    for k in ks:
        M[k]


def _natural_90(m: Any, blocks: list[tuple[int, ...]]) -> None:
    for a, b, c, d, e, f, g, h, i, j in blocks:
        M[a]
        M[b]
        M[c]
        M[d]
        M[e]
        M[f]
        M[g]
        M[h]
        M[i]
        M[j] = j


def _bound_100(m: Any, ks: list[int]) -> None:
    get = m.get
    for k in ks:
        get(k)


def _bound_90(m: Any, blocks: list[tuple[int, ...]]) -> None:
    get, put = m.get, m.__setitem__
    for a, b, c, d, e, f, g, h, i, j in blocks:
        get(a)
        get(b)
        get(c)
        get(d)
        get(e)
        get(f)
        get(g)
        get(h)
        get(i)
        put(j, j)


WORKERS: dict[tuple[str, int], Callable[[Any, Any], None]] = {
    ("natural", 100): _natural_100,
    ("natural", 90): _natural_90,
    ("bound", 100): _bound_100,
    ("bound", 90): _bound_90,
}


def run_threads(m: Any, work: Callable[[Any, Any], None], inputs: list[Any]) -> float:
    """Seconds from the moment every thread is ready until the last one finishes."""
    barrier = threading.Barrier(len(inputs) + 1)
    ends: list[float] = []

    global M
    M = m

    def body(arg: Any) -> None:
        barrier.wait()
        work(m, arg)
        ends.append(time.perf_counter())

    threads = [threading.Thread(target=body, args=(arg,)) for arg in inputs]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return max(ends) - start


def measure(ops: int, rounds: int, seed: int) -> dict[str, float]:
    """One process: {"style|pattern|reads|name|threads": Mops/s (median of rounds)}."""
    names = list(impls())
    keys = [NKEYS + i for i in range(NKEYS)]
    maps = {name: filled(name, keys) for name in names}
    samples: dict[str, list[float]] = {}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for style, pattern, reads in ROWS:
            work = WORKERS[(style, reads)]
            for nthreads in THREADS:
                inputs: list[Any] = []
                for t in range(nthreads):
                    ks = probe_keys(pattern, ops, seed * 1000 + r * 10 + t)
                    if reads == 90:
                        inputs.append([tuple(ks[i : i + 10]) for i in range(0, len(ks), 10)])
                    else:
                        inputs.append(ks)
                for name in order:
                    secs = run_threads(maps[name], work, inputs)
                    cell = f"{style}|{pattern}|{reads}|{name}|{nthreads}"
                    samples.setdefault(cell, []).append(nthreads * ops / secs / 1e6)
    return {cell: statistics.median(v) for cell, v in samples.items()}


def _xoptions() -> list[str]:
    out: list[str] = []
    for key, value in sys._xoptions.items():
        out += ["-X", key if value is True else f"{key}={value}"]
    return out


def build_info() -> str:
    ft = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    gil = "GIL build"
    if ft:
        enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
        gil = "free-threaded build, GIL " + ("enabled" if enabled else "disabled")
    cpus, machine = os.cpu_count(), platform.machine()
    return f"Python {platform.python_version()} ({gil}), {cpus} CPUs, {machine}"


def report(cells: dict[str, float], names: list[str]) -> str:
    lines = [
        "2-thread total Mops/s (ratio to the same map's 1-thread total)",
        "",
        "| 2 threads | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for style, pattern, reads in ROWS:
        row = [f"{style}, {pattern}, {reads}% reads"]
        for name in names:
            one = cells.get(f"{style}|{pattern}|{reads}|{name}|1")
            two = cells.get(f"{style}|{pattern}|{reads}|{name}|2")
            row.append("-" if one is None or two is None else f"{two:.1f} ({two / one:.2f}x)")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "1-thread Mops/s", "", "| 1 thread | " + " | ".join(names) + " |"]
    lines.append("| --- |" + " ---: |" * len(names))
    for style, pattern, reads in ROWS:
        row = [f"{style}, {pattern}, {reads}% reads"]
        for name in names:
            one = cells.get(f"{style}|{pattern}|{reads}|{name}|1")
            row.append("-" if one is None else f"{one:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a run under a minute")
    parser.add_argument("--processes", type=int, help="processes (default 3, quick 1)")
    parser.add_argument("--rounds", type=int, help="rounds per process (default 3)")
    parser.add_argument("--ops", type=int, help="operations per thread (default 300000)")
    parser.add_argument(
        "--baseline", metavar="DIR", help="add ConcurrentMap from the build installed in DIR"
    )
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline:
        os.environ[BASELINE_ENV] = os.path.abspath(args.baseline)  # inherited by workers
    processes = args.processes or (1 if args.quick else 3)
    rounds = args.rounds or 3
    ops = args.ops or 300_000
    if args.worker is not None:
        print(json.dumps(measure(ops, rounds, args.worker)))
        return
    runs: list[dict[str, float]] = []
    for p in range(processes):
        cmd = [sys.executable, *_xoptions(), __file__, "--worker", str(p)]
        cmd += ["--rounds", str(rounds), "--ops", str(ops)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out))
    cells = {cell: statistics.median(run[cell] for run in runs) for cell in runs[0]}
    names = [n for n in impls() if any(c.split("|")[3] == n for c in cells)]
    print(build_info())
    print(
        f"{NKEYS} int keys; {ops:,} operations per thread; median over {processes} "
        f"process(es) of the median of {rounds} round(s)."
    )
    print()
    print(report(cells, names))


if __name__ == "__main__":
    main()
