"""PersistentMap._collect_stats(): exact counters on every build, also under threads.

Point reads count into per-thread stripes (free-threaded builds) and writes under the
writer lock; these tests check exact totals with several threads, and each kind of write.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ThreadRunner

from safemap import DELETE, PersistentMap
from safemap.protocol.stats import MapStats

WAIT = 30.0  # seconds: reached only on a deadlock


def test_a_new_map_has_zero_counters() -> None:
    s = PersistentMap()._collect_stats()
    assert isinstance(s, MapStats) and s.kind == "PersistentMap"
    assert (s.hits, s.misses, s.inserts, s.updates, s.deletes, s.size) == (0, 0, 0, 0, 0, 0)
    assert (s.iterations, s.writes_during_iteration, s.lock_contentions) == (0, 0, 0)
    assert s.inexact == frozenset()


def test_each_operation_counts_exactly_once() -> None:
    m: PersistentMap[Any, int] = PersistentMap()
    m["a"] = 1  # insert
    m["a"] = 2  # update (in place)
    snap = m.snapshot()
    m["a"] = 3  # update (path copy: the snapshot holds the version)
    m.store("b", 1)  # insert
    assert m.load_or_store("b", 9) == (1, True)  # no write
    assert m.load_or_store("c", 1) == (1, False)  # insert
    m.compute("c", lambda k, old: old + 1)  # update
    m.compute("d", lambda k, old: 1)  # insert
    m.compute("d", lambda k, old: DELETE)  # delete
    m.compute("zz", lambda k, old: DELETE)  # nothing
    del m["c"]  # delete
    assert m.pop("nope", None) is None  # nothing
    m.transaction(lambda v: v.update({"x": 1, "a": 5}) or v.pop("b"))  # 1 insert, 1 update, 1 del
    assert m["a"] == 5 and "b" not in m and m.get("b") is None  # 1 hit, 2 misses
    assert m.load("x") == (1, True) and m.load("q") == (None, False)  # 1 hit, 1 miss
    m.clear()  # 2 deletes (a, x)
    s = m._collect_stats()
    assert (s.inserts, s.updates, s.deletes) == (5, 4, 5)
    assert (s.hits, s.misses) == (2, 3)
    assert s.size == 0 and snap == {"a": 2}


def test_lock_acquisitions_count_every_write_call() -> None:
    m: PersistentMap[int, int] = PersistentMap()
    for i in range(10):
        m[i] = i
    m.compute(0, lambda k, old: old)
    m.transaction(lambda v: None)
    s = m._collect_stats()
    assert s.lock_acquisitions == 12 and s.lock_contentions == 0
    assert s.lock_wait_seconds == 0.0


def test_iterations_and_writes_during_iteration() -> None:
    m: PersistentMap[int, int] = PersistentMap({i: i for i in range(5)})
    base = m._collect_stats()
    it = iter(m)
    next(it)
    m[10] = 10  # during the iteration
    m[0] = 1
    del m[1]
    assert len(list(it)) == 4  # the rest of the version it started from
    m[11] = 11  # after it ended
    list(m.items())  # a second iteration, run to its end
    m[12] = 12
    it2 = iter(m.values())
    next(it2)
    del it2  # released unfinished: no longer in progress
    m[13] = 13
    s = m._collect_stats().minus(base)
    assert s.iterations == 3
    assert s.writes_during_iteration == 3


def test_exact_totals_under_threads(run_threads: ThreadRunner) -> None:
    threads, rounds = 4, 3_000
    m: PersistentMap[Any, int] = PersistentMap({("k", i): i for i in range(100)})
    base = m._collect_stats()

    def worker(t: int) -> Any:
        def run() -> None:
            for i in range(rounds):
                assert m[("k", i % 100)] == i % 100  # hit (tuple key: the held-version path)
                assert m.get(i % 100) is None  # miss (int key: the lock-free path)
                assert (t, i) not in m  # miss
                m[(t, i)] = i  # insert
                m[(t, i)] = i + 1  # update
                if i % 2:
                    del m[(t, i)]  # delete

        return run

    run_threads([worker(t) for t in range(threads)], timeout=WAIT)
    s = m._collect_stats().minus(base)
    n = threads * rounds
    assert (s.hits, s.misses) == (n, 2 * n)
    assert (s.inserts, s.updates, s.deletes) == (n, n, n // 2)
    assert s.size == 100 + n - n // 2
    assert s.lock_acquisitions == 2 * n + n // 2
    assert 0 <= s.lock_contentions <= s.lock_acquisitions


@pytest.mark.parametrize("kind", ["str", "int"])
def test_hits_are_exact_with_many_threads_on_the_lock_free_path(
    kind: str, run_threads: ThreadRunner
) -> None:
    # More threads than stripes share stripes: still exact.
    threads, rounds = 20, 500
    keys: list[Any] = [f"k{i}" for i in range(50)] if kind == "str" else list(range(50))
    m: PersistentMap[Any, int] = PersistentMap(dict.fromkeys(keys, 1))

    def run() -> None:
        for i in range(rounds):
            m[keys[i % 50]]

    run_threads([run] * threads)
    s = m._collect_stats()
    assert (s.hits, s.misses) == (threads * rounds, 0)
