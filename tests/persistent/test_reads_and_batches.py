"""Lock-free reads racing writers, and batches built in place (Trie.mutate()).

Readers walk the current version without a lock (free-threaded builds: no reference to
the version for exact str/int keys, a try-incref on the value) while writers overwrite
values in place (the old value freed at once), copy paths (a snapshot holds the version),
delete and re-insert: every read must return a value written for that key, and every
snapshot must stay what it was. Batches: a batch changes only nodes it made, so neither
the version it started from nor any version finished before changes.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from conftest import ThreadRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from safemap import FrozenMap, PersistentMap
from safemap.persistent import Trie

WAIT = 60.0  # seconds: reached only on a deadlock


class Box:
    """A fresh value per write: freed as soon as the map lets go of it."""

    __slots__ = ("__weakref__", "key", "n")

    def __init__(self, key: Any, n: int) -> None:
        self.key, self.n = key, n


KEYS: list[Any] = [*range(64), *(f"s{i}" for i in range(64)), *((i, "t") for i in range(8))]


def test_point_reads_and_snapshots_under_in_place_and_copying_writers(
    run_threads: ThreadRunner,
) -> None:
    m: PersistentMap[Any, Box] = PersistentMap({k: Box(k, 0) for k in KEYS})
    rounds = 300

    def writer(seed: int) -> Any:
        def run() -> None:
            kept: list[Any] = []
            for r in range(rounds):
                for j, k in enumerate(KEYS):
                    if (j + seed) % 3 == 0:
                        m[k] = Box(k, r)  # in place unless a snapshot holds the version
                    elif (j + r) % 17 == 0:
                        m.pop(k, None)
                        m[k] = Box(k, r)
                    if j % 40 == seed:
                        kept.append(m.snapshot())  # forces the next writes to copy
                kept.clear()  # released: writes may go in place again

        return run

    def point_reader() -> None:
        for _ in range(rounds):
            for k in KEYS:
                v = m.get(k)
                assert v is None or v.key == k
                found, present = m.load(k)
                assert not present or found.key == k

    def snapshot_reader() -> None:
        for _ in range(rounds // 3):
            snap = m.snapshot()
            first = {k: snap.get(k) for k in KEYS}
            for k, v in snap.items():
                assert v.key == k and first[k] is v
            assert all(snap.get(k) is first[k] for k in KEYS)

    run_threads([writer(0), writer(1), point_reader, point_reader, snapshot_reader], timeout=WAIT)
    assert sorted(map(repr, m)) == sorted(map(repr, KEYS))
    assert all(m[k].key == k for k in KEYS)


def test_iteration_never_sees_a_value_change_under_in_place_writers(
    run_threads: ThreadRunner,
) -> None:
    m: PersistentMap[int, Box] = PersistentMap({i: Box(i, 0) for i in range(200)})
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            m[n % 200] = Box(n % 200, n)

    def reader() -> None:
        try:
            for _ in range(200):
                seen = {k: v for k, v in m.items()}
                assert len(seen) == 200 and all(v.key == k for k, v in seen.items())
        finally:
            stop.set()

    run_threads([writer, reader], timeout=WAIT)


# -------------------------------------------------------------------- batches

keys = st.one_of(st.integers(-40, 40), st.text(max_size=2))
batch_ops = st.lists(
    st.tuples(st.sampled_from(["set", "pop"]), keys, st.integers(0, 3)), max_size=80
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, st.integers(0, 3), max_size=60), batch_ops, batch_ops)
def test_batches_match_a_dict_and_never_change_other_versions(
    start: dict[Any, int], ops1: list[Any], ops2: list[Any]
) -> None:
    base = Trie.from_dict(start)
    assert base.to_dict() == start
    versions = [(base, dict(start))]
    trie, model = base, dict(start)
    for ops in (ops1, ops2):  # a second batch starts from the first one's result
        batch = trie.mutate()
        for op, key, value in ops:
            if op == "set":
                assert batch.set(key, value) is (key not in model)
                model[key] = value
            elif key in model:
                assert batch.pop(key) == model.pop(key)
            else:
                with pytest.raises(KeyError):
                    batch.pop(key)
                assert batch.pop(key, "d") == "d"
            assert len(batch) == len(model)
        assert {k: batch[k] for k in model} == model
        trie = batch.finish()
        with pytest.raises(RuntimeError):
            batch.set(0, 0)
        assert trie.to_dict() == model and len(trie) == len(model)
        versions.append((trie, dict(model)))
        for version, expected in versions:  # no batch changed any other version
            assert version.to_dict() == expected


def test_a_batch_refuses_reentry_from_a_key() -> None:
    batch = Trie().mutate()

    class Sneaky:
        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            batch.set("x", 1)  # re-entry while the batch walks its nodes
            return False

    batch.set(1, "one")  # same hash as Sneaky(): the walk compares with __eq__
    with pytest.raises(RuntimeError):
        batch.set(Sneaky(), 2)
    assert batch.finish().to_dict() == {1: "one"}


def test_frozenmap_mutate_leaves_the_base_and_earlier_results_unchanged() -> None:
    base = FrozenMap({i: i for i in range(100)})
    with base.mutate() as b:
        for i in range(0, 100, 2):
            b[i] = -i
        del b[1]
        first = b.finish()
    b2 = first.mutate()
    b2.update({i: 0 for i in range(50)})
    second = b2.finish()
    assert base == {i: i for i in range(100)}
    assert first == {i: (-i if i % 2 == 0 else i) for i in range(100) if i != 1}
    rest = {i: first[i] for i in range(50, 100) if i in first}
    assert second == {**{i: 0 for i in range(50)}, **rest}


def test_a_transaction_commits_through_one_batch() -> None:
    m: PersistentMap[int, int] = PersistentMap({i: i for i in range(50)})
    snap = m.snapshot()

    def fn(view: Any) -> None:
        for i in range(50):
            view[i] = view[i] + 1
        for i in range(50, 60):
            view[i] = i
        del view[0]

    m.transaction(fn)
    assert dict(m.items()) == {**{i: i + 1 for i in range(1, 50)}, **{i: i for i in range(50, 60)}}
    assert snap == {i: i for i in range(50)}


@pytest.mark.parametrize("read_by_another_thread", [False, True])
def test_removed_values_are_released_at_once_when_no_read_is_in_flight(
    read_by_another_thread: bool,
) -> None:
    # Free-threaded builds: a replaced version is handed to the delayed (QSBR) release only
    # while a lock-free read may still be walking it; otherwise it goes at once, also once
    # other threads have read the map (the protocol: what a call removed is no longer
    # referenced by the map once it returns).
    import weakref

    m: PersistentMap[str, Any] = PersistentMap({"other": 1})
    if read_by_another_thread:
        reader = threading.Thread(target=lambda: [m.get("other") for _ in range(100)])
        reader.start()
        reader.join(60.0)
        assert not reader.is_alive()
    for op in ("delete", "overwrite-shared", "clear"):
        value = Box(op, 0)
        ref = weakref.ref(value)
        m[op] = value
        del value
        if op == "delete":
            del m[op]
        elif op == "overwrite-shared":
            snap = m.snapshot()
            m[op] = Box(op, 1)  # copies the path: the old version goes with the snapshot
            del snap
        else:
            m.clear()
        assert ref() is None, op
