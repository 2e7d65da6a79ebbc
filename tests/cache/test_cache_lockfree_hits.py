"""safemap.Cache's lock-free hits (docs/cache.md, "Free-threaded CPython"): a hit finds
the entry without taking a reference to it, the notes of accesses hold none either, and
a value read while writers replace, delete and evict the key is always one a write
stored for that key, never freed memory. On free-threaded builds the values are fresh
objects only the cache references, so a reader that took its reference too late would
read a freed object (a crash, or an AddressSanitizer report)."""

from __future__ import annotations

import gc
import itertools
import sys
import threading
import weakref
from typing import Any

import pytest
from support.cacherace import Box, writers_then_readers

import safemap

RING = 16  # SMC_RB_SEG: a reader that writes the last note of a segment drains


def nodes_of(c: Any) -> list[Any]:
    """The cache's entry nodes (internal objects, reached through the collector)."""
    out: list[Any] = []
    for o in gc.get_referents(c):
        if type(o).__name__ == "CacheNode":
            out.append(o)
        elif isinstance(o, dict):  # a dict-backed cache keeps its nodes in a dict
            out.extend(v for v in o.values() if type(v).__name__ == "CacheNode")
    return out


@pytest.mark.parametrize("policy", ["tinylfu", "lru"])
def test_hits_take_no_reference_to_the_entry(policy: str) -> None:
    """A hit leaves the entry's reference count as it was: on free-threaded builds every
    thread hitting a key would otherwise write the same count (what kept hits from
    scaling). Fewer hits than a ring holds, so no drain runs in between."""
    c: safemap.Cache[int, Box] = safemap.Cache(maxsize=100, policy=policy)
    c[1] = Box(1, 0)
    (node,) = nodes_of(c)
    before = sys.getrefcount(node)
    for _ in range(RING - 2):
        assert c[1].key == 1
    assert sys.getrefcount(node) == before
    c._maintain()  # the notes applied: still nothing held by them
    assert sys.getrefcount(node) == before


def test_notes_of_removed_entries_are_dropped_and_hold_nothing() -> None:
    """Notes recorded for entries that were then removed keep neither the value nor the
    key alive (the removal released them), and applying them later changes nothing."""
    c: safemap.Cache[Box, Box] = safemap.Cache(maxsize=1000)
    keys = [Box(-i, 0) for i in range(8)]
    refs = []
    for k in keys:
        v = Box(0, 0)
        refs.append(weakref.ref(v))
        c[k] = v
        del v
    for k in keys:
        assert c.get(k) is not None  # a note each, not yet applied (8 < RING)
    for k in keys:
        del c[k]
    assert all(r() is None for r in refs)
    kref = weakref.ref(keys[0])
    del keys
    assert kref() is None
    c._maintain()
    assert len(c) == 0
    c[Box(1, 1)] = Box(1, 1)
    c._maintain()
    assert len(c) == 1


@pytest.mark.parametrize("policy", ["tinylfu", "lru"])
def test_hits_racing_replacements_deletes_and_evictions(
    run_threads: Any, fast_switch: None, policy: str
) -> None:
    """Readers hit keys while writers replace, delete and evict them (and one clears the
    cache now and then). Every value read is a Box some write stored for that very key;
    the bound holds for every reader; nothing raises."""
    nkeys, maxsize, rounds = 64, 48, 4000
    c: safemap.Cache[int, Box] = safemap.Cache(maxsize=maxsize, policy=policy)
    serial = itertools.count(1)
    issued = [0]  # highest serial handed out so far (a reader may see no newer one)
    bad: list[object] = []

    def writer(i: int) -> None:
        for n in range(rounds):
            k = (n * 7 + i) % nkeys
            s = next(serial)
            issued[0] = max(issued[0], s)
            if n % 11 == 0:
                c.pop(k, None)
            elif n % 397 == 0 and i == 0:
                c.clear()
            else:
                c[k] = Box(k, s)  # fresh: only the cache references it

    def reader(i: int, done: threading.Event) -> None:
        keys = list(range(nkeys))
        while not done.is_set():
            for k in keys:
                v = c.get(k)
                if v is not None and (type(v) is not Box or v.key != k or v.serial < 1):
                    bad.append((k, v))
            if i == 0:
                items = list(c.items())
                if len(items) > maxsize or len({k for k, _ in items}) != len(items):
                    bad.append(("iteration", len(items)))
                if any(v.key != k for k, v in items):
                    bad.append(("item", items))

    writers_then_readers(
        run_threads,
        [lambda: writer(0), lambda: writer(1)],
        [lambda done: reader(0, done), lambda done: reader(1, done)],
        timeout=120,
    )
    assert bad == []
    assert len(c) <= maxsize
    assert all(v.key == k for k, v in c.items())


def test_iteration_sees_every_key_present_throughout(run_threads: Any, fast_switch: None) -> None:
    """Keys updated (each update replaces the entry) while another thread iterates: a key
    present from start to end is yielded exactly once, with a value stored for it."""
    nkeys = 200
    c: safemap.Cache[int, Box] = safemap.Cache(((k, Box(k, 0)) for k in range(nkeys)), maxsize=1000)
    done = threading.Event()
    bad: list[object] = []

    def writer() -> None:
        try:
            for n in range(20_000):
                k = n % nkeys
                c[k] = Box(k, n + 1)
        finally:
            done.set()

    def iterator() -> None:
        while not done.is_set():
            items = list(c.items())
            keys = [k for k, _ in items]
            if sorted(keys) != list(range(nkeys)):
                bad.append(len(keys))
            if any(v.key != k for k, v in items):
                bad.append("value")

    run_threads([writer, iterator], timeout=120)
    assert bad == []


def test_one_thread_drains_while_it_keeps_draining() -> None:
    """Free-threaded builds: while one thread keeps applying the access notes, another
    reader whose ring fills leaves them to it (no lock taken), so the policy's memory is
    written from one core; its notes are applied by that thread's next drain. Three
    readers in turn: threads get consecutive rings, so at most one shares the drainer's,
    and that one drains itself (the drainer would overwrite its notes before its next
    drain). On GIL builds (one ring) each reader applies its notes itself. Either way no
    note is lost here. The readers stay alive until all are done: a thread that ended
    may pass its identity on to the next one, which then counts as the drainer."""
    c: safemap.Cache[int, int] = safemap.Cache(maxsize=5, policy="lru")
    for k in range(5):
        c[k] = k  # least recently used first
    for i in range(RING):  # this thread fills its ring: it drains, and becomes the drainer
        assert c[3 + i % 2] == 3 + i % 2
    before = c.stats().lock_acquisitions

    done = [threading.Event() for _ in range(3)]
    release = threading.Event()

    def other(k: int) -> None:
        if k > 0:
            done[k - 1].wait(30)  # one after another
        for _ in range(RING):  # one ring's worth: one fill
            assert c[k] == k
        done[k].set()
        release.wait(30)  # alive until all are done: each is a distinct thread

    ts = [threading.Thread(target=other, args=(k,)) for k in range(3)]
    for t in ts:
        t.start()
    assert done[2].wait(30)
    release.set()
    for t in ts:
        t.join(30)
        assert not t.is_alive()
    free_threaded = not getattr(sys, "_is_gil_enabled", lambda: True)()
    if free_threaded:
        assert c.stats().lock_acquisitions - before <= 1  # the others left it to the drainer
    for _ in range(RING):  # the next drain applies the other threads' notes
        assert c[4] == 4
    c[5] = 5  # evicts the least recently used: 3, not 0, 1 or 2 (the others used them)
    assert sorted(c) == [0, 1, 2, 4, 5]
