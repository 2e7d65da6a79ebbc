"""Lock-free readers, more of them than statistics stripes, racing a writer.

A point read counts its hit or miss in one of 16 stripes (chosen by its thread; threads
beyond 16 share stripes), and on free-threaded builds marks its beginning there, so that a
writer can tell whether a read may still be walking a replaced version: if none can, the
version and the values only it held are released at once (the protocol's rule: what a
call removed is no longer referenced once it returns), else through CPython's delayed
(QSBR) release. These tests race more reader threads than there are stripes against a
writer whose every write frees values only the map held, and check that each read returns
a live value a write published for its key, in the writer's order, and that the hit and
miss counts stay exact. (That what a write replaced is released by the time it returns,
once no read is in flight, also after other threads have read the map, is
``test_removed_values_are_released_at_once_when_no_read_is_in_flight``.)
"""

from __future__ import annotations

import threading
from typing import Any

from conftest import ThreadRunner

from safemap import PersistentMap

WAIT = 60.0  # seconds: reached only on a deadlock
READERS = 20  # more than the 16 stripes: four readers share the overflow stripe
KEYS: list[Any] = [*range(24), *(f"k{i}" for i in range(24))]


class Box:
    """A fresh value per write, referenced only by the map: freed when a version lets it
    go. Its finalizer marks it dead, so a read that returned a value the map had already
    released would see ``live`` false (or, freed memory, something else than a Box)."""

    __slots__ = ("__weakref__", "key", "live", "n")

    def __init__(self, key: Any, n: int) -> None:
        self.key, self.n, self.live = key, n, True

    def __del__(self) -> None:
        self.live = False


def test_more_readers_than_stripes_read_only_published_live_values_and_count_exactly(
    run_threads: ThreadRunner,
) -> None:
    m: PersistentMap[Any, Box] = PersistentMap({k: Box(k, 0) for k in KEYS})
    done = threading.Event()
    started = threading.Barrier(READERS + 1)

    def writer() -> None:
        started.wait(WAIT)  # every reader is reading: releases race their reads
        try:
            n = 0
            for r in range(150):
                n += 1
                kept = m.snapshot() if r % 3 == 0 else None  # copying writes meanwhile
                for j, k in enumerate(KEYS):
                    if (j + r) % 3 == 0:
                        m[k] = Box(k, n)  # in place unless kept holds the version
                    elif (j + r) % 7 == 1:
                        m.pop(k)  # a new version: the old one (and the Box) released
                        m[k] = Box(k, n)
                del kept
                if r % 40 == 5:
                    m.clear()
                    n += 1
                    m.update({k: Box(k, n) for k in KEYS})
        finally:
            done.set()

    totals = [0, 0]  # hits, misses counted by the readers
    lock = threading.Lock()

    def reader() -> None:
        last: dict[Any, int] = {}
        hits = misses = 0
        first = True
        while first or not done.is_set():
            for k in KEYS:
                v = m.get(k)
                if v is None:
                    misses += 1
                    continue
                hits += 1
                assert type(v) is Box and v.live and v.key == k
                assert v.n >= last.get(k, 0), (k, v.n, last.get(k))
                last[k] = v.n
            if first:
                first = False
                started.wait(WAIT)
        with lock:
            totals[0] += hits
            totals[1] += misses

    base = m.stats()
    run_threads([writer, *([reader] * READERS)], timeout=WAIT)
    stats = m.stats()
    assert (stats.hits - base.hits, stats.misses - base.misses) == tuple(totals)
    assert sorted(map(repr, m)) == sorted(map(repr, KEYS))
    assert all(m[k].key == k and m[k].live for k in KEYS)


def test_readers_beyond_the_stripes_count_every_read(run_threads: ThreadRunner) -> None:
    # 40 threads on 16 stripes: stripes are shared, so a lost update among the threads of
    # one stripe shows in the totals.
    m: PersistentMap[int, int] = PersistentMap({i: i for i in range(64)})
    base = m.stats()
    all_registered = threading.Barrier(40)

    def reader(i: int) -> None:
        get = m.get
        get(0)
        all_registered.wait(WAIT)  # all 40 alive at once
        for r in range(1, 12_288):  # 96 rounds of 64 hits and 64 misses, with the first
            get(r & 127)  # keys 64..127: misses

    run_threads(reader, 40, timeout=WAIT)
    stats = m.stats()
    assert (stats.hits - base.hits, stats.misses - base.misses) == (40 * 6_144, 40 * 6_144)
