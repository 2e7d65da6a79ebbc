"""safemap.Cache's fast paths (docs/cache.md, "Measured"): the reuse of entry nodes, the
skipped drain of an empty ring, and the statistics and bound under racing hits, misses
and evictions. Each test asserts what a fast path must not change."""

from __future__ import annotations

import gc
import itertools
import sys
import threading
import weakref
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import safemap

RING = 16  # SMC_RB_SEG: a reader that writes the last note of a segment drains


class Value:
    """A value whose release a weak reference observes."""


def cache_nodes() -> int:
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "CacheNode")


# ------------------------------------------------------------------------ nodes


@pytest.mark.usefixtures("frozen_heap")
def test_a_million_misses_keep_one_node_per_entry() -> None:
    """Every miss + insert into a full cache drops a node and makes one (reused on GIL
    builds): after a million of them, the live nodes are exactly the entries and the
    interpreter holds no more memory blocks than after the first thousand."""
    maxsize = 1000
    m: safemap.Cache[int, int] = safemap.Cache(maxsize)
    get, store = m.get, m.store
    fresh = itertools.count()

    def misses(n: int) -> None:
        for _ in range(n):
            k = next(fresh)
            if get(k) is None:
                store(k, k)

    misses(10 * maxsize)
    gc.collect()
    blocks = sys.getallocatedblocks()
    misses(1_000_000)
    gc.collect()
    assert len(m) == maxsize
    assert cache_nodes() == maxsize
    # Ints beyond the small-int cache come and go; a node kept per miss would add a
    # million blocks.
    assert sys.getallocatedblocks() - blocks < 2000
    st_ = m.stats()
    assert st_.misses == 1_010_000 and st_.hits == 0
    assert st_.inserts - st_.deletes == maxsize
    assert st_.evictions_size == st_.deletes == 1_010_000 - maxsize


def test_dropped_caches_return_their_nodes() -> None:
    """Nodes kept for reuse are bounded: dropping a cache of 100,000 entries gives back
    (nearly) every block its nodes took."""
    gc.collect()
    blocks = sys.getallocatedblocks()
    m: safemap.Cache[int, int] = safemap.Cache(100_000)
    for k in range(100_000):
        m[k] = k
    del m
    gc.collect()
    assert sys.getallocatedblocks() - blocks < 1000


def test_evicted_values_are_released_at_once_when_nodes_are_reused() -> None:
    """A reused node holds nothing from its previous entry: every evicted value is freed
    as its eviction returns (no gc.collect), key and value both."""
    m: safemap.Cache[Any, Value] = safemap.Cache(100, policy="lru")
    refs: list[weakref.ref[Any]] = []
    for n in range(10_000):
        key, value = Value(), Value()
        refs.append(weakref.ref(key))
        refs.append(weakref.ref(value))
        m[key] = value
        del key, value
        if n >= 100:
            # The entry stored 100 inserts ago has just been evicted.
            assert refs[2 * (n - 100)]() is None and refs[2 * (n - 100) + 1]() is None
    assert sum(r() is not None for r in refs) == 2 * 100
    m.clear()
    assert all(r() is None for r in refs)


# ------------------------------------------------------------------------ rings


@pytest.mark.parametrize("hits", [0, 1, RING - 1, RING, RING + 1, 2 * RING + 3])
def test_hits_since_the_last_drain_count_before_the_next_eviction(hits: int) -> None:
    """A write drains the ring before it chooses a victim, whether or not a reader
    drained it just before: the key read last is never the one evicted by LRU."""
    m: safemap.Cache[int, int] = safemap.Cache(4, policy="lru")
    for k in range(4):
        m[k] = k
    for n in range(hits):
        assert m.get(n % 2) == n % 2  # keys 0 and 1; then 0 alone if hits == 1
    m[4] = 4  # evicts the least recently used
    (evicted,) = {0, 1, 2, 3, 4} - set(m)
    assert evicted == min(hits, 2)  # no hit: 0; get(0): 1; get(0), get(1), ...: 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 9)), max_size=120))
def test_lru_order_matches_a_model_across_drains(ops: list[tuple[bool, int]]) -> None:
    """Single thread, policy="lru": after any mix of hits and inserts (rings filled,
    drained by readers, drained by writers, or left part full), the cache holds what an
    exact LRU holds: no access lost or applied out of order."""
    maxsize = 4
    m: safemap.Cache[int, object] = safemap.Cache(maxsize, policy="lru")
    model: OrderedDict[int, object] = OrderedDict()
    for write, k in ops:
        if write:
            v = object()  # a new object: storing the very same one changes nothing
            m[k] = v
            model[k] = v
            model.move_to_end(k)
            if len(model) > maxsize:
                model.popitem(last=False)
        else:
            assert m.get(k) is model.get(k)
            if k in model:
                model.move_to_end(k)
    assert sorted(m) == sorted(model)


# ---------------------------------------------------------------- under threads


@pytest.mark.parametrize("policy", ["tinylfu", "lru"])
def test_racing_hits_misses_and_evictions_keep_exact_counts_and_the_bound(
    policy: str, run_threads: Any, fast_switch: None
) -> None:
    """Threads read keys of a range twice the bound and store what they miss, so rings
    fill and drain while writes evict. Every call is counted once (hits and misses as
    the threads saw them), on_evict runs once per eviction, and no reader ever sees
    more than maxsize entries."""
    maxsize, threads, rounds = 64, 6, 4000
    evicted: list[int] = []
    m: safemap.Cache[int, int] = safemap.Cache(
        maxsize, policy=policy, on_evict=lambda k, v, cause: evicted.append(k)
    )
    stop = threading.Event()
    worst: list[int] = []

    def watch() -> None:
        w = 0
        while not stop.is_set():
            w = max(w, len(m), len(m.snapshot()))
        worst.append(w)

    def work(i: int) -> tuple[int, int, int]:
        hits = misses = stored = 0
        for n in range(rounds):
            k = (n * 7 + i * 13) % (2 * maxsize)
            if m.get(k) is None:
                misses += 1
                if m.load_or_store(k, k)[1] is False:
                    stored += 1
            else:
                hits += 1
        return hits, misses, stored

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out = run_threads(work, threads, timeout=120)
    finally:
        stop.set()
        watcher.join(30)
    hits = sum(h for h, _, _ in out)
    misses = sum(x for _, x, _ in out)
    stored = sum(s for _, _, s in out)
    s = m.stats()
    # load_or_store reads once more when it finds the key: only get() is counted here.
    assert s.hits + s.misses == threads * rounds
    assert (s.hits, s.misses) == (hits, misses)
    assert s.inserts == stored
    assert s.inserts - s.deletes == len(m) <= maxsize
    assert s.evictions_size == s.deletes == len(evicted)
    assert len(worst) == 1 and worst[0] <= maxsize
