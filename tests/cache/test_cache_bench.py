"""benchmarks/bench_cache.py's hit-ratio tables (docs/cache.md, "Measured"): the trace
whose working set keeps moving, and the long-trace table with its gap column. Small and
seeded, so every count is exact."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cache.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_cache", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_cache"] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules["bench_cache"]
    return mod


def test_short_phase_trace_replaces_its_working_set_every_5_x_size(bench: ModuleType) -> None:
    """Phases of 5 x size requests over size // 2 keys never used before: an LRU of
    ``size`` misses exactly each key's first request."""
    size, n = 40, 1000
    trace = bench.short_phase_trace(n, size, random.Random(3))
    assert len(trace) == n
    phase = 5 * size
    for p in range(0, n, phase):
        keys = set(trace[p : p + phase])
        assert keys <= set(range(p // phase * size // 2, (p // phase + 1) * size // 2))
    lru = bench.Cache(size, policy="lru")
    assert bench.ratio_of(lru.get, lru.store, trace) == (n - len(set(trace))) / n


def test_long_table_gives_the_gap_to_the_best_static_cache(bench: ModuleType) -> None:
    """The 4,000,000-request table (here 3,000 requests): no OPT or cachetools column,
    and the last column is best static minus Cache tinylfu, per row."""
    names, rows = bench.hit_ratio_rows(3000, 1, ("Zipf 1.0",), long=True)
    assert "OPT (Belady)" not in names and "cachetools LRU" not in names
    assert names[0] == "Cache tinylfu" and names[-1] == "best static - Cache tinylfu"
    static = names.index("best static")
    assert len(rows) == len(bench.SIZES)
    for row in rows:
        cells = [float(x) for x in row[2:]]
        assert len(cells) == len(names)
        assert abs(cells[-1] - (cells[static] - cells[0])) <= 0.11, row
    names, rows = bench.hit_ratio_rows(3000, 1, ("working set replaced every 5 x size",))
    assert "OPT (Belady)" in names and len(rows) == len(bench.SIZES)


def test_scans_are_not_taken_for_a_popularity_change_with_half_size_ticks(
    bench: ModuleType,
) -> None:
    """The benchmark's scan trace (a fifth of the requests in runs of 1,000 new keys) at
    5%: ticks of maxsize / 2 (2,500 requests) are much filled by a scan, and with one
    confirming tick two scans close together were taken for a popularity change three
    times, emptying the sketch: 585,720 hits. With two confirming ticks none is:
    596,876, as with the previous version's ticks of maxsize."""
    trace = bench.scan_trace(1_000_000, bench.NKEYS, random.Random(1))
    c = bench.Cache(5000)
    assert bench.ratio_of(c.get, c.store, trace) * len(trace) >= 596_876


def test_speed_hit_pass_hits_after_miss_passes(bench: ModuleType) -> None:
    """The speed table's hit pass gets only keys its instance holds, however many miss
    passes ran before it: the miss pass stores into a second instance. (With one instance
    an LRU's miss pass evicted every key of the hit pass, which then timed misses.)"""
    gets: list[object] = []

    class Recorded(bench.Cache):  # type: ignore[name-defined,misc]
        def get(self, key: object, default: object = None) -> object:
            v = super().get(key, default)
            gets.append(v)
            return v

    keys = list(range(20))
    hit, miss = bench.hot_cold_case(
        lambda: Recorded(len(keys), policy="lru"), "get", "store", keys, iter(range(100, 10**6))
    )
    for _ in range(3):
        miss()
        gets.clear()
        hit()
        assert gets == keys  # each hit returned the key's value (stored as itself)
    hit, _ = bench.hot_cold_case(
        lambda: Recorded(len(keys)), "get", "store", keys, iter(range(100, 10**6)), None, [3, 3, 1]
    )
    gets.clear()
    hit()
    assert gets == [3, 3, 1]  # the given keys, in order (the speed table's Zipf column)
    names = set(bench.speed_cases(10, [0] * 10))
    assert {"ConcurrentMap", "Cache", "Cache lru", "functools.lru_cache"} <= names


def test_scaling_table_gives_both_ways_of_sharing_the_passes(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """Section (c): per map, 1 thread, 2 threads each making its passes, and 2 threads
    taking passes from a shared pool (figures are timings: only the shape is checked)."""
    bench.scaling(2, 50, rounds=1)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert "fixed split" in lines[0] and "shared pool" in lines[0]
    rows = {ln.split("|")[1].strip(): ln.split("|")[2:-1] for ln in lines[2:]}
    assert set(rows) == {"ConcurrentMap", "Cache", "Cache lru"}
    assert all(len(cells) == 4 and "->" in cells[3] for cells in rows.values())
