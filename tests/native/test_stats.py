"""Statistics of the native maps (``_collect_stats``, the MapStats behind ``stats()``).

Counts are exact on both builds: a model of every operation says which counter it moves
(hypothesis drives programs through it), and threads doing known numbers of operations
must give exact totals. No timing assertions: a wait is only checked to be positive.
"""

from __future__ import annotations

import gc
import operator
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.leaks import FLAT, traced_growth

from safemap import DELETE, MISSING, RWLock
from safemap.native import ConcurrentMap, SyncMap, _core
from safemap.protocol.stats import MapStats

NATIVE = [ConcurrentMap, SyncMap]
WAIT = 30.0  # seconds: only ever reached on a deadlock
COUNTERS = ("hits", "misses", "inserts", "updates", "deletes", "iterations",
            "writes_during_iteration")  # fmt: skip


def counters(m: Any) -> dict[str, int]:
    st = m._collect_stats()
    return {name: getattr(st, name) for name in COUNTERS}


# ------------------------------------------------------------------- the model

VALUES = [("v", i) for i in range(3)]  # distinct, unequal objects: identity matters
KEYS = range(4)


class Model:
    """What each operation does to the counters: a point read is a hit or a miss; a
    write that changes the map is one insert, update (another object for a present key)
    or delete; writes while an iterator is alive and not exhausted also count as
    writes during iteration."""

    def __init__(self) -> None:
        self.d: dict[int, object] = {}
        self.c = dict.fromkeys(COUNTERS, 0)
        self.iterators = 0

    def read(self, k: int) -> None:
        self.c["hits" if k in self.d else "misses"] += 1

    def wrote(self, kind: str, n: int = 1) -> None:
        self.c[kind] += n
        if self.iterators:
            self.c["writes_during_iteration"] += n

    def set(self, k: int, v: object) -> None:
        if k not in self.d:
            self.wrote("inserts")
        elif self.d[k] is not v:
            self.wrote("updates")
        self.d[k] = v

    def delete(self, k: int) -> None:
        if k in self.d:
            del self.d[k]
            self.wrote("deletes")

    def result(self, k: int, r: object) -> None:
        """A compute-family callback returned r for k."""
        if r is DELETE:
            self.delete(k)
        else:
            self.set(k, r)


def pick(i: int) -> object:
    return VALUES[i % len(VALUES)]


def apply(m: Any, model: Model, its: list[Any], op: str, k: int, a: int, b: int) -> None:
    """Run one operation on the map and on the model."""
    v, w = pick(a), pick(b)
    present = k in model.d
    old = model.d.get(k)
    if op in ("getitem", "get", "contains", "load"):
        model.read(k)
        if op == "getitem":
            if present:
                assert m[k] is old
            else:
                with pytest.raises(KeyError):
                    m[k]
        elif op == "get":
            assert m.get(k) is old
        elif op == "contains":
            assert (k in m) == present
        else:
            assert m.load(k) == (old, present)
    elif op in ("setitem", "store", "swap"):
        getattr(m, {"setitem": "__setitem__"}.get(op, op))(k, v)
        model.set(k, v)
    elif op in ("pop", "delete", "delitem", "load_and_delete"):
        if op == "delitem" and not present:
            with pytest.raises(KeyError):
                del m[k]
        elif op == "delitem":
            del m[k]
        elif op == "pop":
            assert m.pop(k, None) is old
        else:
            getattr(m, op)(k)
        model.delete(k)
    elif op in ("setdefault", "load_or_store", "compute_if_absent"):
        if op == "compute_if_absent":
            m.compute_if_absent(k, lambda _k: v)
        else:
            getattr(m, op)(k, v)
        if not present:
            model.set(k, v)
    elif op == "compare_and_swap":
        if m.compare_and_swap(k, v, w):
            model.set(k, w)
    elif op == "compare_and_delete":
        if m.compare_and_delete(k, v):
            model.delete(k)
    elif op in ("compute", "compute_if_present"):
        r = DELETE if a == 0 else w
        getattr(m, op)(k, lambda _k, _old: r)
        if op == "compute" or present:
            model.result(k, r)
    elif op == "merge":
        r = DELETE if b == 0 else w
        m.merge(k, v, lambda _old, _v: r)
        model.result(k, r if present else v)
    elif op == "clear":
        m.clear()
        model.wrote("deletes", len(model.d))
        model.d.clear()
    elif op == "transaction":

        def txn(view: Any) -> None:
            view[k] = v
            if a != k:
                view.pop(a, None)

        m.transaction(txn)
        model.set(k, v)
        if a != k:
            model.delete(a)
    elif op == "iter_start":
        it = iter(m.items()) if a else iter(m)
        next(it, None)  # a first item (or exhaustion, for an empty map)
        model.c["iterations"] += 1
        if model.d:  # not exhausted yet: in progress until finished or dropped
            its.append(it)
            model.iterators += 1
    elif op == "iter_finish" and its:
        list(its.pop(0))
        model.iterators -= 1
    elif op == "iter_drop" and its:
        del its[-1]
        gc.collect()  # not needed on CPython, but free-threaded builds may defer it
        model.iterators -= 1
    elif op == "views":
        assert sorted(m.keys()) == sorted(model.d)
        model.c["iterations"] += 1


OPS = ["getitem", "get", "contains", "load", "setitem", "store", "swap", "pop", "delete",
       "delitem", "load_and_delete", "setdefault", "load_or_store", "compute_if_absent",
       "compare_and_swap", "compare_and_delete", "compute", "compute_if_present", "merge",
       "clear", "transaction", "iter_start", "iter_finish", "iter_drop", "views"]  # fmt: skip

PROGRAMS = st.lists(
    st.tuples(st.sampled_from(OPS), st.sampled_from(KEYS), st.integers(0, 3),
              st.integers(0, 3)),
    max_size=40,
)  # fmt: skip


@pytest.mark.parametrize("cls", NATIVE)
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(program=PROGRAMS, shards=st.sampled_from([1, 4]))
def test_counters_follow_the_model(cls: type, program: list[Any], shards: int) -> None:
    m: Any = ConcurrentMap(shards=shards) if cls is ConcurrentMap else SyncMap()
    model, its = Model(), []
    for op, k, a, b in program:
        apply(m, model, its, op, k, a, b)
        assert counters(m) == model.c, (op, k, a, b)
    st_ = m._collect_stats()
    assert st_.size == len(model.d) == st_.inserts - st_.deletes
    assert st_.inexact == frozenset()


@pytest.mark.parametrize("cls", NATIVE)
def test_snapshot_is_a_map_stats(cls: type) -> None:
    m: Any = cls({"a": 1, "b": 2})
    st_ = m._collect_stats()
    assert isinstance(st_, MapStats)
    assert st_.kind == cls.__name__
    assert st_.hot_keys == () and st_.latency == {} and st_.mailbox is None
    assert st_.size == 2 and st_.inserts == 2 and st_.lock_acquisitions >= 1
    assert st_.lock_contentions == 0 and st_.lock_wait_seconds == 0.0
    if cls is ConcurrentMap:
        assert len(st_.shards) == m._options()["shards"]
        assert sum(s.entries for s in st_.shards) == 2
        assert sum(s.lock_acquisitions for s in st_.shards) == st_.lock_acquisitions
    else:
        assert st_.shards == ()  # one mutex: its numbers are the map's lock_* fields
    m["c"] = 3
    later = m._collect_stats()
    assert later.minus(st_).inserts == 1 and later.minus(st_).size == 3


def test_store_of_the_same_object_is_not_an_update() -> None:
    for m in (ConcurrentMap(), SyncMap()):
        v = object()
        m["k"] = v
        m["k"] = v
        m.swap("k", v)
        m.compute("k", lambda _k, old: old)
        assert counters(m)["updates"] == 0
        m["k"] = object()
        assert counters(m)["updates"] == 1


# ------------------------------------------------------------------ iteration


@pytest.mark.parametrize("cls", NATIVE)
def test_writes_during_iteration_counts_only_while_an_iterator_is_live(cls: type) -> None:
    m: Any = cls({i: i for i in range(10)})
    m["x"] = 0
    it = iter(m)
    next(it)
    m["x"] = 1  # update
    m["y"] = 1  # insert
    del m[0]  # delete
    assert counters(m)["writes_during_iteration"] == 3
    list(it)  # exhausted: no longer in progress
    m["x"] = 2
    assert counters(m)["writes_during_iteration"] == 3
    it2 = iter(m.items())
    next(it2)
    m.clear()  # every entry removed counts
    assert counters(m)["writes_during_iteration"] == 3 + 11
    del it2  # dropped unexhausted: no longer in progress either
    gc.collect()
    m["z"] = 1
    assert counters(m)["writes_during_iteration"] == 14
    assert counters(m)["iterations"] == 2


@pytest.mark.parametrize("cls", NATIVE)
@pytest.mark.timeout(120)
def test_writes_during_iteration_from_other_threads_are_exact(cls: type) -> None:
    """Writers run while the main thread holds an iterator open: every write counts."""
    m: Any = cls({i: 0 for i in range(100)})
    list(m)  # SyncMap: promote, so that updates go in place (lock-free counters)
    nthreads, rounds = 4, 500
    it = iter(m)
    next(it)
    barrier = threading.Barrier(nthreads)

    def writer(t: int) -> None:
        barrier.wait(WAIT)
        for i in range(rounds):
            m[i % 100] = (t, i)  # an update (another object each time)
            m[("new", t, i)] = i  # an insert

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    c = counters(m)
    assert c["updates"] == c["inserts"] - 100 == nthreads * rounds
    assert c["writes_during_iteration"] == 2 * nthreads * rounds
    del it


# ------------------------------------------------------------------ threads


@pytest.mark.parametrize("cls", NATIVE)
@pytest.mark.timeout(120)
def test_exact_counts_under_threads(cls: type) -> None:
    """N threads x M rounds of known operations: every total is exact."""
    nthreads, rounds, nkeys = 4, 1500, 64
    m: Any = cls({("shared", i): 0 for i in range(nkeys)})
    list(m)  # SyncMap: shared keys promoted (reads and updates lock-free)
    base = counters(m)
    barrier = threading.Barrier(nthreads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait(WAIT)
            for i in range(rounds):
                k = ("shared", i % nkeys)
                assert m[k] is not None  # hit
                assert m.get(("absent", t, i)) is None  # miss
                m[k] = (t, i)  # update: a new object each time
                m[(t, i)] = i  # insert
                assert (t, i) in m  # hit
                del m[(t, i)]  # delete
                m.merge("counter", 1, operator.add)  # insert once, then updates
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert errors == []
    n = nthreads * rounds
    c = counters(m)
    assert m["counter"] == n
    assert c["hits"] - base["hits"] == 2 * n  # m[k] and `in`
    assert c["misses"] - base["misses"] == n
    assert c["inserts"] - base["inserts"] == n + 1
    assert c["deletes"] - base["deletes"] == n
    assert c["updates"] - base["updates"] == n + (n - 1)
    st_ = m._collect_stats()
    assert st_.size == nkeys + 1 == st_.inserts - st_.deletes
    assert st_.lock_contentions <= st_.lock_acquisitions


@pytest.mark.timeout(120)
def test_reads_from_many_threads_are_exact() -> None:
    """Lock-free point reads only (striped counters on free-threaded builds)."""
    nthreads, rounds = 6, 3000
    for m in (ConcurrentMap({i: i for i in range(10)}), SyncMap({i: i for i in range(10)})):
        list(m)
        barrier = threading.Barrier(nthreads)

        def reader(m: Any = m, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(WAIT)
            for i in range(rounds):
                m.get(i % 20)  # half hits, half misses

        threads = [threading.Thread(target=reader) for _ in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        c = counters(m)
        assert c["hits"] == c["misses"] == nthreads * rounds // 2


# ------------------------------------------------------------------ contention


def hold_lock_while(m: Any, key: Any, waiter: Callable[[], object]) -> threading.Thread:
    """Run a compute on key that holds its lock until `waiter` (started in a thread) is
    seen blocked (a contention counted), then lets go.  Returns the waiter thread."""
    entered, release = threading.Event(), threading.Event()

    def slow(_k: Any, old: Any) -> Any:
        entered.set()
        assert release.wait(WAIT)
        return old

    holder = threading.Thread(target=m.compute, args=(key, slow))
    holder.start()
    assert entered.wait(WAIT)
    before = m._collect_stats().lock_contentions
    w = threading.Thread(target=waiter)
    w.start()
    while m._collect_stats().lock_contentions == before:  # counted before it waits
        w.join(0.005)
        assert w.is_alive()
    release.set()
    holder.join(WAIT)
    w.join(WAIT)
    assert not holder.is_alive() and not w.is_alive()
    return w


@pytest.mark.parametrize("cls", NATIVE)
@pytest.mark.timeout(120)
def test_contention_and_wait_are_counted_on_the_slow_path(cls: type) -> None:
    m: Any = ConcurrentMap({"k": 0}, shards=4) if cls is ConcurrentMap else SyncMap({"k": 0})
    assert m._collect_stats().lock_wait_seconds == 0.0
    hold_lock_while(m, "k", lambda: m.merge("k", 1, operator.add))
    st_ = m._collect_stats()
    assert st_.lock_contentions == 1 and st_.lock_wait_seconds > 0
    if cls is ConcurrentMap:
        busy = [s for s in st_.shards if s.lock_contentions]
        assert len(busy) == 1 and busy[0].lock_wait_seconds == st_.lock_wait_seconds
        assert busy[0].entries == 1
    assert m["k"] == 1


# -------------------------------------------------------------- sampling


class Sampler:
    """A contention callback that records what the profiler needs to check."""

    def __init__(self, m: Any = None) -> None:
        self.m = m
        self.calls: list[tuple[str, float, int, str, bool]] = []

    def __call__(self, kind: str, wait: float) -> None:
        caller = sys._getframe(1).f_code.co_name
        lock_free = True
        if self.m is not None:  # the operation's lock is released: a write lands
            try:
                self.m["from-callback"] = 1
            except Exception:  # pragma: no cover - reported by the assertion
                lock_free = False
        self.calls.append((kind, wait, threading.get_ident(), caller, lock_free))


@pytest.fixture
def sampling() -> Any:
    def turn_on(every: int, cb: Callable[[str, float], object]) -> None:
        _core._set_contention_sampling(every, cb)

    yield turn_on
    _core._set_contention_sampling(0, None)


@pytest.mark.parametrize("cls", NATIVE)
@pytest.mark.timeout(120)
def test_sampled_contention_calls_back_from_the_waiting_thread(cls: type, sampling: Any) -> None:
    m: Any = cls({"k": 0})
    sampler = Sampler(m)
    sampling(1, sampler)
    idents: list[int] = []

    def the_callers_frame() -> None:
        idents.append(threading.get_ident())
        m.merge("k", 1, operator.add)

    hold_lock_while(m, "k", the_callers_frame)
    assert len(sampler.calls) == 1
    kind, wait, ident, caller, lock_free = sampler.calls[0]
    assert kind == cls.__name__ and wait > 0
    assert ident == idents[0]  # the waiting thread, not the holder
    assert caller == "the_callers_frame"  # the frame that called the map method
    assert lock_free and m["from-callback"] == 1


@pytest.mark.timeout(120)
def test_sampling_every_nth_and_off(sampling: Any) -> None:
    m: Any = ConcurrentMap({"k": 0}, shards=1)
    sampler = Sampler()
    sampling(2, sampler)
    for _ in range(4):
        hold_lock_while(m, "k", lambda: m.merge("k", 1, operator.add))
    assert len(sampler.calls) == 2  # every 2nd of 4 contended acquisitions
    _core._set_contention_sampling(0, None)
    hold_lock_while(m, "k", lambda: m.merge("k", 1, operator.add))
    assert len(sampler.calls) == 2
    assert m._collect_stats().lock_contentions == 5


def test_sampling_arguments_are_checked() -> None:
    with pytest.raises(TypeError):
        _core._set_contention_sampling(1, None)
    with pytest.raises(ValueError):
        _core._set_contention_sampling(-1, None)
    with pytest.raises(TypeError):
        _core._set_contention_sampling(True, print)
    _core._set_contention_sampling(0, None)


@pytest.mark.timeout(120)
def test_a_failing_callback_is_unraisable_and_the_operation_completes(sampling: Any) -> None:
    m: Any = SyncMap({"k": 0})

    def boom(kind: str, wait: float) -> None:
        raise ZeroDivisionError

    sampling(1, boom)
    seen: list[Any] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        hold_lock_while(m, "k", lambda: m.merge("k", 1, operator.add))
    finally:
        sys.unraisablehook = old_hook
    assert m["k"] == 1
    assert [type(u.exc_value) for u in seen] == [ZeroDivisionError]


# --------------------------------------------------------------------- RWLock


@pytest.mark.timeout(120)
def test_rwlock_counts_acquisitions_and_contention(sampling: Any) -> None:
    lock = RWLock()
    assert lock._stats() == (0, 0, 0.0)
    with lock.read(), lock.read():
        pass
    assert lock._stats() == (2, 0, 0.0)
    sampler = Sampler()
    sampling(1, sampler)
    lock.acquire_write()
    got = threading.Event()

    def reader() -> None:
        with lock.read():
            got.set()

    t = threading.Thread(target=reader)
    t.start()
    while lock._stats()[1] == 0:  # counted before it waits
        t.join(0.005)
    assert not got.is_set()
    lock.release_write()
    t.join(WAIT)
    assert not t.is_alive() and got.is_set()
    acquisitions, contentions, wait = lock._stats()
    assert (acquisitions, contentions) == (4, 1) and wait > 0
    assert [(c[0], c[2]) for c in sampler.calls] == [("RWLock", t.ident)]
    assert sampler.calls[0][1] > 0
    # a try that fails does not wait: not a contention
    lock.acquire_write()
    r = threading.Thread(target=lambda: lock.acquire_read(timeout=0))
    r.start()
    r.join(WAIT)
    lock.release_write()
    assert lock._stats()[:2] == (5, 1)


@pytest.mark.timeout(120)
def test_rwlock_counts_are_exact_under_threads() -> None:
    lock = RWLock()
    nthreads, rounds = 4, 2000
    total = [0]

    def work() -> None:
        for i in range(rounds):
            if i % 4 == 0:
                with lock.write():
                    total[0] += 1
            else:
                with lock.read():
                    pass

    threads = [threading.Thread(target=work) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    acquisitions, contentions, _ = lock._stats()
    assert acquisitions == nthreads * rounds
    assert total[0] == nthreads * rounds // 4
    assert contentions <= acquisitions


def test_missing_is_not_counted_as_a_value() -> None:
    m: Any = ConcurrentMap()
    with pytest.raises(TypeError):
        m["k"] = MISSING
    assert counters(m)["inserts"] == 0


# ------------------------------------------------------------------ leaks


@pytest.mark.usefixtures("frozen_heap")
@pytest.mark.parametrize("cls", NATIVE)
@pytest.mark.timeout(300)
def test_statistics_paths_leak_nothing(cls: type) -> None:
    """Iterators dropped unfinished, snapshots of the counters, counted writes and reads:
    traced memory stays flat (a leaked object per round would show as >= 100 KiB)."""
    import os

    rounds = int(os.environ.get("SAFEMAP_REFLEAK_ROUNDS", "40000")) // 4
    m: Any = cls({i: i for i in range(8)})
    lock = RWLock()

    def once(i: int) -> None:
        it = iter(m.items())
        next(it)
        m[i % 16] = i  # a write during iteration
        del it  # unfinished
        m.get(i % 16)
        m.pop((i + 8) % 16, None)
        m._stats_raw()
        m._collect_stats()
        with lock.read():
            lock._stats()

    growth = traced_growth(once, warmup=1000, rounds=rounds // 2)
    assert growth < FLAT, growth
    list(m)
    before = counters(m)["writes_during_iteration"]
    m[0] = object()
    assert counters(m)["writes_during_iteration"] == before  # no iterator left counted


@pytest.mark.timeout(300)
def test_reporting_a_sampled_wait_leaks_no_reference(sampling: Any) -> None:
    m: Any = ConcurrentMap({"k": 0}, shards=1)
    sampler = Sampler()
    sampling(1, sampler)
    for _ in range(3):
        hold_lock_while(m, "k", lambda: m.merge("k", 1, operator.add))
    sampler.calls.clear()
    refs = sys.getrefcount(sampler), sys.getrefcount("ConcurrentMap")
    for _ in range(20):
        hold_lock_while(m, "k", lambda: m.merge("k", 1, operator.add))
    assert len(sampler.calls) == 20
    sampler.calls.clear()
    assert (sys.getrefcount(sampler), sys.getrefcount("ConcurrentMap")) == refs
