"""Writes from finalizers that run while the same thread is inside a plain write.

The protocol refuses a nested write only inside a compute-family callback or a transaction.
A finalizer (a ``__del__`` of cyclic garbage, run by a collection that an allocation inside
the map's own write triggers) that writes to the map while the thread is inside a plain
write must land, on every native map. On CPython 3.11 a collection runs inside the
allocation that triggers it, so with ``gc.set_threshold(1)`` collections run inside the
map's writes (SyncMap used to allocate its entry while holding its mutex and refused the
finalizer's write); on later versions the collection runs at the next bytecode boundary, and
the same test checks that the writes land there.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from safemap import RecursiveUpdateError
from safemap.native import ConcurrentMap, SyncMap

ROUNDS = 300


class Garbage:
    """Cyclic garbage whose ``__del__`` writes its own key into the map."""

    def __init__(self, m: Any, key: Any, errors: list[BaseException]) -> None:
        self.me = self
        self.m, self.key, self.errors = m, key, errors

    def __del__(self) -> None:
        try:
            self.m[self.key] = True
        except BaseException as exc:  # recorded: the test asserts there is none
            self.errors.append(exc)


def _writes(m: Any) -> dict[str, Callable[[Any], object]]:
    """Every plain write kind, each inserting a new key (the path that allocates)."""
    return {
        "setitem": lambda k: m.__setitem__(k, 1),
        "store": lambda k: m.store(k, 1),
        "swap": lambda k: m.swap(k, 1),
        "load_or_store": lambda k: m.load_or_store(k, 1),
        "setdefault": lambda k: m.setdefault(k, 1),
        "update": lambda k: m.update({k: 1}),
        "pop": lambda k: (m.__setitem__(k, 1), m.pop(k)),
        "delete": lambda k: (m.__setitem__(k, 1), m.delete(k)),
        "compare_and_swap": lambda k: (m.__setitem__(k, 1), m.compare_and_swap(k, 1, 2)),
        "compare_and_delete": lambda k: (m.__setitem__(k, 1), m.compare_and_delete(k, 1)),
    }


@pytest.fixture
def gc_often() -> Iterator[None]:
    old = gc.get_threshold()
    gc.collect()
    gc.set_threshold(1)
    try:
        yield
    finally:
        gc.set_threshold(*old)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(_writes(SyncMap())))
@pytest.mark.parametrize("map_type", [ConcurrentMap, SyncMap])
def test_finalizer_write_during_a_plain_write_lands(
    map_type: type, kind: str, gc_often: None
) -> None:
    m = map_type()
    write = _writes(m)[kind]
    errors: list[BaseException] = []
    keys = [("key", i) for i in range(ROUNDS)]  # built before: no allocation in the loop
    for i in range(ROUNDS):
        Garbage(m, ("del", i), errors)  # garbage at once: a cycle only gc frees
        write(keys[i])
        if i % 7 == 0:
            m.get(("key", 0))  # reads (locked ones too, on SyncMap) in between
    gc.set_threshold(700)
    gc.collect()
    assert errors == []
    assert all(("del", i) in m for i in range(ROUNDS))
    writes_left = kind not in {"pop", "delete", "compare_and_delete"}
    assert len(m) == ROUNDS * (1 + writes_left)


class StoredKey:
    """A key whose stored copy writes to the map when it is freed (by the map's delete)."""

    def __init__(self, m: Any, n: int, stored: bool, errors: list[BaseException]) -> None:
        self.m, self.n, self.stored, self.errors = m, n, stored, errors

    def __hash__(self) -> int:
        return 7  # every key collides: the delete's lookup compares with __eq__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoredKey) and other.n == self.n

    def __del__(self) -> None:
        if self.stored:
            try:
                self.m[("del", self.n)] = True
            except BaseException as exc:  # recorded: the test asserts there is none
                self.errors.append(exc)


DELETES: dict[str, Callable[[Any, Any], object]] = {
    "pop": lambda m, k: m.pop(k),
    "delete": lambda m, k: m.delete(k),
    "delitem": lambda m, k: m.__delitem__(k),
    "load_and_delete": lambda m, k: m.load_and_delete(k),
}


@pytest.mark.parametrize("where", ["ConcurrentMap", "SyncMap read", "SyncMap dirty"])
@pytest.mark.parametrize("kind", sorted(DELETES))
def test_stored_key_del_writing_during_a_delete_lands(kind: str, where: str) -> None:
    """The delete drops the map's reference to the stored key (an equal but distinct object)
    while it finishes; that key's ``__del__`` writes to the map, which must land."""
    m: Any = ConcurrentMap(shards=1) if where == "ConcurrentMap" else SyncMap()
    errors: list[BaseException] = []
    m[StoredKey(m, 1, True, errors)] = 0  # only the map references the stored key
    m["other"] = 0
    if where == "SyncMap read":
        for _ in range(3):
            m.get(StoredKey(m, 1, False, errors))  # misses promote the keys to read
        assert m._stats_raw()["dirty_size"] == 0
    elif where == "SyncMap dirty":
        assert m._stats_raw()["read_size"] == 0
    DELETES[kind](m, StoredKey(m, 1, False, errors))
    assert errors == []
    assert m.get(("del", 1)) is True
    assert StoredKey(m, 1, False, errors) not in m
    assert len(m) == 2 == len(list(m))
    m[StoredKey(m, 2, False, errors)] = 0  # healthy: the lock was released exactly once
    with pytest.raises(RecursiveUpdateError):
        m.compute("other", lambda k, v: m.store("x", 1))
