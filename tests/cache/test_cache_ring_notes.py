"""The notes a Cache hit leaves for the policy (docs/cache.md, "Free-threaded CPython"):
a note names the entry found (its index in the table and the low bits of the key's
hash), so the drainer applies it to the node that entry holds under the lock, or drops
it; on free-threaded builds a reader hands its notes to the draining thread in segments
of 16, and a write applies every note recorded so far, whole segment or not."""

from __future__ import annotations

import gc
import itertools
import queue
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from support.cacherace import Box, writers_then_readers

import safemap

SEG = 16  # SMC_RB_SEG: the reader that writes a segment's last note publishes it
FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()


class Worker:
    """A thread of its own (so its own stripe, hence its own ring) that runs the
    functions it is given one at a time, each before `run` returns."""

    def __init__(self) -> None:
        self._todo: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._done: queue.Queue[BaseException | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (fn := self._todo.get()) is not None:
            try:
                fn()
                self._done.put(None)
            except BaseException as e:  # re-raised in the caller
                self._done.put(e)

    def run(self, fn: Callable[[], None]) -> None:
        self._todo.put(fn)
        error = self._done.get(timeout=30)
        if error is not None:
            raise error

    def stop(self) -> None:
        self._todo.put(None)
        self._thread.join(30)
        assert not self._thread.is_alive()


@pytest.mark.skipif(not FREE_THREADED, reason="GIL builds: one ring, drained whole")
def test_the_drainer_applies_another_reader_s_notes_once_a_segment_is_published() -> None:
    """The drainer's reads apply another thread's notes only up to the end of that
    thread's last full segment (the lines it has finished writing), then all of them once
    the segment is complete; the other thread takes no lock. Two threads in turn, each on
    a ring of its own unless it shares the drainer's (threads get consecutive rings, so at
    most one of the two does; in the shared ring the drainer's own drain applies the notes
    at once): at least one of them shows its half segment waiting."""
    c: safemap.Cache[int, int] = safemap.Cache({0: 0, 1: 1, 2: 2}, maxsize=100)
    for _ in range(SEG):  # a full segment: this thread drains and becomes the drainer
        assert c[0] == 0
    waited = []
    for key in (1, 2):
        before = c._frequency(key)
        locks = c.stats().lock_acquisitions

        def half_segment(key: int = key) -> None:
            for _ in range(SEG // 2):
                assert c[key] == key

        other = Worker()  # alive throughout: its identity is not passed on
        try:
            other.run(half_segment)
            for _ in range(SEG):  # the drainer's next drain
                assert c[0] == 0
            waited.append(c._frequency(key) == before)
            other.run(half_segment)  # completes the segment: published, left to the drainer
            for _ in range(SEG):
                assert c[0] == 0
            assert c._frequency(key) > before  # applied by the drainer's drain
            # The drainer's two drains and the two _frequency() reads: none by the other.
            assert c.stats().lock_acquisitions - locks == 4
        finally:
            other.stop()
    assert any(waited)


@pytest.mark.parametrize("policy", ["tinylfu", "lru"])
def test_a_write_applies_every_note_recorded_so_far(policy: str) -> None:
    """A note not yet published (fewer than a segment of hits in another thread) still
    counts before a write chooses its victim: the write drains every ring to its end."""
    c: safemap.Cache[int, int] = safemap.Cache(maxsize=4, policy=policy)
    for k in range(4):
        c[k] = k  # 0 is the least recently used
    for _ in range(3):
        for k in (1, 2, 3, 1, 2, 3):  # frequent: worth keeping under tinylfu too
            assert c[k] == k
    c._maintain()

    def touch() -> None:
        assert c[0] == 0  # one note, far from a segment's end

    other = Worker()
    other.run(touch)
    other.stop()
    c[4] = 4
    if policy == "lru":
        assert sorted(c) == [0, 2, 3, 4]  # 1 was the least recently used
    else:
        assert 0 in c or c._frequency(0) >= 1  # the note reached the policy
        assert len(c) == 4


def test_notes_of_entries_removed_or_replaced_are_dropped() -> None:
    """Notes taken before the entry they name was deleted, or before the table was
    rebuilt (a rebuild compacts the entries into a new table), are applied to no other
    key: the drain finds the entry empty or holding a key of another hash. Here, keys
    inserted after the deletes reuse the table's indices of the deleted ones only after
    a rebuild, and their hashes differ from the deleted keys'."""
    c: safemap.Cache[int, int] = safemap.Cache(maxsize=1000, policy="lru")
    for k in range(8):
        c[k] = k
    for k in range(8):
        assert c[k] == k  # 8 notes, not yet applied (8 < SEG)
    for k in range(8):
        del c[k]
    c.clear()
    for k in range(100, 108):
        c[k] = k  # the first write drains the notes: their entries are gone
    assert list(c) == list(range(100, 108))
    c._maintain()
    assert len(c) == 8
    c[200] = 200
    assert len(c) == 9


@pytest.mark.parametrize("policy", ["tinylfu", "lru"])
def test_hits_across_rebuilds_updates_and_clears(
    run_threads: Any, fast_switch: None, policy: str
) -> None:
    """Readers hit keys while writers insert and delete enough keys to rebuild the table
    over and over, update keys (a new node in the same entry) and clear the cache now and
    then, so notes name entries of tables since replaced, of entries since emptied or
    updated. Every value read was stored for its key; the bound holds; the statistics
    count every read; on_evict reports each evicted value once; and once the cache is
    cleared nothing it stored is alive."""
    nkeys, maxsize, rounds, readers = 96, 48, 3000, 2
    evicted: list[int] = []
    c: safemap.Cache[int, Box] = safemap.Cache(
        maxsize=maxsize, policy=policy, on_evict=lambda k, v, cause: evicted.append(v.serial)
    )
    serial = itertools.count(1)
    refs: list[weakref.ref[Box]] = []
    bad: list[object] = []
    reads = [0] * readers

    def writer(i: int) -> None:
        for n in range(rounds):
            k = (n * 13 + i * 7) % nkeys
            if n % 5 == 0:
                c.pop(k, None)
            elif n % 601 == 0 and i == 0:
                c.clear()
            else:
                v = Box(k, next(serial))
                refs.append(weakref.ref(v))
                c[k] = v
                del v

    def reader(i: int, done: threading.Event) -> None:
        got = 0
        while not done.is_set():
            for k in range(nkeys):
                v = c.get(k)
                got += 1
                if v is not None and (type(v) is not Box or v.key != k):
                    bad.append((k, v))
            if len(c) > maxsize:
                bad.append(("len", len(c)))
        reads[i] = got

    before = c.stats()
    writers_then_readers(
        run_threads,
        [lambda: writer(0), lambda: writer(1)],
        [lambda done, i=i: reader(i, done) for i in range(readers)],
        timeout=120,
    )
    st = c.stats()
    assert bad == []
    assert len(c) <= maxsize
    assert (st.hits + st.misses) - (before.hits + before.misses) == sum(reads)
    assert len(evicted) == len(set(evicted)) == st.evictions_size
    c._maintain()
    c.clear()
    gc.collect()
    assert [r for r in refs if r() is not None] == []


@pytest.mark.usefixtures("frozen_heap")
def test_a_million_hits_in_two_threads_hold_nothing(run_threads: Any) -> None:
    """Notes hold no reference and take no memory of their own: after a million hits (two
    threads, so one hands its notes to the other), the entries' reference counts and the
    interpreter's allocated blocks are as before, and every hit was counted."""
    c: safemap.Cache[int, Box] = safemap.Cache(((k, Box(k, 0)) for k in range(1000)), maxsize=1000)
    values = list(c.values())
    counts = [sys.getrefcount(v) for v in values]
    keys = list(range(1000))

    def hits(_: int) -> None:
        get = c.get
        for _ in range(500):
            for k in keys:
                get(k)

    hits(0)  # the rings and the stripes of this thread exist from now on
    gc.collect()
    blocks = sys.getallocatedblocks()
    before = c.stats().hits
    run_threads(hits, 2, timeout=120)
    c._maintain()
    gc.collect()
    assert c.stats().hits - before == 1_000_000
    assert [sys.getrefcount(v) for v in values] == counts
    assert sys.getallocatedblocks() - blocks < 200
