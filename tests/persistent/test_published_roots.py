"""A point read walks the root node the map publishes with each version.

The map keeps the current version's root node beside the version itself, so that a point
read loads it in one step. These tests race point reads against writers that publish new
versions in every way there is (a copied path, a new root after an insertion or a deletion,
``clear()``, ``update()``, a transaction, ``_publish`` of a foreign version, overwrites in
place) and check that every value a read returns is one a write published for that key, that
one writer's values are seen in the order it wrote them, and that the hit and miss counters
stay exact; then that a map collected in a reference cycle can still be read by the
finalizers of its values (a version's root never changes while the version lives).
"""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import pytest
from conftest import ThreadRunner

from safemap import PersistentMap

WAIT = 60.0  # seconds: reached only on a deadlock
KEYS: list[Any] = [*range(40), *(f"k{i}" for i in range(40))]


def test_reads_see_only_published_values_in_write_order_and_count_exactly(
    run_threads: ThreadRunner,
) -> None:
    # The one writer stores (key, n) with n growing; a reader must never see a key's n go
    # back, nor a value that no write stored for that key.
    rounds = 200
    m: PersistentMap[Any, tuple[Any, int]] = PersistentMap({k: (k, 0) for k in KEYS})
    done = threading.Event()

    def writer() -> None:
        try:
            n = 0
            for r in range(rounds):
                n += 1
                kept = m.snapshot() if r % 2 else None  # copying writes while it is held
                for j, k in enumerate(KEYS):
                    if (j + r) % 4 == 0:
                        m[k] = (k, n)  # in place when nothing holds the version
                    elif (j + r) % 4 == 1:
                        m.store(k, (k, n))
                del kept
                if r % 10 == 3:  # removals and insertions change the root node too
                    for k in KEYS[r % 7 :: 7]:
                        m.pop(k, None)
                    n += 1
                    m.update({k: (k, n) for k in KEYS[r % 7 :: 7]})
                if r % 25 == 7:
                    n += 1
                    m.transaction(lambda view, n=n: view.update({k: (k, n) for k in KEYS}))
                if r % 50 == 11:
                    m.clear()
                    n += 1
                    m._publish(PersistentMap({k: (k, n) for k in KEYS})._current())
        finally:
            done.set()

    totals = [0, 0]  # hits, misses counted by the readers
    lock = threading.Lock()

    def reader() -> None:
        last: dict[Any, int] = {}
        hits = misses = 0
        while not done.is_set():
            for k in KEYS:
                for found in (m.get(k), m.load(k)[0]):
                    if found is None:
                        misses += 1
                        continue
                    hits += 1
                    key, n = found
                    assert key == k
                    assert n >= last.get(k, 0), (k, n, last.get(k))
                    last[k] = n
        with lock:
            totals[0] += hits
            totals[1] += misses

    base = m.stats()
    run_threads([writer, reader, reader], timeout=WAIT)
    stats = m.stats()
    assert stats.hits - base.hits == totals[0]
    assert stats.misses - base.misses == totals[1]
    # A point read walks the root the map published last: the one iteration walks.
    current = dict(m.items())
    assert sorted(map(repr, current)) == sorted(map(repr, KEYS))
    assert {k: m[k] for k in KEYS} == current
    assert {k: m.get(k) for k in KEYS} == current


class Reads:
    """A value whose finalizer reads the map that holds it."""

    def __init__(self, seen: list[Any]) -> None:
        self.m: PersistentMap[Any, Any] | None = None
        self.seen = seen

    def __del__(self) -> None:
        m = self.m
        if m is not None:
            self.seen.append((m.get("self"), m.get(0), "self" in m, len(m)))


@pytest.mark.usefixtures("frozen_heap")
def test_a_map_collected_in_a_cycle_can_be_read_by_its_values_finalizers() -> None:
    for _ in range(50):
        seen: list[Any] = []
        m: PersistentMap[Any, Any] = PersistentMap({i: i for i in range(300)})
        value = Reads(seen)
        value.m = m
        m["self"] = value
        kept = m.snapshot()  # a second version in the cycle, sharing most nodes
        m[0] = "changed"
        m["kept"] = kept
        ref = weakref.ref(m)
        del m, value, kept
        gc.collect()
        assert ref() is None
        assert len(seen) == 1
        got, zero, present, _length = seen[0]
        # Whatever the collector cleared first reads as absent; a value read is whole.
        assert got is None or isinstance(got, Reads)
        assert zero in (None, 0, "changed")
        assert present in (True, False)
