"""Exact operation counters for :class:`~safemap.redis.RedisMap`'s statistics.

Invariant: each thread adds only to its own *cell* (a list of numbers), so no two threads
ever write the same object, and counts stay exact on free-threaded builds without a lock
on the counting path. A cell is appended to ``_cells`` (one atomic list operation) when its
thread first counts; when the thread ends (its ``threading.local`` storage is released),
the cell is folded into ``_base`` under ``_lock``, under which totals are also summed, so
totals never lose or double-count a thread's operations and a map used by many short-lived
threads keeps one cell per live thread only.

Interrupts: a section under ``_lock`` takes it inside the ``try`` whose ``finally``
releases it, first thing, ignoring ``RuntimeError``; ``_lock`` is an ``RLock``, whose
release checks the owner, so an acquisition interrupted by a signal handler's exception
(nothing taken) never releases another thread's hold, and no interrupt leaves it held.
"""

from __future__ import annotations

import threading
import weakref

__all__ = [
    "DELETES",
    "HITS",
    "INSERTS",
    "ITERATIONS",
    "LOCK_ACQUISITIONS",
    "LOCK_CONTENTIONS",
    "LOCK_WAIT",
    "MISSES",
    "UPDATES",
    "WRITES_DURING_ITERATION",
    "Counters",
]

(
    HITS,
    MISSES,
    INSERTS,
    UPDATES,
    DELETES,
    ITERATIONS,
    WRITES_DURING_ITERATION,
    LOCK_ACQUISITIONS,
    LOCK_CONTENTIONS,
    LOCK_WAIT,
) = range(10)
_SIZE = 10


class _Guard:
    """Lives in a thread's local storage; its finalizer folds the thread's cell."""

    __slots__ = ("__weakref__",)


class Counters:
    """Per-thread cells and the base their finished threads were folded into."""

    __slots__ = ("_base", "_cells", "_lock", "iterating", "local")

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._base: list[float] = [0] * _SIZE
        self._cells: list[list[float]] = []
        #: ``local.cell`` is this thread's cell once it has one (a fast path may read it
        #: directly, falling back to :meth:`cell` on ``AttributeError``).
        self.local = threading.local()
        #: Iterations of the map in progress now, any thread (changed under ``_lock``).
        self.iterating = 0

    def cell(self) -> list[float]:
        """This thread's cell: add to its items (``cell[HITS] += 1``)."""
        try:
            cell: list[float] = self.local.cell
        except AttributeError:
            cell = self._new_cell()
        return cell

    def _new_cell(self) -> list[float]:
        cell: list[float] = [0] * _SIZE
        guard = _Guard()
        self._cells.append(cell)  # all zeros: totals may see it or not, the sum is the same
        weakref.finalize(guard, self._fold, cell)
        self.local.guard = guard
        self.local.cell = cell
        return cell

    def _fold(self, cell: list[float]) -> None:
        lock = self._lock
        try:
            lock.acquire()
            for i, cells in enumerate(self._cells):
                if cells is cell:
                    del self._cells[i]
                    break
            for i in range(_SIZE):
                self._base[i] += cell[i]
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                lock.release()
            except RuntimeError:
                pass  # interrupted before it was taken

    def totals(self) -> list[float]:
        """Every counter summed over the finished threads and the live ones."""
        lock = self._lock
        try:
            lock.acquire()
            return [sum(column) for column in zip(self._base, *self._cells, strict=True)]
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                lock.release()
            except RuntimeError:
                pass  # interrupted before it was taken

    def iteration_started(self) -> None:
        lock = self._lock
        try:
            lock.acquire()
            self.iterating += 1
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                lock.release()
            except RuntimeError:
                pass  # interrupted before it was taken
        self.cell()[ITERATIONS] += 1

    def iteration_ended(self) -> None:
        lock = self._lock
        try:
            lock.acquire()
            self.iterating -= 1
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                lock.release()
            except RuntimeError:
                pass  # interrupted before it was taken
