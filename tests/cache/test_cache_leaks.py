"""Cache: no reference leak over a million operations (traced memory stays flat).

Every path of the native cache that takes or drops references runs many times: hits and
misses, inserts that evict (``on_evict`` receives the key and value), updates, removals,
loads that succeed and loads that raise, scoped entries, whole-map reads, transactions
and a ``@cached`` function. (Not ``bind(..., ttl=...)``: a ttl binding keeps its value
until its deadline, even once the key holds another value, whatever the map, since a
binding follows its object, which may be stored under the key again (docs/scoped.md):
rebinding one key retains every earlier value for the ttl's length.) A leak of one object
per round would raise the traced memory by at least 16 bytes per round; its floor over the
last quarter of the rounds must stay within a small bound of the second quarter's.
"""

from __future__ import annotations

import contextlib
import gc
import operator
import os
import tracemalloc
from typing import Any

import pytest

import safemap
from safemap import DELETE


class Boom(Exception):
    pass


def _fail(_key: object) -> object:
    raise Boom


def _every_op_once(c: safemap.Cache[Any, Any], cached: Any, i: int) -> None:
    k, k2 = i % 97, f"s{i % 89}"
    c[k] = i
    c[k2] = [i]
    _ = c.get(k), c.get(k2), c.get(-1), k in c, c.load(k), c.load(-1)
    c.store(k, [i])
    c.load_or_store(("t", i % 5), i)
    c.setdefault(("d", i % 3), [])
    c.swap(k, i)
    c.compare_and_swap(k, i, i + 1)
    c.compare_and_delete(k2, "not it")
    c.compute(k2, lambda kk, old: [old, i] if i % 3 else DELETE)
    c.compute_if_absent(("cia", i % 11), lambda kk: [kk])
    c.compute_if_present(k, lambda kk, old: old + 1)
    c.merge("counter", 1, operator.add)
    c.get_or_compute(("load", i % 131), lambda kk: [kk])
    with contextlib.suppress(Boom):
        c.get_or_compute(("fail", i % 7), _fail)
    c.pop(("t", i % 5), None)
    c.load_and_delete(("d", i % 3))
    c.delete(k)
    with contextlib.suppress(KeyError):
        del c[k]
    cached(i % 151)
    if i % 50 == 0:
        with c.scoped(("scope", i % 3), [i]):
            _ = c.get(("scope", i % 3))
        _ = list(c), list(c.items()), list(c.values()), c.snapshot(), len(c), c.stats()
        c.transaction(lambda v: v.update({"tx": [i]}))
        c.delete_if(lambda kk, v: isinstance(kk, tuple) and kk[0] == "cia")
        c.copy()
    if i % 400 == 0:
        c.clear()


def _floor(c: safemap.Cache[Any, Any], cached: Any, start: int, rounds: int) -> int:
    """Run ``rounds`` rounds; the least traced memory seen at every 500th. On free-threaded
    builds memory that other objects freed is returned only after a grace period (the
    interpreter's deferred frees), so one reading may be up to ~130 KiB high; the least of
    many is not, while a leak raises every reading."""
    least = None
    for i in range(start, start + rounds):
        _every_op_once(c, cached, i)
        if i % 500 == 499:
            gc.collect()
            now, _ = tracemalloc.get_traced_memory()
            least = now if least is None else min(least, now)
    assert least is not None
    return least


@pytest.mark.usefixtures("frozen_heap")
@pytest.mark.parametrize("policy", ["tinylfu", "lru"])
def test_no_reference_leak_over_a_million_operations(policy: str) -> None:
    """About 25 operations per round; 40,000 rounds by default (a million operations),
    SAFEMAP_REFLEAK_ROUNDS overrides it. The cache holds 64 entries, so most inserts
    evict, and ``on_evict`` keeps only a count (not the evicted objects). The floor of the
    traced memory over the last quarter of the rounds is compared with the second
    quarter's: a leak of one object per round would raise it by at least
    ``rounds / 2 * 16`` bytes."""
    rounds = int(os.environ.get("SAFEMAP_REFLEAK_ROUNDS", "40000"))
    evicted = [0]

    def on_evict(_key: object, _value: object, _cause: str) -> None:
        evicted[0] += 1

    c: safemap.Cache[Any, Any] = safemap.Cache(64, ttl=3600, policy=policy, on_evict=on_evict)

    @safemap.cached(maxsize=32, policy=policy)
    def cached(x: int) -> list[int]:
        return [x]

    for i in range(2000):  # warm up: free lists, the table's and the sketch's sizes
        _every_op_once(c, cached, i)
    gc.collect()
    quarter = rounds // 4
    tracemalloc.start()
    try:
        for i in range(quarter):
            _every_op_once(c, cached, i)
        early = _floor(c, cached, quarter, quarter)
        for i in range(2 * quarter, 3 * quarter):
            _every_op_once(c, cached, i)
        late = _floor(c, cached, 3 * quarter, quarter)
    finally:
        tracemalloc.stop()
    assert evicted[0] > rounds  # the eviction path ran, many times
    assert len(c) <= 64
    assert late - early < 64 * 1024, (early, late)
