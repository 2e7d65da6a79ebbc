"""SyncMap: a read never misses a key that is present throughout it, while promotions run.

A new key goes into `dirty`; a read that misses `read` without the mutex may answer "absent"
only if `dirty` was empty. That must be judged from `amended` loaded BEFORE searching `read`:
loaded after, it can be the 0 a promotion stored after moving the key into `read` behind the
search, and the read misses a key that was present throughout it (seen on free-threaded 3.14
as ``(t, i) in m`` failing right after ``m[(t, i)] = i``).

The first test builds the race deterministically, on every build: a stored key's __eq__ runs
during the search and, from there, triggers a promotion that moves the key into an index
slot of `read` the search has already passed. The second is the threaded shape the bug was
seen in (it fails rarely on the old code, a few runs in a thousand): every thread stores
fresh keys, reads each back at once through a lock-free read path and deletes it, while
misses keep promotions frequent. Exact invariants: every read of a key stored before it
began finds it; exact counts at the end."""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable
from typing import Any

import pytest

from safemap.native import SyncMap

THREADS = 4
ROUNDS = 3000
GUARD = 120.0


class Colliding:
    """A key whose hash collides with every other Colliding key; equal by name.
    `on_eq` runs (once) when the map compares this stored key with another."""

    def __init__(self, name: str, on_eq: Any = None) -> None:
        self.name, self.on_eq = name, on_eq

    def __hash__(self) -> int:
        return 12345

    def __eq__(self, other: object) -> bool:
        hook, self.on_eq = self.on_eq, None
        if hook is not None:
            hook()
        return isinstance(other, Colliding) and other.name == self.name


READS: dict[str, Callable[[Any, Any], bool]] = {
    "in": lambda m, k: k in m,
    "get": lambda m, k: m.get(k) == "q",
    "getitem": lambda m, k: m[k] == "q",
    "load": lambda m, k: m.load(k) == ("q", True),
    "compare_and_swap": lambda m, k: m.compare_and_swap(k, "q", "q"),
}


@pytest.mark.parametrize("read", list(READS))
def test_read_finds_a_key_promoted_behind_its_search(read: str) -> None:
    a, q = Colliding("a"), Colliding("q")
    m: Any = SyncMap()
    # b's __eq__ runs during the search for q: a miss from there (dirty holds only q)
    # promotes q into read, into the index slot a's delete freed, which the search
    # has already passed.
    b = Colliding("b")
    m[a] = "a"
    list(m)  # promote a
    m[b] = "b"
    list(m)  # promote b: read's chain for the shared hash is a, b
    del m[a]  # a's slot is free again (the chain goes on past it)
    m[q] = "q"  # into dirty
    b.on_eq = lambda: m.get("absent")
    promotions = m._stats_raw()["promotions"]
    assert READS[read](m, Colliding("q"))
    assert m._stats_raw()["promotions"] == promotions + 1  # the race did happen
    assert dict(m.items()) == {b: "b", q: "q"}


@pytest.mark.timeout(180)
def test_own_stores_are_read_back_while_promotions_run() -> None:
    m: Any = SyncMap({("shared", i): 0 for i in range(64)})
    list(m)  # the shared keys promoted
    barrier = threading.Barrier(THREADS)
    errors: list[str] = []

    def work(t: int) -> None:
        try:
            barrier.wait(GUARD)
            for i in range(ROUNDS):
                shared = ("shared", i % 64)
                m[shared]  # a lock-free hit
                m.get(("absent", t, i))  # a miss: mutex, counts toward a promotion
                m[shared] = (t, i)  # in place in read, no mutex
                k = (t, i)
                m[k] = i  # into dirty
                how = i % 5  # read it back at once, each lock-free read path in turn
                if how == 0:
                    ok = k in m
                elif how == 1:
                    ok = m.get(k) == i
                elif how == 2:
                    ok = m.load(k) == (i, True)
                elif how == 3:
                    ok = m.compare_and_swap(k, i, i)
                else:
                    ok = m.pop(k, None) == i
                    m[k] = i
                if not ok:
                    errors.append(f"thread {t}: own key {k} not read back (path {how})")
                    return
                # Deleting leaves a removed entry in read's table (entries are never
                # reused), so promotions often rebuild the table.
                del m[k]
                m.merge("counter", 1, operator.add)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(f"thread {t}: {exc!r}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(GUARD)
    assert not any(th.is_alive() for th in threads)
    assert errors == []
    assert len(m) == 64 + 1
    assert m["counter"] == THREADS * ROUNDS
    assert m._stats_raw()["promotions"] > 0
