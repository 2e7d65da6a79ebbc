"""Iteration racing delete-and-reinsert: no key is yielded twice.

A removed key's table entry is never reused: re-inserting the key appends a new entry. So an
iteration that copies a table entry by entry while a writer removes a key it has already
copied and inserts it again could meet the key a second time, further on (this happened on
free-threaded 3.14, where the copy takes no lock). The contract (weakly consistent
iteration): a key removed or inserted during the iteration is yielded at most once, a key
present throughout exactly once.

With one shard every re-insert lands in the table being copied; the default shards and
SyncMap are checked too. Exact invariants per pass: no duplicate key, every stable key
present, only keys that were ever stored. Runs on every build; it can only fail where the
copy races writers (free-threaded builds), which is where it matters."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from safemap.native import ConcurrentMap, SyncMap

STABLE = range(0, 64)
VOLATILE = range(1000, 1064)
PASSES = 400
GUARD = 120.0


MAPS = [
    pytest.param(lambda d: ConcurrentMap(d, shards=1), id="ConcurrentMap-1-shard"),
    pytest.param(lambda d: ConcurrentMap(d), id="ConcurrentMap"),
    pytest.param(SyncMap, id="SyncMap"),
]


@pytest.mark.parametrize("make", MAPS)
@pytest.mark.parametrize("kind", ["keys", "items", "values", "range"])
def test_no_key_twice_while_keys_are_removed_and_reinserted(
    make: Callable[[dict[int, Any]], Any], kind: str
) -> None:
    m = make({k: ("s", k) for k in STABLE} | {k: ("v", k) for k in VOLATILE})
    done = threading.Event()
    errors: list[str] = []

    def writer(offset: int) -> None:
        try:
            i = offset
            while not done.is_set():
                # int(str(...)) makes a new, equal key object each time: a re-insert
                # must be recognised by equality, not identity.
                k = int(str(VOLATILE[(i * 7) % len(VOLATILE)]))
                i += 1
                if m.pop(k, None) is not None:
                    m[k] = ("v", k)
                else:
                    m.setdefault(k, ("v", k))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(f"writer: {exc!r}")

    def copy() -> list[Any]:
        if kind == "keys":
            return list(m)
        if kind == "items":
            items = list(m.items())
            for k, v in items:
                assert v == (("s" if k in STABLE else "v"), k), (k, v)
            return [k for k, _ in items]
        if kind == "values":
            values = list(m.values())
            return [v[1] for v in values]
        seen: list[Any] = []
        m.range(lambda k, v: seen.append(k))
        return seen

    writers = [threading.Thread(target=writer, args=(o,)) for o in (0, 31)]
    for t in writers:
        t.start()
    try:
        for _ in range(PASSES):
            keys = copy()
            assert len(keys) == len(set(keys)), "a key was yielded twice"
            assert set(STABLE) <= set(keys), sorted(set(STABLE) - set(keys))[:5]
            assert set(keys) <= set(STABLE) | set(VOLATILE)
    finally:
        done.set()
        for t in writers:
            t.join(GUARD)
    assert not any(t.is_alive() for t in writers)
    assert not errors, errors
