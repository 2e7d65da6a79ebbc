"""``update()`` and the constructor store their items as one batch (``_store_items``).

The batch is built on the current version (each node copied at most once) and published
as one new version: readers see the map before or after the whole update, never a part;
a key that raises publishes nothing; a nested write (a key's ``__hash__``) lands and the
batch is built again on top of it; counts stay exact.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safemap import MISSING, PersistentMap

WAIT = 60.0  # seconds: reached only on a deadlock


def test_construction_takes_the_writer_lock_once_and_counts_every_insert() -> None:
    m = PersistentMap({i: i for i in range(1000)}, extra=1)
    s = m.stats()
    assert (len(m), s.inserts, s.updates, s.lock_acquisitions) == (1001, 1001, 0, 1)
    m.update([(1, "a"), (1, "b"), ("new", 0)])  # a later pair of the same key wins
    s = m.stats()
    assert (m[1], s.inserts, s.updates, s.lock_acquisitions) == ("b", 1002, 2, 2)


def test_readers_see_an_update_whole_or_not_at_all() -> None:
    n, rounds = 2000, 30
    m: PersistentMap[int, int] = PersistentMap()
    seen: set[int] = set()
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                seen.add(len(m))
                snap = m.snapshot()
                assert len(snap) in (0, n) and all(snap[k] == snap[0] for k in snap)
        except BaseException as e:  # reported below
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for r in range(rounds):
            m.update({k: r for k in range(n)})
            m.clear()
    finally:
        done.set()
        for t in readers:
            t.join(WAIT)
            assert not t.is_alive(), "deadlock"
    assert errors == []
    assert seen <= {0, n}


class Boom:
    def __hash__(self) -> int:
        raise ValueError("boom")


def test_a_key_that_raises_publishes_nothing() -> None:
    m = PersistentMap({"a": 1})
    with pytest.raises(ValueError, match="boom"):
        m.update([("b", 2), (Boom(), 3), ("c", 4)])
    assert dict(m.items()) == {"a": 1}
    assert m.stats().inserts == 1


def test_a_sentinel_value_stores_nothing() -> None:
    m = PersistentMap({"a": 1})
    with pytest.raises(TypeError):
        m._store_items([("b", 2), ("c", MISSING)])
    with pytest.raises(TypeError):
        m._store_items([("b", 2, 3)])  # type: ignore[list-item]
    assert dict(m.items()) == {"a": 1}


def test_a_nested_write_lands_and_the_batch_is_built_on_top() -> None:
    m: PersistentMap[Any, Any] = PersistentMap({"x": 0})
    calls = []

    class Writer:
        def __hash__(self) -> int:
            calls.append(1)
            if len(calls) == 1:
                m["side"] = "nested"  # the batch sees the version change and rebuilds
            return 7

        def __eq__(self, other: object) -> bool:
            return other is self

    w = Writer()
    m.update([("a", 1), (w, 2), ("x", 3)])
    assert len(calls) == 2  # the batch was built twice
    assert dict(m.items()) == {"x": 3, "side": "nested", "a": 1, w: 2}
    s = m.stats()
    assert (s.inserts, s.updates) == (1 + 1 + 2, 1)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.integers(-50, 50) | st.text(max_size=3), st.integers()),
    st.lists(st.tuples(st.integers(-50, 50) | st.text(max_size=3), st.integers())),
)
def test_update_matches_dict(start: dict[Any, int], pairs: list[tuple[Any, int]]) -> None:
    m = PersistentMap(start)
    kept = m.snapshot()
    m.update(pairs)
    expected = dict(start)
    expected.update(pairs)
    assert dict(m.items()) == expected and len(m) == len(expected)
    assert dict(kept.items()) == start  # the old version is untouched
    s = m.stats()
    assert s.inserts == len(expected)
    assert s.updates == len(start) + len(pairs) - len(expected)


def test_construction_from_a_dict_refuses_a_sentinel_before_storing() -> None:
    with pytest.raises(TypeError):
        PersistentMap({"a": 1, "b": MISSING})
    m = PersistentMap({"a": 1}, b=2)  # keywords take update()'s path
    assert dict(m.items()) == {"a": 1, "b": 2} and m.stats().lock_acquisitions == 1


def test_a_dict_is_stored_from_a_private_copy() -> None:
    source: dict[Any, Any] = {}

    class Grows:
        def __hash__(self) -> int:
            source[object()] = 0  # changes the caller's dict while the batch is built
            return 1

        def __eq__(self, other: object) -> bool:
            return other is self

    g = Grows()
    source.update({"a": 1, g: 2, "b": 3})
    size = len(source)  # (g's hash ran once already: one extra key)
    m = PersistentMap(source)  # the dict's items at the call, whatever its keys do
    assert len(source) > size and len(m) == size and m["a"] == 1 and m["b"] == 3
    with pytest.raises(TypeError):
        m._store_items({"c": 1, "d": MISSING})
    with pytest.raises(ValueError, match="boom"):
        m._store_items({"c": 1, Boom(): 2})
    assert len(m) == size and "c" not in m
    m._store_items({})
    assert m.stats().lock_acquisitions == 1  # the construction only
