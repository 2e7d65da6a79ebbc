"""Tests specific to PersistentMap and its trie (safemap.persistent).

The shared protocol suite (tests/) already runs PersistentMap; these cover what is
particular to it: the persistent trie against a dict model (collisions included), one
version per iteration/snapshot under concurrent writers, re-entry, release of replaced
values outside the writer lock, GC of cycles, and reference leaks over a million
operations. Real threads, exact invariants, no timing assertions.
"""

from __future__ import annotations

import gc
import operator
import sys
import threading
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.leaks import FLAT, traced_growth

from safemap import DELETE, MISSING, FrozenMap, PersistentMap, RecursiveUpdateError
from safemap.persistent import Trie

WAIT = 30.0  # seconds: reached only on a deadlock


class Key:
    """A key whose hash the test chooses (collisions on purpose)."""

    __slots__ = ("h", "name")

    def __init__(self, name: int, h: int) -> None:
        self.name, self.h = name, h

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and other.name == self.name

    def __repr__(self) -> str:
        return f"Key({self.name}, {self.h})"


# Hashes that collide fully, share long prefixes (differ only in the top bits: the last
# trie level) or are the special -1 (which Python turns into -2).
HASHES = [0, 1, 2, 31, 32, -1, -2, 2**60, 2**61, -(2**63), 2**63 - 1, 1 << 59, 33]
keys = st.one_of(
    st.integers(-50, 50),
    st.text(max_size=2),
    # equal keys hash equal; 40 names over 13 hashes collide
    st.builds(lambda n: Key(n, HASHES[n % len(HASHES)]), st.integers(0, 40)),
)
ops = st.lists(st.tuples(st.sampled_from(["set", "delete"]), keys, st.integers(0, 3)), max_size=120)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_trie_matches_a_dict_and_old_versions_never_change(steps: list[Any]) -> None:
    trie, model = Trie(), {}
    history = [(trie, dict(model))]
    for op, key, value in steps:
        if op == "set":
            trie = trie.set(key, value)
            model[key] = value
        elif key in model:
            trie = trie.delete(key)
            del model[key]
        else:
            with pytest.raises(KeyError):
                trie.delete(key)
        history.append((trie, dict(model)))
    for version, expected in history:  # persistence: every version is still what it was
        assert len(version) == len(expected)
        assert version.to_dict() == expected
        assert sorted(map(repr, version)) == sorted(map(repr, expected))
        assert sorted(map(repr, version.items())) == sorted(map(repr, expected.items()))
        for key in expected:
            assert key in version and version[key] is expected[key]


def test_trie_many_keys_and_deep_collisions() -> None:
    trie, model = Trie(), {}
    for i in range(20_000):
        trie = trie.set(i, i)
        model[i] = i
    colliding = [Key(i, 12345) for i in range(40)]  # one collision node
    for k in colliding:
        trie = trie.set(k, k.name)
        model[k] = k.name
    for i in range(0, 20_000, 3):
        trie = trie.delete(i)
        del model[i]
    for k in colliding[:-1]:  # down to one entry: the collision node is folded back
        trie = trie.delete(k)
        del model[k]
    assert trie.to_dict() == model and len(trie) == len(model)
    assert trie[colliding[-1]] == 39 and trie.get(colliding[0], "no") == "no"


def test_same_value_set_returns_the_same_version() -> None:
    value = object()
    t = Trie().set("a", value)
    assert t.set("a", value) is t


def test_trie_exceptions_from_keys_leave_the_version_intact() -> None:
    class BadEq(Key):
        def __eq__(self, other: object) -> bool:
            raise ArithmeticError("eq")

        __hash__ = Key.__hash__

    t = Trie().set(Key(1, 7), "one")
    with pytest.raises(ArithmeticError):
        t.set(BadEq(2, 7), "x")
    with pytest.raises(ArithmeticError):
        t.delete(BadEq(2, 7))
    with pytest.raises(TypeError):
        t.set([], 1)
    assert t.to_dict() == {Key(1, 7): "one"}


# ------------------------------------------------------------------ the map


def test_iteration_walks_one_version_while_a_writer_inserts() -> None:
    """A writer inserts 0, 1, 2, ... in order, so every version is {0..j-1}; every
    iteration must yield exactly such a set, each key once (one version, not a blend)."""
    m: PersistentMap[int, int] = PersistentMap()
    stop = threading.Event()
    n = 30_000

    def writer() -> None:
        for i in range(n):
            m[i] = i
        stop.set()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    seen = 0
    while not stop.is_set() or seen < 3:
        got = list(m)
        assert len(got) == len(set(got))
        assert set(got) == set(range(len(got)))
        seen += 1
    t.join(WAIT)
    assert not t.is_alive()
    assert sorted(m) == list(range(n))


def test_snapshots_and_iteration_see_whole_transactions(run_threads: Any) -> None:
    """Transfers between accounts keep the total fixed; every snapshot and every
    iteration (both one version) sees the exact total."""
    accounts = 50
    m: PersistentMap[int, int] = PersistentMap(dict.fromkeys(range(accounts), 100))
    total = 100 * accounts
    rounds = 400

    def transfer(view: Any, a: int, b: int) -> None:
        view[a] -= 1
        view[b] += 1

    def worker(i: int) -> int:
        checked = 0
        for r in range(rounds):
            if i < 2:
                a, b = (r * 7 + i) % accounts, (r * 13 + 3 * i + 1) % accounts
                m.transaction(lambda view, a=a, b=b: transfer(view, a, b))
            else:
                assert sum(m.snapshot().values()) == total
                assert sum(v for _, v in m.items()) == total
                checked += 1
        return checked

    results = run_threads(worker, 4)
    assert results[2] == results[3] == rounds
    assert sum(m.values()) == total


def test_merge_counters_are_exact(run_threads: Any) -> None:
    m: PersistentMap[str, int] = PersistentMap()
    per_thread = 2000

    def worker(i: int) -> None:
        for j in range(per_thread):
            m.merge(f"k{j % 16}", 1, operator.add)

    run_threads(worker, 4)
    assert sum(m.values()) == 4 * per_thread and len(m) == 16


def test_reentrant_writes_are_refused_and_change_nothing() -> None:
    m: PersistentMap[Any, Any] = PersistentMap(a=1)
    with pytest.raises(RecursiveUpdateError):
        m.compute("a", lambda k, old: m.store("b", 2))
    with pytest.raises(RecursiveUpdateError):
        m.compute("a", lambda k, old: m.clear())
    assert m.compute("a", lambda k, old: old + m["a"]) == 2  # reads are fine
    with pytest.raises(RecursiveUpdateError):
        m.transaction(lambda view: len(m))
    with pytest.raises(RecursiveUpdateError):
        m.transaction(lambda view: m.transaction(lambda v: None))

    class WritingEq(Key):
        def __eq__(self, other: object) -> bool:
            m["side"] = "written by __eq__"
            return False

        __hash__ = Key.__hash__

    m[Key(1, 5)] = "x"
    with pytest.raises(RecursiveUpdateError):  # nested in a compute: refused
        m.compute(WritingEq(2, 5), lambda k, old: "y")
    assert dict(m.items()) == {"a": 2, Key(1, 5): "x"}
    # Nested in a plain write: the nested write lands, then the outer one (rebuilt on top).
    w = WritingEq(2, 5)
    m[w] = "y"
    assert m["side"] == "written by __eq__" and m[Key(1, 5)] == "x" and len(m) == 4
    assert [v for k, v in m.items() if k is w] == ["y"]

    class AlwaysWritingEq(Key):
        calls = 0

        def __eq__(self, other: object) -> bool:
            AlwaysWritingEq.calls += 1
            m["side"] = AlwaysWritingEq.calls  # a new version on every call
            return False

        __hash__ = Key.__hash__

    with pytest.raises(RecursiveUpdateError):  # refused after many rebuilds, not a livelock
        m[AlwaysWritingEq(3, 5)] = "z"
    assert len(m) == 4


def test_compute_sentinels_and_results() -> None:
    m: PersistentMap[str, Any] = PersistentMap()
    assert m.compute("a", lambda k, old: DELETE) is None and "a" not in m
    assert m.compute("a", lambda k, old: (old is MISSING, k)) == (True, "a")
    assert m.compute("a", lambda k, old: DELETE) is None and len(m) == 0
    assert m.pop("zz", 7) == 7 and m.load_and_delete("zz") == (None, False)


def test_replaced_values_are_released_outside_the_writer_lock() -> None:
    """A value whose __del__ runs a compute on the map: released while the writer lock is
    still held by the thread, that compute would be refused (RecursiveUpdateError,
    reported as unraisable)."""
    m: PersistentMap[str, Any] = PersistentMap()
    unraisable: list[Any] = []
    released: list[int] = []

    class Writes:
        def __del__(self) -> None:
            m.merge("side", 1, operator.add)  # refused if the writer lock were still held
            released.append(1)

    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        m["a"] = Writes()
        m["a"] = 1  # overwrite
        m["b"] = Writes()
        del m["b"]  # delete
        m["c"] = Writes()
        m.compute("c", lambda k, old: DELETE)
        m["d"] = Writes()
        m.clear()
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert unraisable == []
    # Released at once, in order, on every build: with no read in flight, a replaced version
    # is not left for the free-threaded build's delayed (QSBR) release.
    assert len(released) == 4 and m["side"] == 1  # clear() came before the last __del__


def test_a_map_in_a_cycle_is_collected() -> None:
    class Box:
        pass

    m: PersistentMap[str, Any] = PersistentMap()
    box = Box()
    m["self"] = m
    m["box"] = box
    box.m = m  # type: ignore[attr-defined]
    snapshot_trie = m._current()
    ref = weakref.ref(m)
    del m, box, snapshot_trie
    gc.collect()
    assert ref() is None


def test_copy_is_independent_and_shares_the_version() -> None:
    m: PersistentMap[int, int] = PersistentMap({i: i for i in range(1000)})
    c = m.copy()
    assert c._current() is m._current()
    c[5] = -5
    del c[6]
    assert m[5] == 5 and 6 in m and c[5] == -5 and 6 not in c


def _every_op(m: PersistentMap[Any, Any], i: int) -> None:
    k = i % 300
    m[k] = i
    m.get(k)
    _ = k in m
    m.store(k + 1, [i])
    m.load(k + 1)
    m.swap(k, i + 1)
    m.compare_and_swap(k, i + 1, i)
    m.merge(k, 1, operator.add)
    m.compute_if_absent(k + 500, lambda key: key)
    m.compute_if_present(k + 500, lambda key, v: DELETE)
    m.load_or_store(k + 2, "x")
    m.pop(k + 2, None)
    m.delete(k + 1)
    m.setdefault(k + 3, i)
    m.compare_and_delete(k + 3, i)
    with pytest.raises(KeyError):
        m[-1]
    with pytest.raises(ZeroDivisionError):
        m.compute(k, lambda key, v: 1 / 0)
    m[("t", k)] = i  # a key whose compare holds the version (not the lock-free walk)
    m.get(("t", k))
    if i % 50 == 0:
        list(m.items())
        it = iter(m)
        next(it)
        del it  # an iteration released unfinished
        m.snapshot()
        m.transaction(lambda view: view.update({-2: i, -3: i}) or view.pop(-3))
        m.copy()
        frozen = m.snapshot().set(-4, i)  # a FrozenMap batch: built in place
        with frozen.mutate() as batch:
            batch.update({j: j for j in range(10)})
            batch.pop(-4)
            batch.finish()
        m._collect_stats()
    if i % 500 == 0:
        m.clear()


@pytest.mark.usefixtures("frozen_heap")
def test_no_reference_leak_over_a_million_operations() -> None:
    """About 18 operations per round, 60,000 rounds: traced memory stays flat."""
    m: PersistentMap[Any, Any] = PersistentMap()
    growth = traced_growth(lambda i: _every_op(m, i), warmup=3000, rounds=30_000)
    assert growth < FLAT, growth


# ------------------------------------- in-place replacement of an unshared version


@settings(max_examples=120, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["store", "merge", "delete", "capture", "iterate", "drop"]),
            st.integers(0, 40),
        ),
        max_size=80,
    )
)
def test_versions_seen_by_anyone_never_change(steps: list[tuple[str, int]]) -> None:
    """Writes may update the current version in place only while nobody else can see
    it: every captured version, every started iteration and every snapshot keeps exactly
    the contents it had when it was taken, whatever the writes after it."""
    m: PersistentMap[int, int] = PersistentMap({i: i for i in range(0, 40, 2)})
    captured: list[tuple[Trie, dict[int, int]]] = []
    iterations: list[tuple[Any, list[tuple[int, int]], dict[int, int]]] = []
    for n, (op, k) in enumerate(steps):
        if op == "store":
            m[k] = n
        elif op == "merge":
            m.merge(k, 1, operator.add)
        elif op == "delete":
            m.pop(k, None)
        elif op == "capture":
            captured.append((m._current(), dict(m.snapshot())))
        elif op == "iterate":
            it = iter(m.items())
            first = [next(it) for _ in range(min(3, len(m)))]
            iterations.append((it, first, dict(m.snapshot())))
        elif captured:
            captured.pop(0)
    for version, expected in captured:
        assert version.to_dict() == expected
    for it, first, expected in iterations:
        assert dict(first + list(it)) == expected


def test_a_kept_version_is_not_changed_by_later_overwrites() -> None:
    m: PersistentMap[int, int] = PersistentMap({i: 0 for i in range(2000)})
    for i in range(2000):
        m[i] = 1  # nobody holds the version: updated in place
    kept = m._current()
    for i in range(2000):
        m[i] = 2
        m.merge(i, 1, operator.add)
    assert set(kept.values()) == {1} and set(m.values()) == {3}
    shared_subtree = m._current()
    m[10_000] = 0  # a new root; every other node is shared with shared_subtree
    for i in range(2000):
        m[i] = 4
    assert set(shared_subtree.values()) == {3}
    assert sum(m.values()) == 4 * 2000


def test_readers_holding_a_version_see_it_unchanged_under_overwrites(run_threads: Any) -> None:
    """One writer overwrites every key again and again (in place whenever no reader holds
    the version); readers keep a version and read it twice: both reads are identical."""
    m: PersistentMap[int, int] = PersistentMap(dict.fromkeys(range(500), 0))
    stop = threading.Event()

    def worker(i: int) -> int:
        if i == 0:
            try:
                for gen in range(1, 150):
                    for k in range(500):
                        m[k] = gen
            finally:
                stop.set()
            return 0
        checks = 0
        while not stop.is_set() or checks < 5:
            version = m._current()
            first = list(version.values())
            assert list(version.values()) == first
            checks += 1
        return checks

    run_threads(worker, 3)
    assert set(m.values()) == {149}


def test_one_iterator_shared_by_threads_yields_each_key_once(run_threads: Any) -> None:
    m: PersistentMap[int, int] = PersistentMap({i: i for i in range(20_000)})
    it = iter(m.items())
    lock = threading.Lock()
    seen: list[int] = []

    def worker(i: int) -> None:
        mine = []
        for k, v in it:
            assert k == v
            mine.append(k)
        with lock:
            seen.extend(mine)

    run_threads(worker, 4)
    assert sorted(seen) == list(range(20_000))


# ------------------------------------------------------------ persistent FrozenMap


def test_snapshot_shares_the_version_in_constant_time() -> None:
    m: PersistentMap[int, int] = PersistentMap({i: i for i in range(10_000)})
    version = m._current()
    snap = m.snapshot()
    assert snap._trie is version  # no copy: the snapshot is the version itself
    m[1] = -1
    del m[2]
    assert snap[1] == 1 and snap[2] == 2 and len(snap) == 10_000
    assert type(snap) is FrozenMap and snap == {i: i for i in range(10_000)}


def test_frozenmap_set_delete_update_return_new_maps() -> None:
    base = FrozenMap({"a": 1, "b": 2})
    s = base.set("c", 3)
    d = s.delete("a")
    u = d.update({"x": 9}, y=10)
    assert base == {"a": 1, "b": 2}
    assert s == {"a": 1, "b": 2, "c": 3}
    assert d == {"b": 2, "c": 3}
    assert u == {"b": 2, "c": 3, "x": 9, "y": 10}
    with pytest.raises(KeyError):
        base.delete("zz")
    assert hash(u) == hash(FrozenMap({"b": 2, "c": 3, "x": 9, "y": 10}))
    assert u._data == {"b": 2, "c": 3, "x": 9, "y": 10}
    assert sorted(u) == ["b", "c", "x", "y"] and "x" in u and u.get("q", 0) == 0


def test_frozenmap_mutate_builds_a_batch() -> None:
    base = FrozenMap({i: i for i in range(100)})
    builder = base.mutate()
    for i in range(0, 100, 2):
        del builder[i]
    builder[500] = 5
    assert builder.pop(1) == 1 and builder.pop(1, "gone") == "gone"
    new = builder.finish()
    with pytest.raises(RuntimeError):
        builder[1] = 1
    assert len(base) == 100 and new == {**{i: i for i in range(3, 100, 2)}, 500: 5}


class SubFrozen(FrozenMap[str, int]):
    """A FrozenMap subclass (module level: pickle finds it by name)."""


def test_persistent_frozenmaps_keep_the_frozenmap_guarantees() -> None:
    import copy
    import pickle

    sub = SubFrozen(a=1).set("b", 2)
    assert type(sub) is SubFrozen and sub == {"a": 1, "b": 2}
    for back in (pickle.loads(pickle.dumps(sub)), copy.deepcopy(sub)):
        assert type(back) is SubFrozen and back == sub and hash(back) == hash(sub)
    box: list[Any] = []
    recursive = FrozenMap(box=box).set("x", 1)
    box.append(recursive)
    back = pickle.loads(pickle.dumps(recursive))
    assert back["box"][0] is back
    with pytest.raises(AttributeError, match="immutable"):
        object.__setattr__(sub, "_trie", Trie())
    with pytest.raises(TypeError, match="immutable"):
        sub.__init__({"x": 9})  # type: ignore[misc]
    fresh = FrozenMap(a=1).set("b", 2)
    assert FrozenMap(fresh)._trie is fresh._trie  # a trie-backed FrozenMap is shared
