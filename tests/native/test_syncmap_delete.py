"""SyncMap's delete path: a delete removes the key from ``read`` within the call (Go leaves
it there for a later sweep; safemap releases removed keys when the call returns), so that
no in-place writer writes to a removed entry (it finds the entry's key gone and takes the
mutex).

Checked with a key whose ``__eq__`` raises or blocks at each comparison the delete makes
(the lock-free lookup, the locked lookup that also finds the entry to remove), alone and
against a concurrent in-place writer of the same key: the result is always one of the
linearizable outcomes, and ``read``/``dirty`` never keep a dead entry.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from safemap.native import SyncMap

WAIT = 30.0  # only ever reached on a deadlock


class Boom(Exception):
    pass


class Key:
    """Colliding keys (one hash); the n-th comparison (counting from arm()) runs `action`."""

    countdown = 0
    action: Callable[[], None] | None = None

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        return 42

    def __eq__(self, other: object) -> bool:
        if Key.action is not None:
            Key.countdown -= 1
            if Key.countdown == 0:
                act, Key.action = Key.action, None
                act()
        return isinstance(other, Key) and self.name == other.name

    @classmethod
    def arm(cls, n: int, action: Callable[[], None]) -> None:
        cls.countdown, cls.action = n, action

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


def promoted(*pairs: tuple[Any, Any]) -> SyncMap[Any, Any]:
    m: SyncMap[Any, Any] = SyncMap()
    for k, v in pairs:
        m[k] = v
    list(m)  # iteration promotes: every key is in read
    st = m._stats_raw()
    assert st["read_size"] == len(pairs) and st["dirty_size"] == 0
    return m


def no_dead_entries(m: SyncMap[Any, Any]) -> None:
    st = m._stats_raw()
    assert st["read_size"] + st["dirty_size"] == len(m) == len(list(m))


def raise_boom() -> None:
    raise Boom


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("how", ["del", "pop", "load_and_delete", "compare_and_delete"])
def test_delete_with_raising_eq_is_all_or_nothing(how: str, n: int) -> None:
    a, b = Key("a"), Key("b")
    m = promoted((a, 1), (b, 2))
    ops: dict[str, Callable[[], Any]] = {
        "del": lambda: m.__delitem__(b),
        "pop": lambda: m.pop(b),
        "load_and_delete": lambda: m.load_and_delete(b),
        "compare_and_delete": lambda: m.compare_and_delete(b, 2),
    }
    Key.arm(n, raise_boom)
    try:
        ops[how]()
        raised = False
    except Boom:
        raised = True
    finally:
        Key.action = None
    if raised:
        assert {k.name: v for k, v in m.items()} == {"a": 1, "b": 2}
        assert m[b] == 2
    else:
        assert {k.name: v for k, v in m.items()} == {"a": 1}
        assert b not in m
    no_dead_entries(m)
    # the map stays fully usable: the key can be stored (again) and deleted
    m[b] = 3
    assert m.pop(b) == 3 and b not in m
    no_dead_entries(m)


def test_deleted_key_is_released_when_the_call_returns() -> None:
    a, b = Key("a"), Key("b")
    m = promoted((a, 1), (b, 2))
    ref = weakref.ref(b)
    stored = b
    del b
    assert m.pop(Key("b")) == 2
    del stored
    gc.collect()
    assert ref() is None
    no_dead_entries(m)


def test_hash_raising_changes_nothing() -> None:
    class BadHash:
        def __hash__(self) -> int:
            raise Boom

    m = promoted((1, 1))
    for op in (m.__delitem__, m.pop, m.load_and_delete, m.delete):
        with pytest.raises(Boom):
            op(BadHash())
    assert dict(m.items()) == {1: 1}
    no_dead_entries(m)


@pytest.mark.parametrize("n", [1, 2])
def test_delete_blocked_in_eq_against_in_place_writer(n: int) -> None:
    """While the delete of `b` is blocked in a comparison, another thread stores to `b`
    (in place when it finds the entry) and reads `a` (lock-free, must not wait).  The
    outcome is linearizable: the store lands before the delete (delete returns 3, `b`
    absent) or after it (delete returns 2, `b` present with 3)."""
    a, b = Key("a"), Key("b")
    m = promoted((a, 1), (b, 2))
    blocked, release = threading.Event(), threading.Event()
    result: list[Any] = []

    def block() -> None:
        blocked.set()
        assert release.wait(WAIT)

    def deleter() -> None:
        result.append(m.pop(b))

    Key.arm(n, block)
    t = threading.Thread(target=deleter, daemon=True)
    t.start()
    try:
        assert blocked.wait(WAIT), "the delete never reached the comparison"
        # the writer compares keys too: its comparisons must not run the hook (disarmed)
        reader_done = threading.Event()

        def reader() -> None:
            assert m.get(a) == 1  # lock-free read of another key: never blocked
            reader_done.set()

        r = threading.Thread(target=reader, daemon=True)
        r.start()
        r.join(WAIT)
        assert reader_done.is_set(), "a read waited for the blocked delete"
        w = threading.Thread(target=lambda: m.__setitem__(b, 3), daemon=True)
        w.start()
    finally:
        release.set()
    t.join(WAIT)
    w.join(WAIT)
    assert not t.is_alive() and not w.is_alive(), "deadlock"
    after = {k.name: v for k, v in m.items()}
    assert (result[0], after) in ((3, {"a": 1}), (2, {"a": 1, "b": 3}))
    no_dead_entries(m)
