"""Garbage-collector finalizers that use a map, run at any allocation of any thread, also
while that thread is inside one of the map's own operations (every map type).

A finalizer's write must land, except while the thread that runs it is inside a compute
family call or a transaction of that map: there the protocol refuses nested writes with
``RecursiveUpdateError`` (reported as unraisable). Nothing may hang, raise anything else, or
lose a write."""

from __future__ import annotations

import gc
import operator
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from safemap import RecursiveUpdateError

THREADS = 3
ITERATIONS = 280
GUARD = 60.0  # seconds before a thread still running counts as a hang


class Tracker:
    """Which thread is inside a compound call, and every finalizer outcome."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()  # guards the lists; held only around list.append
        self.refused_pops = 0
        self.refused_dels: set[Any] = set()
        self.wrong: list[str] = []

    def compound(self) -> bool:
        return getattr(self.local, "depth", 0) > 0

    def around(self, call: Callable[[], Any]) -> Any:
        self.local.depth = getattr(self.local, "depth", 0) + 1
        try:
            return call()
        finally:
            self.local.depth -= 1

    def unraisable(self, info: Any) -> None:
        # Runs on the thread whose finalizer raised, right after it raised.
        if isinstance(info.exc_value, RecursiveUpdateError) and self.compound():
            with self.lock:
                self.refused_pops += 1
        else:
            with self.lock:
                self.wrong.append(f"{info.exc_type.__name__}: {info.exc_value} ({info.object!r})")


class Cyclic:
    """Garbage only the cyclic collector frees; its ``__del__`` reads and writes the map."""

    def __init__(self, m: Any, key: Any, tracker: Tracker) -> None:
        self.me = self
        self.m, self.key, self.tracker = m, key, tracker

    def __del__(self) -> None:
        tracker = self.tracker
        try:
            self.m.get(self.key)
            self.m[("del", *self.key)] = True
        except RecursiveUpdateError:
            if tracker.compound():
                with tracker.lock:
                    tracker.refused_dels.add(self.key)
                return
            with tracker.lock:
                tracker.wrong.append(f"__del__ refused outside a compound call: {self.key}")
        except BaseException as exc:
            with tracker.lock:
                tracker.wrong.append(f"__del__ raised {exc!r}")


class Collecting:
    """A key whose ``__hash__`` runs a young collection every third call, so finalizers run
    inside the map operation that hashes it, on every build (the free-threaded collector
    does not honour a threshold of 1 while the heap is large). That is a key's ``__hash__``
    re-entering the map, where the protocol allows refusing a write: counted as compound."""

    calls = 0

    def __init__(self, t: int, tracker: Tracker) -> None:
        self.t, self.tracker = t, tracker

    def __hash__(self) -> int:
        Collecting.calls += 1
        if Collecting.calls % 3 == 0:
            self.tracker.around(lambda: gc.collect(0))
        return hash(("collecting", self.t))

    def __eq__(self, other: object) -> bool:
        return other is self


@pytest.fixture
def gc_everywhere(frozen_heap: None) -> Iterator[Tracker]:
    """The collector runs at (nearly) every allocation; unraisable errors are recorded.
    (Over the test's own objects: the rest of the heap is frozen, see ``frozen_heap``.)"""
    tracker = Tracker()
    old_threshold = gc.get_threshold()
    old_hook = sys.unraisablehook
    gc.collect()
    sys.unraisablehook = tracker.unraisable
    gc.set_threshold(1)
    try:
        yield tracker
    finally:
        gc.set_threshold(*old_threshold)
        sys.unraisablehook = old_hook


def _operations(m: Any, t: int, tracker: Tracker) -> list[Callable[[], object]]:
    """One call of each kind, with every argument built in advance: the first allocations
    after a cycle becomes garbage then happen inside the map's own code."""
    count, txn, plain, kept = ("count", t), ("txn", t), ("plain", t), ("kept", t)
    collecting = Collecting(t, tracker)
    value = [t]

    def bump(view: Any) -> None:
        view[txn] = view.get(txn, 0) + 1

    def loop_body_writes() -> None:
        for key, _ in m.items():  # a loop body may write
            if key == kept:
                m[plain] = value
        m.pop(plain)

    return [
        lambda: m.get(kept),
        lambda: kept in m,
        lambda: m.store(kept, value),
        lambda: m.__setitem__(plain, value),
        lambda: m.pop(plain, None),
        lambda: m.load_or_store(plain, value) and m.delete(plain),
        lambda: tracker.around(lambda: m.merge(count, 1, operator.add)),
        lambda: tracker.around(lambda: m.compute(kept, lambda k, old: value)),
        lambda: tracker.around(lambda: m.transaction(bump)),
        loop_body_writes,
        m.snapshot,
        m.__len__,
        lambda: [key for key in m],
        lambda: m.get(collecting),
        lambda: m.store(collecting, value),
        lambda: collecting in m,
        lambda: m.pop(collecting, None),
    ]


def _worker(m: Any, t: int, tracker: Tracker, finalizers: list[Any]) -> None:
    ops = _operations(m, t, tracker)
    keys = [("fin", t, i) for i in range(ITERATIONS)]
    merges = transactions = 0
    for i, fin_key in enumerate(keys):
        op = ops[i % len(ops)]
        m[fin_key] = i
        obj = Cyclic(m, fin_key, tracker)
        finalizers.append(weakref.finalize(obj, m.pop, fin_key))
        # The collector runs at every other allocation: one more allocation or not shifts
        # where the finalizers of this garbage run inside ``op``.
        pad = [] if (i // len(ops)) % 2 else None
        del obj, pad  # garbage now: collected at some coming allocation, in some thread
        op()
        merges += op is ops[6]
        transactions += op is ops[8]
    m.store(("merges", t), merges)
    m.store(("transactions", t), transactions)


@pytest.mark.timeout(180)
def test_finalizers_using_the_map_during_its_operations(
    map_type: type, gc_everywhere: Tracker, run_threads: Any
) -> None:
    tracker = gc_everywhere
    m = map_type()
    finalizers: list[Any] = []
    run_threads(lambda t: _worker(m, t, tracker, finalizers), THREADS, timeout=GUARD)

    def settle() -> None:
        for _ in range(3):
            gc.collect()

    done = threading.Thread(target=settle, daemon=True)
    done.start()
    done.join(GUARD)
    assert not done.is_alive(), "hang: a collection running finalizers never finished"
    assert tracker.wrong == []
    assert all(not f.alive for f in finalizers), "a finalizer never ran"
    for t in range(THREADS):
        # no lost update among the workers' own calls
        assert m.get(("count", t), 0) == m[("merges", t)] > 0
        assert m.get(("txn", t), 0) == m[("transactions", t)] > 0
        assert ("plain", t) not in m
    left = [key for key in m if key[0] == "fin"]
    assert len(left) == tracker.refused_pops, "a finalizer's pop was lost"
    for t in range(THREADS):
        for i in range(ITERATIONS):
            key = ("fin", t, i)
            assert (("del", *key) in m) != (key in tracker.refused_dels), key
