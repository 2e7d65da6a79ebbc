"""The two locks a dict-backed map can sit behind, and how each counts its reads.

``DictBackedMap`` takes shared access with ``try_read(0)`` (and, only if that failed, the
timed blocking ``read()``), exclusive access with ``try_write(0)`` / ``write()``, and keeps its
own re-entry bookkeeping; a lock choice only says how to exclude other threads:

- ``mutex_locks``: one ``threading.RLock`` for both. Re-entrant, so a compute callback, a
  key's ``__eq__`` or a ``__del__`` run by the cyclic GC that reads the map on the holding
  thread proceeds instead of deadlocking (the map refuses nested *writes* itself).
- ``rwlock_locks``: a :class:`~safemap.RWLock`. Its write side refuses, with
  ``RecursiveUpdateError``, a thread that already holds the lock: a nested write from inside
  an operation would be an upgrade, which deadlocks.

Read counters (``reads``). Point reads count a hit or a miss while holding the read side.
Under the mutex one shared :class:`SharedCounts` is exact. Readers of an RWLock hold it
together:

- with the GIL, one shared :class:`GILCounts` is exact too: ``obj.attr += 1`` on an int
  slot runs no Python code and reaches no point where the interpreter switches threads
  (those are calls, backward jumps and function entries), so no other thread runs inside
  it;
- on free-threaded builds ``+= 1`` on a shared attribute from several threads loses
  updates (and would make every reader write one cache line), so readers count in
  :class:`ThreadCounts`: one cell per thread (a ``threading.local``), registered with the
  map's totals and folded into them when its thread ends. Each cell has one writer, its
  thread; ``totals()`` adds the folded base and the live cells under one lock. It costs
  more per read than a shared counter (a thread-local lookup), which is why GIL builds do
  not use it. The choice is made when the map is created; the GIL can be enabled later
  on a free-threaded build (never disabled), and the cells stay exact then.

After ``os.fork()`` the child has only the forking thread, so a lock another thread held at
the fork would never be released: ``reset_after_fork`` gives every live map fresh locks in
the child (keeping holds of the forking thread), so the child can use its maps.
"""

from __future__ import annotations

import _thread
import os
import sys
import weakref
from collections.abc import Callable

from .._typing import Any
from ..locks import RWLock
from ..protocol import RecursiveUpdateError

__all__ = [
    "IN_OPERATION",
    "IN_TRANSACTION",
    "Cell",
    "GILCounts",
    "LockChoice",
    "SharedCounts",
    "ThreadCounts",
    "mutex_locks",
    "rwlock_locks",
    "track_for_fork",
]

IN_TRANSACTION = (
    "the map's own methods cannot be called from inside its transaction(); use the view"
)
IN_OPERATION = (
    "cannot write to the map from inside one of its own operations "
    "(a compute-family callback, or a key's __hash__/__eq__)"
)


class LockChoice:
    """One lock's operations, as bound methods (no wrapper on the fast path).

    ``try_read(0)`` / ``try_write(0)`` take the lock if it is free and say whether they did;
    ``read()`` / ``write()`` block until they take it; ``held()`` says whether the calling
    thread holds it; ``refuse_write()`` (``None`` if the lock allows it) raises
    ``RecursiveUpdateError`` for a write the calling thread's own hold would deadlock, and
    is called before any write acquisition; ``counts()`` makes the read counters this
    choice needs.

    Every one of these is a method of the lock itself (C code), so that an acquisition made
    as the first thing inside a ``try`` cannot be interrupted (by a signal handler's
    exception) after it took the lock and before the ``try`` protects it: no Python frame
    runs in between."""

    __slots__ = (
        "counts",
        "held",
        "lock",
        "read",
        "refuse_write",
        "release_read",
        "release_write",
        "try_read",
        "try_write",
        "write",
    )

    def __init__(
        self,
        lock: Any,
        try_read: Callable[..., bool],
        read: Callable[[], object],
        release_read: Callable[[], None],
        try_write: Callable[..., bool],
        write: Callable[[], object],
        release_write: Callable[[], None],
        held: Callable[[], bool],
        refuse_write: Callable[[], None] | None,
        counts: Callable[[], SharedCounts | ThreadCounts],
    ) -> None:
        self.lock = lock
        self.try_read = try_read
        self.read = read
        self.release_read = release_read
        self.try_write = try_write
        self.write = write
        self.release_write = release_write
        self.held = held
        self.refuse_write = refuse_write
        self.counts = counts


class Cell:
    """One set of read counters: point reads that hit or missed, and the other
    acquisitions of the read side (len, iteration, snapshot). Slots, not a list: a slot
    store takes no lock of its own on free-threaded builds."""

    __slots__ = ("hits", "misses", "reads")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.reads = 0

    def totals(self) -> tuple[int, int, int]:
        return self.hits, self.misses, self.reads


class SharedCounts:
    """Read counters updated under a mutex: one :class:`Cell` (``cell``), exact. The map
    counts through ``.cell`` with either kind of counters."""

    __slots__ = ("cell",)

    note = ""  # what ``MapStats.notes`` says about these counters (nothing to say)

    def __init__(self) -> None:
        self.cell = Cell()

    def totals(self) -> tuple[int, int, int]:
        return self.cell.totals()


class GILCounts(SharedCounts):
    """Read counters of concurrent readers on a GIL build: shared, exact (module doc)."""

    __slots__ = ()

    note = (
        "point reads of concurrent readers are counted in one shared counter: exact, since "
        "the GIL never switches threads inside an increment"
    )


class _Cells:
    """The registry behind a :class:`ThreadCounts`: the base the cells of ended threads were
    folded into, and the live cells (each a thread's ``threading.local`` dict)."""

    __slots__ = ("__weakref__", "base", "cells", "lock")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.base = Cell()  # the counts of the cells whose thread ended
        self.cells: dict[int, Cell] = {}
        _live_cells.add(self)  # its lock is renewed in a fork child (_reset_after_fork)

    def add(self, cell: Cell) -> None:
        key = id(cell)
        with self.lock:
            self.cells[key] = cell
        # The cell is folded once its thread's Thread object is gone (the thread has
        # ended and runs no more code of this map); until then it stays live.
        import threading  # here: imported by whoever started the threads that count

        fin = weakref.finalize(threading.current_thread(), _fold, weakref.ref(self), key)
        fin.atexit = False

    def totals(self) -> tuple[int, int, int]:
        with self.lock:
            hits, misses, reads = self.base.totals()
            for cell in self.cells.values():
                hits += cell.hits
                misses += cell.misses
                reads += cell.reads
        return hits, misses, reads


def _fold(ref: weakref.ref[_Cells], key: int) -> None:
    cells = ref()
    if cells is None:
        return
    with cells.lock:
        cell = cells.cells.pop(key, None)
        if cell is not None:
            base = cells.base
            base.hits += cell.hits
            base.misses += cell.misses
            base.reads += cell.reads


class ThreadCounts(_thread._local):
    """Read counters of concurrent readers: each thread's attributes are its own cell."""

    note = (
        "point reads are counted in per-thread cells (folded into the totals when their "
        "thread ends): concurrent readers share no written counter, and every count is exact"
    )

    cell: Cell  # the calling thread's counters
    _cells: _Cells

    def __init__(self, cells: _Cells) -> None:
        # Runs once in each thread, on that thread's first use of this object. The counts
        # are one Cell per thread (one thread-local lookup per count, then a slot).
        self.cell = Cell()
        self._cells = cells
        cells.add(self.cell)

    def totals(self) -> tuple[int, int, int]:
        return self._cells.totals()


_gil_enabled: Callable[[], bool] = getattr(sys, "_is_gil_enabled", lambda: True)


def _thread_counts() -> ThreadCounts:
    return ThreadCounts(_Cells())


def mutex_locks() -> LockChoice:
    """One re-entrant mutex for reads and writes."""
    lock = _thread.RLock()
    acquire, release = lock.acquire, lock.release
    return LockChoice(
        lock,
        acquire,
        acquire,
        release,
        acquire,
        acquire,
        release,
        lock._is_owned,  # type: ignore[attr-defined]
        None,  # re-entrant: the map refuses nested writes itself (``_busy``)
        SharedCounts,
    )


def rwlock_locks() -> LockChoice:
    """One writer-preferring readers-writer lock: reads share, writes exclude."""
    lock = RWLock()
    held = lock.held_by_current_thread

    def refuse_write() -> None:
        # A thread holding the lock that asks for the write side would upgrade (deadlock):
        # the lock would raise RuntimeError; the map says why in its own terms.
        if held():
            raise RecursiveUpdateError(IN_OPERATION)

    return LockChoice(
        lock,
        lock.acquire_read,
        lock.acquire_read,
        lock.release_read,
        lock.acquire_write,
        lock.acquire_write,
        lock.release_write,
        held,
        refuse_write,
        GILCounts if _gil_enabled() else _thread_counts,
    )


# Keyed by id: maps are unhashable, so a WeakSet cannot hold them.
_live_maps: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def track_for_fork(owner: Any) -> None:
    """Register ``owner`` (it has ``_after_fork_in_child()``) to be reset in a fork child."""
    _live_maps[id(owner)] = owner


_live_cells: weakref.WeakSet[_Cells] = weakref.WeakSet()


def _reset_after_fork() -> None:
    # A thread that no longer exists in the child may have held a registry's lock.
    for cells in list(_live_cells):
        cells.lock = _thread.allocate_lock()
    for owner in list(_live_maps.values()):
        owner._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
