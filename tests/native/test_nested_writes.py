"""Regressions for writes nested inside writes (ConcurrentMap) and reads nested inside a
locked lookup (SyncMap).

* ConcurrentMap: a value's ``__del__`` runs when a write releases the value it replaced; a
  write from that ``__del__`` may itself release a value whose ``__del__`` writes, at any
  depth.  Each write must complete exactly once: exact ``len``, the lock released once (a
  later re-entrant write raises instead of deadlocking, a compute stays exclusive, and a
  snapshot from another shard's callback terminates).
* SyncMap: a read from a key's ``__eq__`` while the map's mutex is held (a locked lookup)
  must not move keys under that lookup: every operation answers as if the read had not
  happened.

Every wait has a timeout whose expiry means a deadlock, never "too slow".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from safemap import MISSING, RecursiveUpdateError
from safemap.native import ConcurrentMap, SyncMap

WAIT = 30.0


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run fn in a thread; a thread still running after WAIT seconds is a deadlock."""
    out: list[Any] = []

    def body() -> None:
        try:
            out.append(("ok", fn()))
        except BaseException as exc:
            out.append(("err", exc))

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(WAIT)
    assert not t.is_alive(), "deadlock"
    kind, val = out[0]
    if kind == "err":
        raise val
    return val


def chain(m: ConcurrentMap, depth: int) -> list[str]:
    """Store values so that `m["k0"] = 0` starts `depth` nested writes, each from the
    __del__ of the value the previous one replaced; returns the keys expected after."""

    class V:
        def __init__(self, nxt: str | None) -> None:
            self.nxt = nxt

        def __del__(self) -> None:
            if self.nxt is not None:
                m[self.nxt] = 0

    keys = [f"k{i}" for i in range(depth + 1)]
    # k{depth-1}'s value writes a new key; each earlier key's value overwrites the next key
    m[keys[depth - 1]] = V("new")
    for i in range(depth - 2, -1, -1):
        m[keys[i]] = V(keys[i + 1])
    m[keys[0]] = 0  # write -> __del__ write -> ... (depth writes in all)
    return sorted([*keys[:depth], "new"])


@pytest.mark.parametrize("shards", [1, 4])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 6])
def test_del_write_chain_completes_each_write_once(depth: int, shards: int) -> None:
    m = ConcurrentMap(shards=shards)
    expected = chain(m, depth)
    assert sorted(m) == expected
    assert len(m) == len(expected)
    assert sum(s.entries for s in m._collect_stats().shards) == len(expected)
    # the lock is held by no one: a re-entrant write raises (a stray unlock made the held
    # count negative and this hung), and a plain write after it works
    with pytest.raises(RecursiveUpdateError):
        in_thread(lambda: m.compute("x", lambda k, v: m.__setitem__("y", 1)))
    assert "x" not in m and "y" not in m
    in_thread(lambda: m.__setitem__("z", 1))
    assert len(m) == len(expected) + 1


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_del_write_chain_then_snapshot_from_callback_terminates(depth: int) -> None:
    # every shard's version must be even again: a snapshot taken from a compute callback
    # (which retries instead of locking) would otherwise retry forever
    m = ConcurrentMap(shards=8)
    expected = chain(m, depth)
    seen: list[dict[Any, Any]] = []
    in_thread(lambda: m.compute("other", lambda k, v: seen.append(dict(m.snapshot())) or 1))
    assert sorted(seen[0]) == expected


# ---------------------------------------------------------------- SyncMap, nested reads


class K:
    """A key with a fixed hash whose __eq__ runs one pending hook (a re-entrant read)."""

    hook: ClassVar[list[Callable[[], Any] | None]] = [None]

    def __init__(self, n: str) -> None:
        self.n = n

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        h, K.hook[0] = K.hook[0], None
        if h is not None:
            h()
        return isinstance(other, K) and self.n == other.n

    def __repr__(self) -> str:
        return f"K({self.n!r})"


# op(m, key) -> result; expected result; expected contents afterwards (by K.n)
SYNC_OPS: dict[str, tuple[Callable[[Any, Any], Any], Any, dict[str, int]]] = {
    "setitem": (lambda m, k: m.__setitem__(k, 2), None, {"a": 2}),
    "getitem": (lambda m, k: m[k], 1, {"a": 1}),
    "get": (lambda m, k: m.get(k), 1, {"a": 1}),
    "contains": (lambda m, k: k in m, True, {"a": 1}),
    "load": (lambda m, k: m.load(k), (1, True), {"a": 1}),
    "pop": (lambda m, k: m.pop(k, None), 1, {}),
    "load_and_delete": (lambda m, k: m.load_and_delete(k), (1, True), {}),
    "load_or_store": (lambda m, k: m.load_or_store(k, 2), (1, True), {"a": 1}),
    "setdefault": (lambda m, k: m.setdefault(k, 2), 1, {"a": 1}),
    "swap": (lambda m, k: m.swap(k, 2), (1, True), {"a": 2}),
    "compare_and_swap": (lambda m, k: m.compare_and_swap(k, 1, 2), True, {"a": 2}),
    "compare_and_delete": (lambda m, k: m.compare_and_delete(k, 1), True, {}),
    "compute": (
        lambda m, k: m.compute(k, lambda _k, v: -1 if v is MISSING else v + 1),
        2,
        {"a": 2},
    ),
    "compute_if_absent": (lambda m, k: m.compute_if_absent(k, lambda _k: 5), 1, {"a": 1}),
    "compute_if_present": (lambda m, k: m.compute_if_present(k, lambda _k, v: v + 1), 2, {"a": 2}),
    "merge": (lambda m, k: m.merge(k, 10, lambda a, b: a + b), 11, {"a": 11}),
}


@pytest.mark.parametrize("hook_kind", ["miss", "iterate", "snapshot", "hit"])
@pytest.mark.parametrize("op", list(SYNC_OPS))
def test_sync_map_read_from_key_eq_during_locked_lookup(op: str, hook_kind: str) -> None:
    fn, expected, after = SYNC_OPS[op]
    m: SyncMap[Any, Any] = SyncMap()
    a1, a2 = K("a"), K("a")
    m[a1] = 1  # in dirty: the next lookup of a2 compares with it under the mutex
    hooks: dict[str, Callable[[], Any]] = {
        "miss": lambda: m.get("absent"),  # a miss would promote dirty into read
        "iterate": lambda: list(m),
        "snapshot": lambda: m.snapshot(),
        "hit": lambda: m.get(a1),
    }
    K.hook[0] = hooks[hook_kind]
    try:
        assert in_thread(lambda: fn(m, a2)) == expected
    finally:
        K.hook[0] = None
    assert len(m) == len(after)
    assert {k.n: v for k, v in m.items()} == after
    assert dict(m.snapshot()) == ({a1: after["a"]} if after else {})
    # every later operation sees the same single entry
    for _ in range(3):
        assert (a1 in m) == bool(after)
        assert m.get(a2) == after.get("a")
