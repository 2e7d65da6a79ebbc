"""Tests specific to the native maps (safemap.native): options, stats, GC, sizes, leaks,
re-entry across shards, and that a blocked callback blocks only its own shard.

Real threads, checked invariants, no timing assertions: every wait has a generous timeout
whose expiry means a deadlock, never "too slow".
"""

from __future__ import annotations

import contextlib
import gc
import operator
import sys
import threading
import weakref
from typing import Any

import pytest
from support.leaks import FLAT, traced_growth

from safemap import DELETE, MISSING, Cache, PersistentMap, RecursiveUpdateError, native
from safemap.native import ConcurrentMap, SyncMap  # built by every install: never skipped

NATIVE = [ConcurrentMap, SyncMap]
WAIT = 30.0  # seconds: only ever reached on a deadlock


def shard_sizes(m: ConcurrentMap) -> list[int]:
    return [s.entries for s in m._collect_stats().shards]


def same_shard_keys(m: ConcurrentMap, n: int) -> list[int]:
    """n int keys that ConcurrentMap puts in one shard (found via the statistics)."""
    by_shard: dict[int, list[int]] = {}
    probe = ConcurrentMap(shards=m._options()["shards"])
    for k in range(10_000):
        probe[k] = k
        sizes = shard_sizes(probe)
        idx = next(i for i, s in enumerate(sizes) if s)
        probe.clear()
        by_shard.setdefault(idx, []).append(k)
        if len(by_shard[idx]) == n:
            return by_shard[idx]
    raise AssertionError("no shard got enough keys")


def other_shard_key(m: ConcurrentMap, key: int) -> int:
    probe = ConcurrentMap(shards=m._options()["shards"])
    probe[key] = 0
    mine = shard_sizes(probe).index(1)
    for k in range(10_000):
        probe.clear()
        probe[k] = 0
        if shard_sizes(probe).index(1) != mine:
            return k
    raise AssertionError("only one shard?")


# ------------------------------------------------------------------ construction


def test_shards_option_validated() -> None:
    assert ConcurrentMap(shards=1)._options() == {"shards": 1}
    assert ConcurrentMap({1: 2}, shards=64)._options() == {"shards": 64}
    assert ConcurrentMap()._options() == {"shards": native.DEFAULT_SHARDS}
    assert native.DEFAULT_SHARDS >= 8
    for bad in (0, -1, 10**30, 65537):
        with pytest.raises(ValueError, match="shards"):
            ConcurrentMap(shards=bad)
    for bad in (True, False, 1.5, "8", [8]):
        with pytest.raises(TypeError, match="shards"):
            ConcurrentMap(shards=bad)


def test_shards_is_not_an_item_and_survives_copy_and_pickle() -> None:
    import copy
    import pickle

    m = ConcurrentMap({"shards": "as a key"}, shards=3, a=1)
    assert dict(m.items()) == {"shards": "as a key", "a": 1}
    for clone in (m.copy(), copy.copy(m), copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert type(clone) is ConcurrentMap
        assert clone == m
        assert clone._options() == {"shards": 3}


@pytest.mark.parametrize("T", NATIVE)
def test_subclass_fromkeys_weakref_and_class_getitem(T: type) -> None:
    class Sub(T):  # type: ignore[misc, valid-type]
        pass

    s = Sub.fromkeys("ab", 0)
    assert type(s) is Sub and dict(s.items()) == {"a": 0, "b": 0}
    s.extra = 1  # a subclass without __slots__ gets a __dict__
    r = weakref.ref(s)
    del s
    gc.collect()
    assert r() is None
    assert T[str, int].__origin__ is T  # type: ignore[index]


@pytest.mark.parametrize("T", NATIVE)
def test_map_containing_itself_is_collected(T: type) -> None:
    m = T()
    m["self"] = m
    m["pair"] = [m, {"m": m}]
    r = weakref.ref(m)
    del m
    gc.collect()
    assert r() is None


@pytest.mark.parametrize("T", NATIVE)
def test_getsizeof_grows_with_contents(T: type) -> None:
    empty = sys.getsizeof(T())
    m = T((i, i) for i in range(1000)) if T is SyncMap else T({i: i for i in range(1000)})
    assert empty > 0
    assert sys.getsizeof(m) > empty + 1000 * 8


# ------------------------------------------------------------------------ stats


def test_concurrent_map_stats_counts_per_shard() -> None:
    m = ConcurrentMap(shards=4)
    for i in range(100):
        m[i] = i
    for i in range(100):
        assert m[i] == i
    st = m._collect_stats()
    assert len(st.shards) == 4 and st.size == 100
    assert [s.index for s in st.shards] == [0, 1, 2, 3]
    assert sum(s.entries for s in st.shards) == 100
    assert st.lock_acquisitions == sum(s.lock_acquisitions for s in st.shards) == 100
    assert st.lock_contentions == sum(s.lock_contentions for s in st.shards) == 0
    assert st.hits == 100 and st.misses == 0 and st.inserts == 100


def test_concurrent_map_stats_sees_contention() -> None:
    m = ConcurrentMap({"k": 0}, shards=1)
    entered, release = threading.Event(), threading.Event()

    def slow(_k: Any, old: Any) -> Any:
        entered.set()
        assert release.wait(WAIT)
        return old + 1

    holder = threading.Thread(target=m.compute, args=("k", slow))
    holder.start()
    assert entered.wait(WAIT)
    writer = threading.Thread(target=m.merge, args=("k", 1, operator.add))
    writer.start()
    # A contended acquisition is counted before waiting, so the counter shows the writer
    # blocked on the held shard lock.
    while m._collect_stats().lock_contentions == 0:
        writer.join(0.01)
    assert writer.is_alive()  # still waiting: the callback holds the shard
    release.set()
    holder.join(WAIT)
    writer.join(WAIT)
    assert m["k"] == 2
    st = m._collect_stats()
    assert st.lock_contentions == st.shards[0].lock_contentions == 1
    assert st.lock_acquisitions == 3  # the constructor's store, compute, merge


def test_sync_map_stats_promotion() -> None:
    m = SyncMap()
    for i in range(10):
        m[i] = i
    st = m._stats_raw()
    assert st["dirty_size"] == 10 and st["read_size"] == 0
    for _ in range(3):
        for i in range(10):
            assert m[i] == i
    st = m._stats_raw()
    assert st["read_size"] == 10 and st["dirty_size"] == 0 and st["promotions"] >= 1
    before = st["lock_acquisitions"]
    m[3] = "in place"  # a promoted key is updated without the mutex
    st = m._stats_raw()
    assert st["lock_acquisitions"] == before and st["updates"] == 1
    assert m[3] == "in place" and len(m) == 10


# ---------------------------------------------------------------------- re-entry


def test_callback_write_to_another_shard_raises() -> None:
    m = ConcurrentMap({0: 0}, shards=8)
    other = other_shard_key(m, 0)
    with pytest.raises(RecursiveUpdateError):
        m.compute(0, lambda k, old: m.store(other, 1))
    assert dict(m.items()) == {0: 0}


@pytest.mark.parametrize("T", NATIVE)
def test_callback_may_read_everything(T: type) -> None:
    m = T({i: i for i in range(50)})

    def fn(k: Any, old: Any) -> Any:
        assert m[k] == old and m.get(49) == 49 and 3 in m
        assert len(m) == 50 and sorted(m) == list(range(50))
        assert m.snapshot()[k] == old
        return old + 100

    assert m.compute(7, fn) == 107
    assert m[7] == 107


@pytest.mark.parametrize("T", NATIVE)
def test_transaction_rejects_own_methods_and_nested(T: type) -> None:
    m = T({"a": 1})
    for call in (
        lambda: m["a"],
        lambda: m.get("a"),
        lambda: len(m),
        lambda: list(m),
        lambda: m.snapshot(),
        lambda: m.store("b", 2),
        lambda: m.transaction(lambda v: None),
    ):
        with pytest.raises(RecursiveUpdateError):
            m.transaction(lambda v, call=call: call())
    assert dict(m.items()) == {"a": 1}


@pytest.mark.parametrize("T", [*NATIVE, Cache, PersistentMap])
def test_transact_returns_the_locks_whatever_its_runner_does(T: type) -> None:
    """``_transact(runner, fn)``, transaction()'s C primitive: whatever the runner does
    (raise, return something unusable) or however it is misused, the map's locks are
    returned and the map is unchanged."""
    m = T({"a": 1})

    def raising(_storage: Any, _fn: Any) -> Any:
        raise ValueError("runner")

    with pytest.raises(ValueError, match="runner"):
        m._transact(raising, None)
    for args in ((), (raising,), (raising, None, None)):
        with pytest.raises(TypeError):
            m._transact(*args)
    seen: list[Any] = []
    if T is PersistentMap:  # the runner returns (result, version or None, 3 counts)
        with pytest.raises(TypeError, match="5-tuple"):
            m._transact(lambda base, fn: seen.append((base, fn)), "fn")
        for refused in (("r", "not a version", 0, 0, 0), ("r", None, "no count", 0, 0)):
            with pytest.raises(TypeError):
                m._transact(lambda base, fn, out=refused: out, "fn")
        with pytest.raises(OverflowError):
            m._transact(lambda base, fn: ("r", base, 1 << 70, 0, 0), "fn")
    else:
        assert m._transact(lambda storage, fn: seen.append((storage, fn)) or "done", "fn") == "done"
    assert seen[0][1] == "fn"
    writer = threading.Thread(target=m.__setitem__, args=("b", 2), daemon=True)
    writer.start()
    writer.join(WAIT)
    assert not writer.is_alive(), "a lock was left held"
    assert m.transaction(lambda view: view.update(c=3) or "ok") == "ok"
    assert dict(m.items()) == {"a": 1, "b": 2, "c": 3}


def test_blocked_callback_blocks_only_its_shard() -> None:
    m = ConcurrentMap(shards=8)
    key = 0
    other = other_shard_key(m, key)
    same = [k for k in same_shard_keys(m, 50) if k != key]
    m[key] = 0
    entered, release = threading.Event(), threading.Event()

    def blocked(_k: Any, old: Any) -> Any:
        entered.set()
        assert release.wait(WAIT)
        return old + 1

    holder = threading.Thread(target=m.compute, args=(key, blocked))
    holder.start()
    assert entered.wait(WAIT)
    try:
        # Other shards, and reads of the blocked shard, proceed while the callback waits.
        for _ in range(100):
            m.merge(other, 1, operator.add)
        assert m[other] == 100
        assert m[key] == 0  # reads are lock-free and see the value before the compute
        assert m.get(same[1]) is None
        done = threading.Event()
        writer = threading.Thread(target=lambda: (m.store(same[0], 1), done.set()))
        writer.start()
        assert not done.is_set() or same[0] in m
    finally:
        release.set()
        holder.join(WAIT)
    writer.join(WAIT)
    assert done.is_set() and m[same[0]] == 1 and m[key] == 1


def test_key_eq_writing_other_shard_during_write_raises() -> None:
    m = ConcurrentMap(shards=8)
    target = other_shard_key(m, 12345)

    class Key:
        armed = False

        def __hash__(self) -> int:
            return 12345

        def __eq__(self, other: object) -> bool:
            if Key.armed:
                Key.armed = False
                m.store(target, "written from __eq__")
            return self is other

    stored = Key()
    m[stored] = "x"
    Key.armed = True
    with pytest.raises(RecursiveUpdateError):
        m[Key()] = "y"
    assert target not in m and m[stored] == "x" and len(m) == 1


def test_value_del_may_write_to_the_map() -> None:
    """An overwritten value is released after the shard lock: its __del__ may write."""
    m = ConcurrentMap()
    seen: list[Any] = []

    class Noisy:
        def __del__(self) -> None:
            try:
                m["from_del"] = 1
                seen.append("ok")
            except RecursiveUpdateError as exc:  # pragma: no cover - the failure mode
                seen.append(exc)

    m["k"] = Noisy()
    m["k"] = "replaced"
    m.merge("j", Noisy(), operator.add)
    m.compute("j", lambda k, old: DELETE)
    assert seen == ["ok", "ok"] and m["from_del"] == 1


def test_value_del_rewriting_the_same_key() -> None:
    """The nested write lands after the outer one, on the same shard, nothing doubled."""
    m = ConcurrentMap(shards=1)

    class Again:
        def __init__(self, depth: int) -> None:
            self.depth = depth

        def __del__(self) -> None:
            m["k"] = Again(self.depth - 1) if self.depth else "done"
            del m["gone"]

    for _ in range(3):
        m["gone"] = 1
        m["k"] = Again(0)
        m["gone"] = 1
        m["k"] = "outer"  # releases Again(0): its __del__ stores "done" and deletes "gone"
        assert m["k"] == "done" and "gone" not in m and len(m) == 1
        assert m._collect_stats().size == 1
    m.store("x", 1)
    assert len(m) == 2


# ------------------------------------------------------------------ concurrency


@pytest.mark.parametrize("T", NATIVE)
def test_parallel_counters_lose_nothing(T: type) -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        m = T()
        keys = [f"k{i}" for i in range(8)]

        def work(_: int) -> None:
            for _ in range(2000):
                for k in keys:
                    m.merge(k, 1, operator.add)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert not any(t.is_alive() for t in threads)
        assert dict(m.items()) == {k: 8000 for k in keys}
    finally:
        sys.setswitchinterval(old)


@pytest.mark.parametrize("T", NATIVE)
def test_compute_if_absent_runs_factory_once_under_race(T: type) -> None:
    m = T()
    calls: list[Any] = []
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def factory(k: Any) -> Any:
        calls.append(k)
        return object()

    def work() -> None:
        barrier.wait(WAIT)
        for k in range(200):
            results.append((k, m.compute_if_absent(k, factory)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(calls) == list(range(200))
    for k, v in results:
        assert v is m[k]


@pytest.mark.parametrize("T", NATIVE)
def test_iteration_during_churn_yields_stable_keys_once(T: type) -> None:
    stable = {f"s{i}": i for i in range(500)}
    m = T(stable)
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            m[f"c{i % 300}"] = i
            m.pop(f"c{(i + 150) % 300}", None)
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(50):
            seen = [k for k in m if k.startswith("s")]
            assert sorted(seen) == sorted(stable)
            items = dict(m.items())
            assert all(items[k] == v for k, v in stable.items())
            snap = m.snapshot()
            assert all(snap[k] == v for k, v in stable.items())
    finally:
        stop.set()
        t.join(WAIT)


@pytest.mark.parametrize("T", NATIVE)
def test_snapshot_is_consistent_with_pair_invariant(T: type) -> None:
    """A writer moves one unit between two keys with transaction(); every snapshot and
    len() must see the sum unchanged."""
    m = T({"a": 100, "b": 0})
    stop = threading.Event()

    def move(v: Any) -> None:
        v["a"] -= 1
        v["b"] += 1

    def back(v: Any) -> None:
        v["a"] += 1
        v["b"] -= 1

    def writer() -> None:
        while not stop.is_set():
            m.transaction(move)
            m.transaction(back)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(2000):
            snap = m.snapshot()
            assert snap["a"] + snap["b"] == 100
            assert len(m) == 2
    finally:
        stop.set()
        t.join(WAIT)


# ---------------------------------------------------------------- references


def _every_op_once(m: Any, i: int) -> None:
    k, k2 = i % 97, f"s{i % 89}"
    m[k] = i
    m[k2] = [i]
    _ = m[k], m.get(k2), m.get(-1), k in m, m.load(k), m.load(-1)
    m.store(k, i + 1)
    m.get_or_compute(k2, lambda kk: [kk])  # a hit
    m.get_or_compute(("g", i), lambda kk: [kk], timeout=5)  # a miss: loads
    with contextlib.suppress(TypeError):
        m.get_or_compute(k, str, bad=1)
    with contextlib.suppress(ZeroDivisionError):
        m.get_or_compute(("boom", i % 5), lambda kk: 1 / 0)
    m.delete(("g", i))
    m.load_or_store(k, 0)
    m.load_or_store(("t", i % 5), i)
    m.setdefault(("d", i % 3), [])
    m.swap(k, i)
    m.swap(("new", i % 7), i)
    m.compare_and_swap(k, i, i + 1)
    m.compare_and_swap(k, "no", 0)
    m.compare_and_delete(("new", i % 7), i)
    m.compute(k2, lambda kk, old: [old, i] if i % 3 else DELETE)
    m.compute_if_absent(("cia", i % 11), lambda kk: [kk])
    m.compute_if_present(k, lambda kk, old: old + 1)
    m.merge("counter", 1, operator.add)
    m.merge(("m", i % 13), (i,), operator.add)
    m.pop(("t", i % 5), None)
    m.load_and_delete(("d", i % 3))
    m.delete(k)
    with contextlib.suppress(KeyError):
        del m[k]
    if i % 50 == 0:
        _ = list(m), list(m.items()), list(m.values()), m.snapshot(), len(m), m._collect_stats()
        m.transaction(lambda v: v.update({"tx": i}))
        m.copy()
    if i % 400 == 0:
        m.clear()
    if i % 3 == 0:
        with contextlib.suppress(ZeroDivisionError):
            m.compute(k, lambda kk, old: 1 / 0)
    assert MISSING is not None


@pytest.mark.usefixtures("frozen_heap")
@pytest.mark.parametrize("T", NATIVE)
def test_no_reference_leak_over_many_operations(T: type) -> None:
    """Every kind of operation, many times: traced memory stays flat.

    About 25 operations per round; 40,000 rounds by default (a million operations),
    SAFEMAP_REFLEAK_ROUNDS overrides it."""
    import os

    rounds = int(os.environ.get("SAFEMAP_REFLEAK_ROUNDS", "40000"))
    m = T()
    growth = traced_growth(lambda i: _every_op_once(m, i), warmup=2000, rounds=rounds // 2)
    assert growth < FLAT, growth


def _transactions(m: Any, i: int) -> None:
    """A committed transaction, one whose fn raises and one refused by the map."""
    m.transaction(lambda v: v.update({i % 7: [i], "n": v.get("n", 0) + 1}))
    with contextlib.suppress(ZeroDivisionError):
        m.transaction(lambda v: (v.update(x=[i]), 1 / 0))
    with contextlib.suppress(RecursiveUpdateError):
        m.transaction(lambda v: m.get("n"))


@pytest.mark.usefixtures("frozen_heap")
@pytest.mark.parametrize("T", [*NATIVE, Cache, PersistentMap])
def test_transactions_leak_nothing(T: type) -> None:
    """30,000 rounds of three transactions (committed, raising, refused): traced memory
    stays flat, so transaction()'s C primitive drops every reference it takes."""
    m = T()
    growth = traced_growth(lambda i: _transactions(m, i), warmup=1000, rounds=15_000)
    assert m["n"] == 31_000
    assert growth < FLAT, growth


@pytest.mark.parametrize("T", NATIVE)
def test_exceptions_leave_no_trace(T: type) -> None:
    class BadHash:
        def __hash__(self) -> int:
            raise ValueError("hash")

    class BadEq:
        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            raise ArithmeticError("eq")

    m = T({1: "one"})
    before = dict(m.items())
    for call in (
        lambda: m.store(BadHash(), 1),
        lambda: m.__setitem__(BadEq(), 1),
        lambda: m.compute(1, lambda k, old: 1 / 0),
        lambda: m.merge(1, "x", lambda a, b: 1 / 0),
        lambda: m.compare_and_swap(1, BadEq(), "new"),
    ):
        with pytest.raises((ValueError, ArithmeticError)):
            call()
        assert dict(m.items()) == before and len(m) == 1
