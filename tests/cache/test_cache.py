"""safemap.Cache: the bound as readers see it, eviction, on_evict, ttl, statistics and
single-flight loading, under real threads (see docs/cache.md)."""

from __future__ import annotations

import sys
import threading
import weakref
from collections import Counter
from typing import Any

import pytest

import safemap
from safemap.protocol.expiry import ManualClock

POLICIES = ["tinylfu", "lru"]


# ------------------------------------------------------------ whole-cache reads


def test_snapshots_and_iterations_never_see_half_a_transaction(
    run_threads: Any, fast_switch: None
) -> None:
    """Movers shift one unit between accounts per transaction (several dict writes at
    commit); observers' snapshots and iterations must always see the total. On
    free-threaded builds a copy taken between two commit writes broke it."""
    accounts, total = 6, 6000
    m: safemap.Cache[int, int] = safemap.Cache({a: 1000 for a in range(accounts)}, maxsize=64)
    movers, observers, moves = 2, 2, 20_000
    done = threading.Event()
    torn: list[object] = []

    def work(i: int) -> None:
        if i < movers:
            for n in range(moves):

                def move(view: Any, n: int = n + i) -> None:
                    view[n % accounts] -= 1
                    view[(n + 1) % accounts] += 1

                m.transaction(move)
            return
        while not done.is_set():
            snap = m.snapshot()
            if sum(snap.values()) != total:
                torn.append(dict(snap))
            if sum(v for _, v in m.items()) != total:
                torn.append("iteration")

    def run(i: int) -> None:
        try:
            work(i)
        finally:
            if i < movers:  # observers stop once every mover is done
                finished.append(i)
                if len(finished) == movers:
                    done.set()

    finished: list[int] = []
    run_threads(run, movers + observers, timeout=120)
    assert torn == []
    assert sum(m.snapshot().values()) == total


# ------------------------------------------------------------------------ the bound


@pytest.mark.parametrize("policy", POLICIES)
def test_maxsize_never_exceeded_as_seen_by_readers(
    policy: str, run_threads: Any, fast_switch: None
) -> None:
    maxsize, writers, readers = 64, 8, 3
    m: safemap.Cache[int, int] = safemap.Cache(maxsize, policy=policy)
    stop = threading.Event()
    seen: list[int] = []

    def writer(i: int) -> None:
        for n in range(3000):
            m[i * 100_000 + n % 500] = n
            if n % 7 == 0:
                m.get(i * 100_000 + n % 11)

    def reader() -> None:
        worst = 0
        while not stop.is_set():
            worst = max(worst, len(m), sum(1 for _ in m), len(m.snapshot()))
        seen.append(worst)

    rs = [threading.Thread(target=reader, daemon=True) for _ in range(readers)]
    for t in rs:
        t.start()
    try:
        run_threads(writer, writers, timeout=120)
    finally:
        stop.set()
        for t in rs:
            t.join(30)
    assert len(seen) == readers
    assert max(seen) <= maxsize
    assert len(m) == maxsize  # full at the end: every writer wrote more than the bound
    st = m.stats()
    assert st.inserts - st.deletes == len(m)
    assert st.evictions_size == st.deletes  # nothing else removed entries


def test_weight_bound_never_exceeded(run_threads: Any, fast_switch: None) -> None:
    m: safemap.Cache[int, str] = safemap.Cache(maxsize=100, weigher=lambda k, v: len(v))
    stop = threading.Event()
    worst: list[int] = []

    def reader() -> None:
        w = 0
        while not stop.is_set():
            w = max(w, sum(len(v) for v in m.snapshot().values()))
        worst.append(w)

    r = threading.Thread(target=reader, daemon=True)
    r.start()
    try:
        run_threads(lambda i: [m.store(i * 1000 + n, "x" * (n % 17)) for n in range(2000)], 8)
    finally:
        stop.set()
        r.join(30)
    assert worst and worst[0] <= 100
    assert sum(len(v) for v in m.values()) <= 100


def test_entry_heavier_than_the_bound_is_not_kept() -> None:
    evicted: list[tuple[Any, Any, str]] = []
    m = safemap.Cache(maxsize=10, weigher=lambda k, v: v, on_evict=lambda *a: evicted.append(a))
    m["a"] = 4
    m["big"] = 11
    assert "big" not in m and m["a"] == 4
    assert evicted == [("big", 11, "size")]
    m["a"] = 50  # an update too heavy: the key ends absent
    assert "a" not in m and len(m) == 0
    assert evicted[-1] == ("a", 50, "size")


def test_lru_evicts_least_recently_used() -> None:
    m: safemap.Cache[str, int] = safemap.Cache(3, policy="lru")
    m["a"], m["b"], m["c"] = 1, 2, 3
    assert m["a"] == 1  # a is now the most recent
    m["d"] = 4
    assert sorted(m) == ["a", "c", "d"]


def test_tinylfu_keeps_frequent_keys_through_a_scan() -> None:
    m: safemap.Cache[int, int] = safemap.Cache(100)
    hot = range(50)
    for _ in range(20):
        for k in hot:
            m[k] = k
            m.get(k)
    for k in range(1000, 1300):  # a one-time scan, three times the cache
        m[k] = k
    assert all(k in m for k in hot)
    lru: safemap.Cache[int, int] = safemap.Cache(100, policy="lru")
    for _ in range(20):
        for k in hot:
            lru[k] = k
            lru.get(k)
    for k in range(1000, 1300):
        lru[k] = k
    assert not any(k in lru for k in hot)  # what W-TinyLFU is for


# ------------------------------------------------------------------------- on_evict


def test_on_evict_once_per_evicted_entry_with_no_lock_held(
    run_threads: Any, fast_switch: None
) -> None:
    calls: list[tuple[Any, Any, str]] = []
    lock = threading.Lock()
    m: safemap.Cache[Any, Any] = safemap.Cache(32)

    def on_evict(key: Any, value: Any, cause: str) -> None:
        # No lock of the cache is held: writes work (no RecursiveUpdateError, no
        # deadlock), and so do reads. (A write that inserts into the full cache evicts
        # again: only the first few evictions write back, or this would never end.)
        m.get(key)
        m.pop(("never", key), None)
        with lock:
            calls.append((key, value, cause))
            write_back = len(calls) <= 20
        if write_back:
            m[("evicted", key)] = value

    m2: safemap.Cache[Any, Any] = safemap.Cache(32, on_evict=on_evict)
    m = m2

    def work(i: int) -> None:
        for n in range(500):
            m[(i, n)] = n

    run_threads(work, 8, timeout=120)
    written = {(i, n) for i in range(8) for n in range(500)}
    evicted = Counter(k for k, _, cause in calls)
    assert {cause for _, _, cause in calls} == {"size"}
    assert all(c == 1 for c in evicted.values())  # at most once per entry
    keys = {k for k in evicted if k in written}
    # every written key is either still present or was evicted exactly once
    present = {k for k in m if k in written}
    assert keys | present == written
    assert not keys & present
    assert all(v == k[1] for k, v, _ in calls if k in written)
    assert any(k[0] == "evicted" for k in set(evicted) | set(m))  # the write-backs landed
    assert m.stats().evictions_size == len(calls)


def test_on_evict_error_is_reported_and_the_write_lands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))

    def boom(*_: Any) -> None:
        raise ValueError("boom")

    m = safemap.Cache(1, on_evict=boom)
    m["a"] = 1
    m["b"] = 2
    assert dict(m) == {"b": 2}
    assert len(seen) == 1 and isinstance(seen[0], ValueError)


def test_removed_values_are_released_once_the_call_returns() -> None:
    class V:
        pass

    m: safemap.Cache[int, Any] = safemap.Cache(2, policy="lru")
    v = V()
    ref = weakref.ref(v)
    m[0] = v
    del v
    for _ in range(100):  # recorded reads hold the entry in the read ring
        m.get(0)
    m[1], m[2], m[3] = 1, 2, 3  # 0 is evicted
    assert 0 not in m
    assert ref() is None  # no gc needed: the read ring's references went with it
    w = V()
    wref = weakref.ref(w)
    m[5] = w
    for _ in range(5):
        m.get(5)
    m.delete(5)
    del w
    assert wref() is None


# ------------------------------------------------------------------------------ ttl


def test_ttl_entries_expire_on_every_read_path() -> None:
    clock = ManualClock()
    evicted: list[tuple[Any, Any, str]] = []
    m: safemap.Cache[str, int] = safemap.Cache(
        10, ttl=5, timer=clock, on_evict=lambda *a: evicted.append(a)
    )
    m["a"] = 1
    clock.advance(3)
    m["b"] = 2
    clock.advance(2)  # a's deadline
    assert "a" not in m and m.get("a") is None and m.load("a") == (None, False)
    assert dict(m) == {"b": 2} and len(m) == 1 and dict(m.snapshot()) == {"b": 2}
    assert evicted and evicted[0] == ("a", 1, "expired")
    clock.advance(10)
    assert len(m) == 0 and list(m) == []
    st = m.stats()
    assert st.evictions_expired == 2 and st.evictions_size == 0


def test_ttl_compute_sees_an_expired_entry_as_missing() -> None:
    clock = ManualClock()
    m: safemap.Cache[str, int] = safemap.Cache(ttl=1, timer=clock)
    m["a"] = 1
    clock.advance(1)
    seen: list[Any] = []
    m.compute("a", lambda k, old: seen.append(old) or 2)
    assert seen == [safemap.MISSING] and m["a"] == 2


def test_ttl_update_restarts_the_entry_life() -> None:
    clock = ManualClock()
    m: safemap.Cache[str, int] = safemap.Cache(ttl=2, timer=clock)
    m["a"] = 1
    clock.advance(1.5)
    m["a"] = 2
    clock.advance(1.5)
    assert m["a"] == 2


# ------------------------------------------------------------------------ statistics


def test_exact_statistics_under_threads(run_threads: Any, fast_switch: None) -> None:
    m: safemap.Cache[Any, int] = safemap.Cache(10_000)
    for k in range(100):
        m[k] = k
    n = 2000

    def work(i: int) -> None:
        for j in range(n):
            m.get(j % 100)  # hit
            m.get(("absent", j))  # miss
            m[(i, j % 50)] = j  # 50 inserts per thread, then updates

    run_threads(work, 8, timeout=120)
    st = m.stats()
    assert st.hits == 8 * n and st.misses == 8 * n
    assert st.inserts == 100 + 8 * 50
    assert st.updates == 8 * (n - 50)
    assert st.size == len(m) == 100 + 8 * 50
    assert st.hit_ratio == 0.5


# --------------------------------------------------------------------- single flight


def test_stampede_on_one_missing_key_loads_once(run_threads: Any) -> None:
    m: safemap.Cache[str, object] = safemap.Cache(100)
    calls = Counter[str]()
    release = threading.Event()
    result = object()

    def loader(key: str) -> object:
        calls[key] += 1
        release.wait(30)
        return result

    threads = 250

    def work(i: int) -> object:
        if i == 0:
            # let the others pile up behind the first load (bounded; never a timing claim)
            threading.Timer(0.2, release.set).start()
        return m.get_or_compute("k", loader)

    out = run_threads(work, threads, timeout=120)
    assert calls == Counter({"k": 1})
    assert all(r is result for r in out)
    st = m.stats()
    assert st.loads == 1 and st.load_failures == 0


def test_failed_load_is_counted_and_not_cached() -> None:
    m: safemap.Cache[str, int] = safemap.Cache(10)

    def bad(_: str) -> int:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        m.get_or_compute("k", bad)
    assert "k" not in m
    assert m.get_or_compute("k", lambda _: 3) == 3
    st = m.stats()
    assert (st.loads, st.load_failures) == (1, 1)


# ------------------------------------------------------------------------ re-entry


def test_weigher_and_compute_cannot_write_to_the_cache() -> None:
    m: safemap.Cache[str, int] = safemap.Cache(10)
    with pytest.raises(safemap.RecursiveUpdateError):
        m.compute("a", lambda k, old: m.store("b", 1))
    assert dict(m) == {}
    # reads from a callback are fine (a read that would drain skips it: the lock is held)
    m["x"] = 1
    assert m.compute("a", lambda k, old: sum(m.get("x", 0) for _ in range(100))) == 100


def test_options_and_construction() -> None:
    m = safemap.Cache({"a": 1}, maxsize=5, ttl=3, policy="lru")
    assert (m.maxsize, m.ttl, m.policy) == (5, 3, "lru")
    assert safemap.Cache(7).maxsize == 7
    assert safemap.Cache().maxsize is None
    c = m.copy()
    assert type(c) is safemap.Cache and c.maxsize == 5 and dict(c) == {"a": 1}
    with pytest.raises(ValueError):
        safemap.Cache(policy="fifo")
    with pytest.raises(ValueError):
        safemap.Cache(-1)
    with pytest.raises(TypeError):
        safemap.Cache(maxsize=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        safemap.Cache(1, maxsize=2)


@pytest.mark.parametrize("policy", POLICIES)
def test_no_reference_kept_to_removed_values_under_concurrent_reads(
    policy: str, fast_switch: None
) -> None:
    """Readers record every hit in the read rings; a delete or an eviction must still leave
    the cache holding nothing of what it removed (free-threaded builds: a reader that
    records an entry just after its removal takes the record back)."""

    class V:
        pass

    m: safemap.Cache[int, Any] = safemap.Cache(64, policy=policy)
    refs = []
    for k in range(64):
        v = V()
        refs.append(weakref.ref(v))
        m[k] = v
    del v
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for k in range(64):
                m.get(k)

    readers = [threading.Thread(target=reader, daemon=True) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for k in range(0, 64, 2):
            m.delete(k)  # explicit removal
        for k in range(1000, 1032):
            m[k] = k  # evictions
    finally:
        stop.set()
        for t in readers:
            t.join(30)
    assert not any(t.is_alive() for t in readers)
    gone = [k for k in range(64) if k not in m]
    assert gone  # the deletes at least
    assert all(refs[k]() is None for k in gone)
    assert all(refs[k]() is not None for k in range(64) if k in m)


@pytest.mark.usefixtures("fast_switch")
def test_delete_racing_readers_leaves_no_reference() -> None:
    """The last write is the delete: nothing drains the read rings after it, so a record a
    reader made of the entry just after its removal must be taken back by that reader.
    (Fast thread switches: more interleavings, and each of the 400 rounds' handshakes no
    longer waits out switch intervals of 5 ms.)"""

    class V:
        pass

    m: safemap.Cache[int, Any] = safemap.Cache(16)
    readers = 2
    pause = threading.Barrier(readers + 1, timeout=30)
    resume = threading.Barrier(readers + 1, timeout=30)
    state = {"pausing": False, "done": False}

    def reader() -> None:
        while not state["done"]:
            if state["pausing"]:
                pause.wait()  # out of every cache call
                resume.wait()
                continue
            m.get(0)

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(readers)]
    for t in threads:
        t.start()
    kept = []
    try:
        for attempt in range(400):
            v = V()
            ref = weakref.ref(v)
            m[0] = v
            del v
            for _ in range(50):  # let the readers hit it a while
                m.get(1)
            m.delete(0)
            state["pausing"] = True
            pause.wait()
            state["pausing"] = False
            if ref() is not None:
                kept.append(attempt)
            resume.wait()
    finally:
        state["done"] = True
        state["pausing"] = False
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert kept == []


def test_weigher_runs_with_no_lock_held_where_the_value_is_given() -> None:
    """store, load_or_store, swap and get_or_compute weigh before taking the lock (the
    weigher may even write to the cache); the compute family weighs under it."""
    weighed: list[Any] = []
    m: safemap.Cache[str, str] = safemap.Cache(maxsize=100, weigher=lambda k, v: weigh(k, v))

    def weigh(key: str, value: str) -> int:
        m.pop("never-there", None)  # a write: RecursiveUpdateError if a lock were held
        weighed.append(key)
        return len(value)

    m["a"] = "xx"
    assert m.load_or_store("b", "yyy") == ("yyy", False)
    assert m.load_or_store("b", "zzzz") == ("yyy", True)  # present: not weighed
    assert m.swap("a", "x") == ("xx", True)
    assert m.swap("c", "w") == (None, False)
    assert m.get_or_compute("d", lambda k: "loaded") == "loaded"
    assert weighed == ["a", "b", "a", "c", "d"]
    with pytest.raises(safemap.RecursiveUpdateError):
        m.compute("e", lambda k, old: "v")
    assert "e" not in m and dict(m) == {"a": "x", "b": "yyy", "c": "w", "d": "loaded"}
