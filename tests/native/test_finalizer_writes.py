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
