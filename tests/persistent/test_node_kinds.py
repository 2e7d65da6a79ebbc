"""The trie's node kinds: CHAMP bitmap nodes (full ones indexed by position), collision
nodes and delta nodes (a persistent change of one value of a large node, shared instead of
copied).

Int keys hash to themselves, so ``p + 32 * j`` puts key j of group p at position p of the
root and position j of the root's child p: 256 keys 0..255 make every root position a
sub-trie of 8 entries (a full root, and children large enough for deltas), and deleting
them brings the root back to entries. ``Key(n, h)`` collides with the int ``h`` on purpose.
"""

from __future__ import annotations

import gc
import pickle
import tracemalloc
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safemap import FrozenMap, PersistentMap
from safemap.persistent import Trie


class Key:
    """A key whose hash the test chooses (collides with the int of that hash)."""

    __slots__ = ("h", "name")

    def __init__(self, name: int, h: int) -> None:
        self.name, self.h = name, h

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and other.name == self.name

    def __repr__(self) -> str:
        return f"Key({self.name}, {self.h})"


class Box:
    """A fresh value per write, freed as soon as nothing holds it."""

    __slots__ = ("__weakref__", "key", "n")

    def __init__(self, key: Any, n: int) -> None:
        self.key, self.n = key, n


keys = st.one_of(
    st.integers(0, 255),
    st.builds(lambda n: Key(n, n % 6), st.integers(0, 11)),  # collide with ints 0..5
)
values = st.integers(0, 3)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("set"), keys, values),
        st.tuples(st.just("delete"), keys, values),
        st.tuples(st.just("keep"), st.just(0), st.just(0)),
        st.tuples(st.just("fill"), st.integers(0, 31), values),  # a whole group of 8
        st.tuples(st.just("empty"), st.integers(0, 31), values),
        st.tuples(st.just("batch"), st.lists(st.tuples(keys, values), max_size=12), values),
    ),
    max_size=60,
)


def check_version(version: Trie, expected: dict[Any, int]) -> None:
    assert len(version) == len(expected)
    assert version.to_dict() == expected
    items = list(version.items())
    assert items == list(version.items())  # one order per version
    assert [k for k, _ in items] == list(version.keys()) == list(version)
    assert [v for _, v in items] == list(version.values())
    assert len(items) == len(expected) and dict(items) == expected
    for key, value in expected.items():
        assert version[key] is value and version.get(key, "no") is value
    for absent in (256, 300, Key(99, 3), Key(98, 1 << 40)):
        assert absent not in version and version.get(absent, "no") == "no"


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, max_size=60), steps)
def test_every_version_matches_a_dict_across_node_kinds(
    start: dict[Any, int], steps: list[Any]
) -> None:
    trie, model = Trie.from_dict(start), dict(start)
    kept = [(trie, dict(model))]
    for op, arg, value in steps:
        if op == "set":
            trie = trie.set(arg, value)
            model[arg] = value
        elif op == "delete":
            if arg in model:
                trie = trie.delete(arg)
                del model[arg]
            else:
                with pytest.raises(KeyError):
                    trie.delete(arg)
        elif op == "keep":
            kept.append((trie, dict(model)))
        elif op in ("fill", "empty"):  # crosses the full-node threshold, one key at a time
            for j in range(8):
                key = arg + 32 * j
                if op == "fill":
                    trie = trie.set(key, value)
                    model[key] = value
                elif key in model:
                    trie = trie.delete(key)
                    del model[key]
        else:
            batch = trie.mutate()
            for key, v in arg:
                if v == 0 and key in model:
                    assert batch.pop(key) == model.pop(key)
                else:
                    batch.set(key, v)
                    model[key] = v
            trie = batch.finish()
        kept.append((trie, dict(model)))
    for version, expected in kept:  # no change reached any other version
        check_version(version, expected)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["store", "pop", "snapshot", "drop"]), keys, values),
        max_size=120,
    )
)
def test_a_persistent_map_and_its_snapshots_match_dicts(steps: list[Any]) -> None:
    # Overwrites go in place, grow a delta (while a snapshot shares the node) or compact it
    # (once no snapshot does): every snapshot keeps its items, the map has the model's.
    m: PersistentMap[Any, int] = PersistentMap({k: 0 for k in range(256)})
    model: dict[Any, int] = dict(m.items())
    snaps: list[tuple[FrozenMap[Any, int], dict[Any, int]]] = []
    for op, key, value in steps:
        if op == "store":
            m[key] = value
            model[key] = value
        elif op == "pop":
            assert m.pop(key, "no") == model.pop(key, "no")
        elif op == "snapshot":
            snaps.append((m.snapshot(), dict(model)))
        elif snaps:
            snaps.pop(0)
    assert dict(m.items()) == model and len(m) == len(model)
    assert all(m[k] == v for k, v in model.items())
    for snap, expected in snaps:
        assert snap == expected and len(snap) == len(expected)
        assert pickle.loads(pickle.dumps(snap)) == expected


def test_full_nodes_shrink_back_and_collisions_fold() -> None:
    trie = Trie.from_dict({k: k for k in range(256)})  # a full root: 32 sub-tries
    colliding = [Key(n, 7) for n in range(5)]  # a collision node under int 7's position
    for c in colliding:
        trie = trie.set(c, c.name)
    for k in range(32, 256):  # every sub-trie back to one entry: inlined into the root
        trie = trie.delete(k)
    expected: dict[Any, int] = {k: k for k in range(32)}
    expected.update({c: c.name for c in colliding})
    check_version(trie, expected)
    for c in colliding:  # the collision node folds away
        trie = trie.delete(c)
        del expected[c]
        check_version(trie, expected)
    for k in range(32):
        trie = trie.delete(k)
    assert len(trie) == 0 and list(trie) == [] and trie.to_dict() == {}


def test_frozenmaps_with_deltas_pickle_and_compare() -> None:
    base: FrozenMap[int, Any] = FrozenMap({k: k for k in range(256)})
    # 3, 35 and 67 share a node of 8 entries: a delta of one value, then of two, of three
    changed = base.set(3, "three").set(35, "x").set(67, "y")
    again = changed.set(35, "z").delete(99).set(1000, 1)
    assert base == {k: k for k in range(256)}
    assert changed == {**{k: k for k in range(256)}, 3: "three", 35: "x", 67: "y"}
    expected_again = {**changed, 35: "z", 1000: 1}
    del expected_again[99]
    assert again == expected_again
    for f in (base, changed, again):
        assert pickle.loads(pickle.dumps(f)) == f
        assert hash(f) == hash(FrozenMap(dict(f)))
        assert list(f.items()) == list(f.items())


def test_a_kept_version_costs_a_delta_per_changed_value_not_a_node_copy() -> None:
    # 1,000 leaves of 30 entries (keys p + 32768 * j). Changing one value in each while the
    # old version is kept used to copy each leaf (about 550 bytes); a delta shares it.
    leaves, per_leaf = 1000, 30
    m: PersistentMap[int, int] = PersistentMap()
    m._publish(Trie.from_dict({p + 32768 * j: j for p in range(leaves) for j in range(per_leaf)}))
    kept = m._current()
    new_values = [-p - 1 for p in range(leaves)]  # made before measuring
    gc.collect()
    tracemalloc.start()
    try:
        for p in range(leaves):
            m[p] = new_values[p]
        gc.collect()
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert used / leaves < 300, used / leaves
    assert all(kept[p] == 0 and m[p] == -p - 1 for p in range(leaves))
    assert all(m[p + 32768] == 1 for p in range(leaves))


@pytest.mark.parametrize("next_key", [5, 3, 4])
def test_a_value_a_delta_still_holds_is_released_when_the_node_is_compacted(
    next_key: int,
) -> None:
    # While a snapshot shares the node, an overwrite makes a delta over it; the replaced
    # value lives on in that shared node. Once the snapshot is gone, the next write to the
    # node compacts the delta, and the value goes: a write to a value the delta does not
    # replace (5), or to one it does (3, 4: not an overwrite in place of the delta's slot).
    m: PersistentMap[int, Any] = PersistentMap({k: Box(k, 0) for k in range(16)})
    old = m[3]
    ref = weakref.ref(old)
    snap = m.snapshot()
    m[3] = Box(3, 1)  # the root node (16 entries) is shared: a delta over it
    m[4] = Box(4, 1)  # the delta grows
    assert snap[3] is old
    del snap, old
    m[next_key] = Box(next_key, 2)  # its base is no longer shared: compacted
    gc.collect()
    assert ref() is None
    expected = [0, 0, 0, 1, 1, 0, 0, 0]
    expected[next_key] = 2
    assert [m[k].n for k in range(8)] == expected


def test_a_delta_compacts_past_its_limit() -> None:
    f = FrozenMap({k: 0 for k in range(32)})  # one node of 32 entries
    versions = [f]
    for k in range(32):  # each change from a kept version: deltas up to the limit, then a copy
        versions.append(versions[-1].set(k, k + 1))
    for i, v in enumerate(versions):
        assert v == {k: (k + 1 if k < i else 0) for k in range(32)}


# Four groups of 30 keys (p + 32 * j): four nodes of 30 entries under the root, so that
# overwrites made while a snapshot is kept build deltas, grow them and compact them.
BIG = [p + 32 * j for p in range(4) for j in range(30)]


def test_readers_race_writers_that_build_grow_and_compact_deltas(run_threads: Any) -> None:
    m: PersistentMap[int, Box] = PersistentMap({k: Box(k, 0) for k in BIG})
    rounds = 150

    def writer(seed: int) -> None:
        kept: list[Any] = []
        for r in range(rounds):
            for j, k in enumerate(BIG):
                if (j + seed) % 2 == 0:
                    m[k] = Box(k, r)  # in place, a delta, a grown delta or a compaction
                elif (j + r) % 29 == 0:
                    m.pop(k, None)  # structural: compacts the delta on the path
                    m[k] = Box(k, r)
                if j % 37 == seed:
                    kept.append(m.snapshot())
            if r % 3 == 0:
                kept.clear()  # bases no longer shared: the next writes compact

    def point_reader() -> None:
        for _ in range(rounds):
            for k in BIG:
                v = m.get(k)
                assert v is None or v.key == k
                found, present = m.load(k)
                assert not present or found.key == k

    def snapshot_reader() -> None:
        for _ in range(rounds // 3):
            snap = m.snapshot()
            first = {k: snap.get(k) for k in BIG}
            seen = 0
            for k, v in snap.items():
                assert v.key == k and first[k] is v
                seen += 1
            assert seen == sum(v is not None for v in first.values())
            assert all(snap.get(k) is first[k] for k in BIG)

    def body(i: int) -> None:
        [lambda: writer(0), lambda: writer(1), point_reader, point_reader, snapshot_reader][i]()

    run_threads(body, 5, timeout=60)
    assert sorted(m) == sorted(BIG)
    assert all(m[k].key == k for k in BIG)


def _delta_ops(m: PersistentMap[int, Any], f: FrozenMap[int, Any], i: int) -> None:
    k = BIG[i % len(BIG)]
    snap = m.snapshot()  # shares every node: the overwrites below make deltas
    m[k] = i  # a delta over k's node
    m[k] = [i]  # the delta's own value, in place
    m[BIG[(i + 31) % len(BIG)]] = i  # the delta grows (or a second node gets one)
    m.get(k)
    _ = k in m
    m.load(BIG[(i + 1) % len(BIG)])
    if i % 7 == 0:
        m.pop(k)  # compacts the delta
        m[k] = i
    if i % 50 == 0:
        list(m.items())  # iterates through deltas
        pickle.dumps(snap)
    del snap
    m[BIG[(i + 62) % len(BIG)]] = i  # base no longer shared: compacts
    g = f.set(k, i).set(BIG[(i + 5) % len(BIG)], i)  # FrozenMap deltas
    g.delete(k)
    g[k]
    with g.mutate() as batch:  # a batch compacts the deltas it touches
        batch[k] = -i
        batch.finish()


@pytest.mark.usefixtures("frozen_heap")
def test_no_reference_leak_over_a_million_delta_operations() -> None:
    """About 20 operations per round, 2 x 25,000 rounds: traced memory stays flat."""
    m: PersistentMap[int, Any] = PersistentMap({k: 0 for k in BIG})
    f: FrozenMap[int, Any] = FrozenMap({k: 0 for k in BIG})
    for i in range(2000):
        _delta_ops(m, f, i)
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(25_000):
            _delta_ops(m, f, i)
        gc.collect()
        mid, _ = tracemalloc.get_traced_memory()
        for i in range(25_000):
            _delta_ops(m, f, i)
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A leak of one object per round would be >= 25,000 * 16 bytes.
    assert end - mid < 64 * 1024, (mid, end)


class WritingKey:
    """Equal to another WritingKey of the same n; its ``__eq__`` may write to a map once."""

    pending: tuple[PersistentMap[Any, Any], Any, Any] | None = None

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return self.n

    def __eq__(self, other: object) -> bool:
        if WritingKey.pending is not None and isinstance(other, WritingKey):
            m, key, value = WritingKey.pending
            WritingKey.pending = None
            m[key] = value  # a nested plain write during the outer write's compare
        return isinstance(other, WritingKey) and other.n == self.n


@pytest.mark.parametrize("shape", ["new delta", "grown delta", "no older version"])
def test_a_nested_write_during_a_delta_write_lands(shape: str) -> None:
    keys = [WritingKey(3 + 32 * j) for j in range(20)]  # one node of 20 entries
    m: PersistentMap[Any, Any] = PersistentMap({k: 0 for k in keys})
    snap = m.snapshot() if shape != "no older version" else None
    if shape == "grown delta":
        m[keys[1]] = 1
    try:
        WritingKey.pending = (m, keys[5], "nested")
        m[WritingKey(keys[2].n)] = "outer"  # an equal key: the walk calls __eq__
        assert WritingKey.pending is None
        items = dict(m.items())
        assert items[keys[2]] == "outer" and items[keys[5]] == "nested"
        WritingKey.pending = (m, keys[7], "nested again")
        assert m.pop(WritingKey(keys[2].n)) == "outer"  # compacts the delta
        assert WritingKey.pending is None
        items = dict(m.items())
        assert keys[2] not in items and items[keys[7]] == "nested again"
        assert items[keys[5]] == "nested" and len(items) == 19
    finally:
        WritingKey.pending = None
    if snap is not None:
        assert len(snap) == 20 and all(v == 0 for v in snap.values())
