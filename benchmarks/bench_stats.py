"""What the statistics cost: get and set on the native maps with statistics and without,
side by side in one process.

"With" is the installed ``safemap`` (statistics are always on). "Without" is the same
checkout's C core compiled with ``-DSM_NO_STATS`` (every count, timing and sample compiled
away; nothing else differs), installed into a directory of its own and loaded under another
module name, ``_safemap_nostats._core``; its bases are combined with the same
``ConcurrentMapping`` ABC as the real classes. Both therefore run in the same process, on
the same interpreter, with the same keys, interleaved round by round: machine drift hits
both alike. (A per-map on/off flag would put a branch on every hot path of the shipped
maps to serve a benchmark; a branch-point build would also differ by whatever else changed
since then.)

Rows: ``m[k]`` and ``m.get(k)`` on present keys (hits), ``m.get(k)`` on absent keys
(misses), ``m[k] = v`` on present keys (updates: two value objects alternate, so each store
is a real update), for ``ConcurrentMap`` and ``SyncMap`` (its keys promoted, so reads and
updates take its lock-free paths), on 1,000 int keys. ``--threads N`` runs N threads on the
same map at once (on a free-threaded build: the striped counters must not make the threads
share a cache line). Times are CPU time (the thread's, or the process's with threads), so
that other processes on the machine do not count. A cell is the best (minimum) over rounds
of ns per operation, the least disturbed sample; the ratio is with / without (1.00 = no
cost), and the ratio of the medians is printed beside it.

Run ``python benchmarks/bench_stats.py`` from a checkout (the first run builds the
baseline, about a minute; ``--baseline DIR`` reuses one); ``--quick`` for a short run.
On a free-threaded build: ``python3.14t -X gil=0 benchmarks/bench_stats.py``.
"""

from __future__ import annotations

import argparse
import glob
import importlib.machinery
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import safemap
from safemap import ConcurrentMap, ConcurrentMapping, SyncMap
from safemap.native import _core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NKEYS = 1000


def build_baseline(target: str) -> None:
    """Install this checkout, compiled with -DSM_NO_STATS, into target.

    Built from a fresh copy of the sources: a build in the checkout would reuse the object
    files of its ``build/`` directory (setuptools recompiles a file only when its source is
    newer, whatever the flags), so the baseline could be an earlier build with other flags.
    The interpreter's own CFLAGS (``-DNDEBUG -O3`` ...) are spelled out: recent setuptools
    let an environment CFLAGS replace them, and a baseline built without ``-DNDEBUG`` runs
    its assertions and differs by more than the statistics."""
    base = sysconfig.get_config_var("CFLAGS") or ""
    flags = " ".join(f for f in (base, os.environ.get("CFLAGS", ""), "-DSM_NO_STATS") if f)
    env = dict(os.environ, CFLAGS=flags)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile"]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        shutil.copytree(
            ROOT,
            src,
            ignore=shutil.ignore_patterns(
                "build", "dist", ".venv*", ".git", ".*_cache", ".hypothesis", "*.so", "*.egg-info"
            ),
        )
        subprocess.run([*cmd, "--target", target, src], env=env, check=True)


def load_baseline(target: str) -> ModuleType:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    paths = glob.glob(os.path.join(target, "safemap", "native", "_core*" + suffix))
    if not paths:
        raise SystemExit(f"no _core{suffix} under {target}: build it with --rebuild")
    name = "_safemap_nostats._core"
    loader = importlib.machinery.ExtensionFileLoader(name, paths[0])
    spec = importlib.util.spec_from_file_location(name, paths[0], loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def classes(core: ModuleType) -> dict[str, type]:
    """The two map classes over a core's C bases, built the same way for both variants (so
    that only the C code differs, not how the Python class was made)."""

    class CM(core.ConcurrentMapBase, ConcurrentMapping):  # type: ignore[misc,name-defined,type-arg]
        __slots__ = ()
        transaction = ConcurrentMap.transaction

    class SM(core.SyncMapBase, ConcurrentMapping):  # type: ignore[misc,name-defined,type-arg]
        __slots__ = ()
        transaction = SyncMap.transaction

    return {"ConcurrentMap": CM, "SyncMap": SM}


def make(cls: type) -> Any:
    m = cls({k: k for k in range(NKEYS)})
    list(m)  # SyncMap: promote every key (lock-free reads and in-place updates)
    return m


def loops(keys: list[int], absent: list[int], reps: int) -> dict[str, Callable[[Any], None]]:
    va, vb = object(), object()

    def getitem(m: Any) -> None:
        for _ in range(reps):
            for k in keys:
                m[k]

    def get_hit(m: Any) -> None:
        for _ in range(reps):
            for k in keys:
                m.get(k)

    def get_miss(m: Any) -> None:
        for _ in range(reps):
            for k in absent:
                m.get(k)

    def setitem(m: Any) -> None:
        for r in range(reps):
            v = va if r & 1 else vb
            for k in keys:
                m[k] = v

    return {"m[k]": getitem, "get hit": get_hit, "get miss": get_miss, "m[k] = v": setitem}


def timed(fn: Callable[[Any], None], m: Any, nthreads: int) -> int:
    """CPU time of fn(m) run by nthreads threads at once, in ns: the thread's own CPU time
    for one thread, the process's (every thread's) for several. CPU time, not wall time:
    on a shared machine a thread that other processes keep off the CPU is not charged for
    it."""
    if nthreads == 1:
        t0 = time.thread_time_ns()
        fn(m)
        return time.thread_time_ns() - t0
    barrier = threading.Barrier(nthreads + 1)

    def run() -> None:
        barrier.wait()
        fn(m)

    threads = [threading.Thread(target=run) for _ in range(nthreads)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.process_time_ns()
    for t in threads:
        t.join()
    return time.process_time_ns() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", help="directory of an earlier -DSM_NO_STATS build")
    ap.add_argument(
        "--rebuild", action="store_true", help="rebuild the baseline (after changing C code)"
    )
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--reps", type=int, default=20, help="passes over the keys per sample")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="10 rounds of 5 passes")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.reps = 10, 5

    target = args.baseline or os.path.join(tempfile.gettempdir(), "safemap-bench-nostats")
    if args.rebuild or not glob.glob(os.path.join(target, "safemap", "native", "_core*")):
        print(f"building the baseline (-DSM_NO_STATS) into {target} ...", flush=True)
        shutil.rmtree(target, ignore_errors=True)  # pip --target does not replace files
        build_baseline(target)
    without = classes(load_baseline(target))
    with_ = classes(_core)

    keys = list(range(NKEYS))
    absent = list(range(NKEYS, 2 * NKEYS))
    ops = loops(keys, absent, args.reps)
    maps = {(name, v): make(cls) for v, table in (("with", with_), ("without", without))
            for name, cls in table.items()}  # fmt: skip

    # The baseline really counts nothing; the real maps do.
    for (name, variant), m in maps.items():
        m.get(0)
        hits = m._stats_raw()["hits"]
        assert (hits > 0) == (variant == "with"), (name, variant, hits)

    samples: dict[tuple[str, str, str], list[float]] = {}
    cells = [(name, op, v) for name in with_ for op in ops for v in ("with", "without")]
    nops = args.reps * NKEYS * args.threads
    for r in range(args.rounds):
        order = cells[r % len(cells) :] + cells[: r % len(cells)]  # rotate: no fixed order
        for name, op, variant in order:
            ns = timed(ops[op], maps[(name, variant)], args.threads)
            samples.setdefault((name, op, variant), []).append(ns / nops)

    build = "free-threaded" if sysconfig.get_config_var("Py_GIL_DISABLED") else "GIL"
    print(
        f"safemap {safemap.__version__}, CPython {sys.version.split()[0]} ({build}), "
        f"{args.threads} thread(s), {args.rounds} rounds x {args.reps} passes x {NKEYS} keys"
    )
    print(
        f"{'map':<14} {'operation':<10} {'with ns':>8} {'without ns':>11} {'ratio':>6}"
        f" {'ratio of medians':>17}"
    )
    for name in with_:
        for op in ops:
            a, b = samples[(name, op, "with")], samples[(name, op, "without")]
            best = min(a) / min(b)
            med = statistics.median(a) / statistics.median(b)
            print(f"{name:<14} {op:<10} {min(a):8.1f} {min(b):11.1f} {best:6.3f} {med:17.3f}")


if __name__ == "__main__":
    main()
