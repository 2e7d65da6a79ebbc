"""``DictBackedMap``: the protocol over one plain ``dict`` behind one lock.

Invariants:
- ``_data`` is read only inside ``_read`` (or a hold of the lock) and written only under a
  hold that excludes every other writer, so each primitive is atomic: the lock excludes every
  conflicting operation for the call's whole duration, including while a key's
  ``__hash__``/``__eq__`` or a callback runs Python code, releases the GIL or blocks.
- Every read under ``_read`` is one C-level dict operation (``get``, ``in``, ``len``,
  ``copy``), so it sees the dict at one instant even if a single-key write of the same
  thread runs in the middle of it (see "Nested writes").
- ``_busy`` is true while a compute (and its callback) or a transaction is in progress;
  ``_txn`` while a transaction runs. Only the thread holding the write lock sets them and,
  because the read side of a re-entrant mutex or of an RWLock held for writing admits only
  that same thread meanwhile, only it can observe them set. So a write that finds ``_busy``
  is a write from inside a compute or a transaction, and a read that finds ``_txn`` is a
  call from inside a transaction: both raise ``RecursiveUpdateError`` and change nothing.
- Flags are set right after the lock is taken and cleared in ``finally`` inside the
  ``with``, so no exception (an asynchronous ``KeyboardInterrupt`` included) leaves them set.
- Iteration copies under the read lock and yields with no lock held, so the consumer may do
  anything, including writing to the map.

Nested writes. A garbage-collector finalizer, a ``__del__`` or a weakref callback can run at
any allocation, so a thread may call a single-key write (``store``, ``load_and_delete``,
``clear``: none reads-then-writes) while it is itself inside an operation of this map and
holds its lock. Outside a compute or a transaction such a write is applied at once, under
the hold the thread already has: that hold excludes every other writer (an RWLock's read
hold too), and the dict stays consistent under a single-key write made from inside one of
its own operations. Concurrent nested writes of several threads each holding a read hold
are serialized by ``_nested`` (a re-entrant mutex: ``clear`` replaces ``_data``).

Statistics (``stats()``). Every acquisition first tries the lock without blocking; only
when that fails is the blocking acquisition timed, and the contention (count, wait) is
added under ``_slow``, a small lock taken on that slow path only. Point reads count a hit
or a miss in ``_reads`` while holding the read side (see ``_guards``: shared under the
mutex, per-thread cells under the RWLock). Writes count under a hold that excludes every
other writer (the write side, or ``_nested``), so plain attribute increments are exact.
``_iters`` counts the iterations started and in progress (from the copy to the end or the
close of the iterator): a write that finds one in progress counts in
``writes_during_iteration``.

Acquisition and interrupts. Each acquisition is the first statement inside the ``try``
whose ``finally`` releases, and is a C method of the lock (``_guards``), so a signal
handler's exception (``KeyboardInterrupt``) cannot land after the lock was taken and
before the ``try`` protects it. It can land before the lock was taken (while waiting in the
slow path, or between a failed try and the wait): the release then finds nothing to release
and its ``RuntimeError`` is ignored, and the interrupt propagates. A failed try means this
thread did not hold the lock already (both locks admit their holder at once), so that
release cannot drop an outer hold of the same thread.

Release outside the lock. A value (or a transaction's undo log) that a write replaces or
removes is kept in a local until the lock is released, so a ``__del__`` it triggers runs
with the map free and its own writes to the map land.
"""

from __future__ import annotations

import _thread
from collections.abc import Callable, Iterator, MutableMapping
from time import perf_counter

from .._typing import TYPE_CHECKING, Any, TypeVar
from ..protocol import (
    DELETE,
    MISSING,
    ConcurrentMapping,
    FrozenMap,
    RecursiveUpdateError,
    TransactionView,
)
from ..protocol.contention import record
from ..protocol.mapping import IterationGauge, _sentinel_stored, commit_counts
from ..protocol.sentinels import Delete, Missing
from ..protocol.variants import plain_class
from ._guards import IN_OPERATION, IN_TRANSACTION, LockChoice, track_for_fork

if TYPE_CHECKING:
    from ..protocol.stats import MapStats

__all__ = ["DictBackedMap"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_ABSENT: Any = object()


class DictBackedMap(ConcurrentMapping[K, V]):
    """Shared implementation of the pure-Python maps; a subclass chooses the lock."""

    __slots__ = (
        "__weakref__",
        "_block_read",
        "_block_write",
        "_busy",
        "_contentions",
        "_data",
        "_deletes",
        "_held",
        "_inserts",
        "_iters",
        "_lock",
        "_nested",
        "_reads",
        "_refuse_write",
        "_release_read",
        "_release_write",
        "_slow",
        "_try_read",
        "_try_write",
        "_txn",
        "_updates",
        "_wait",
        "_write_acquisitions",
        "_writes_during_iteration",
    )

    def __init__(self, other: Any = (), /, **kwargs: V) -> None:
        self._data: dict[K, V] = {}
        choice = self._make_locks()
        self._use_locks(choice)
        self._reads = choice.counts()
        self._nested = _thread.RLock()
        self._slow = _thread.allocate_lock()
        self._busy = False
        self._txn = False
        self._inserts = self._updates = self._deletes = 0
        self._write_acquisitions = 0
        self._contentions = 0
        self._wait = 0.0
        self._iters = IterationGauge()
        self._writes_during_iteration = 0
        track_for_fork(self)
        self.update(other, **kwargs)

    @staticmethod
    def _make_locks() -> LockChoice:
        raise NotImplementedError

    def _use_locks(self, choice: LockChoice) -> None:
        self._lock = choice.lock
        self._try_read, self._block_read = choice.try_read, choice.read
        self._release_read = choice.release_read
        self._try_write, self._block_write = choice.try_write, choice.write
        self._release_write = choice.release_write
        self._refuse_write = choice.refuse_write
        self._held = choice.held

    def _after_fork_in_child(self) -> None:
        # Only the forking thread survives in the child. If it held this map's lock it keeps
        # it (it is inside one of this map's operations); otherwise the lock may be held by
        # a thread that no longer exists, so the map gets a fresh, free one. The data is
        # consistent either way: every write is a single dict operation.
        if not self._held():
            self._use_locks(self._make_locks())
            self._busy = self._txn = False
        if not self._nested._is_owned():  # type: ignore[attr-defined]
            self._nested = _thread.RLock()
        self._slow = _thread.allocate_lock()
        self._iters.after_fork_in_child()

    # ---------------------------------------------------------- locking, counting

    def _contended(self, acquire: Callable[[], object], side: str) -> None:
        """The slow path: the lock was held; wait for it, timed, and count the wait."""
        start = perf_counter()
        acquire()
        wait = perf_counter() - start
        with self._slow:
            self._contentions += 1
            self._wait += wait
        record(f"{plain_class(type(self)).__name__}.{side}", wait)

    def _counted_write(self) -> None:
        """Called under an exclusive hold by a write that changed the map."""
        if self._iters.active:
            self._writes_during_iteration += 1

    def _collect_stats(self) -> MapStats:
        from ..protocol.stats import MapStats

        hits, misses, reads = self._reads.totals()
        with self._slow:
            contentions, wait = self._contentions, self._wait
        return MapStats(
            kind=plain_class(type(self)).__name__,
            hits=hits,
            misses=misses,
            inserts=self._inserts,
            updates=self._updates,
            deletes=self._deletes,
            size=len(self._data),
            iterations=self._iters.started,
            writes_during_iteration=self._writes_during_iteration,
            lock_acquisitions=hits + misses + reads + self._write_acquisitions,
            lock_contentions=contentions,
            lock_wait_seconds=wait,
            notes=(self._reads.note,) if self._reads.note else (),
        )

    # ---------------------------------------------------------------- primitives

    def load(self, key: K) -> tuple[V | None, bool]:
        try:
            if not self._try_read(0):
                self._contended(self._block_read, "read")
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            value = self._data.get(key, _ABSENT)
            if value is _ABSENT:
                self._reads.cell.misses += 1
            else:
                self._reads.cell.hits += 1
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_read()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        return (None, False) if value is _ABSENT else (value, True)

    def store(self, key: K, value: V) -> None:
        if value is MISSING or value is DELETE:
            raise _sentinel_stored(value)
        if self._held():
            with self._nested:
                old = self._store_held(key, value)
        else:
            try:
                if not self._try_write(0):
                    self._contended(self._block_write, "write")
                self._write_acquisitions += 1
                old = self._store_held(key, value)
            finally:
                try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                    self._release_write()
                except RuntimeError:
                    pass  # interrupted before the lock was taken: nothing to release
        del old  # released with the lock free: its __del__ may write to the map

    def _store_held(self, key: K, value: V) -> Any:
        """Set ``key`` under a hold of the lock; return the replaced value (or ``value``)."""
        if self._busy:
            raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
        data = self._data
        size = len(data)
        # One lookup for a new key; an existing one is replaced by a second store, and the
        # value it held is returned so that the caller releases it after unlocking.
        old = data.setdefault(key, value)
        if old is not value:
            data[key] = value
            self._updates += 1
        elif len(data) != size:
            self._inserts += 1
        else:
            return old  # the very object it held: no change, nothing counted
        if self._iters.active:
            self._writes_during_iteration += 1
        return old

    def compute(self, key: K, fn: Callable[[K, V | Missing], V | Delete]) -> V | None:
        if self._refuse_write is not None:
            self._refuse_write()
        try:
            if not self._try_write(0):
                self._contended(self._block_write, "write")
            self._write_acquisitions += 1
            if self._busy:
                raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
            self._busy = True
            try:
                data = self._data
                old = data.get(key, _ABSENT)
                new = fn(key, MISSING if old is _ABSENT else old)
                if new is DELETE:
                    if old is not _ABSENT:
                        del data[key]
                        self._deletes += 1
                        self._counted_write()
                    return None
                if new is MISSING:
                    raise _sentinel_stored(new)
                if new is old:
                    return new  # type: ignore[no-any-return]  # kept: no change, no count
                data[key] = new
                if old is _ABSENT:
                    self._inserts += 1
                else:
                    self._updates += 1
                self._counted_write()
                return new
            finally:
                self._busy = False
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_write()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        # ``old`` is a local: the value replaced or removed is released after the lock.

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        if self._held():
            with self._nested:
                value = self._pop_held(key)
        else:
            try:
                if not self._try_write(0):
                    self._contended(self._block_write, "write")
                self._write_acquisitions += 1
                value = self._pop_held(key)
            finally:
                try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                    self._release_write()
                except RuntimeError:
                    pass  # interrupted before the lock was taken: nothing to release
        return (None, False) if value is _ABSENT else (value, True)

    def _pop_held(self, key: K) -> Any:
        if self._busy:
            raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
        value = self._data.pop(key, _ABSENT)
        if value is not _ABSENT:
            self._deletes += 1
            self._counted_write()
        return value

    def __len__(self) -> int:
        try:
            if not self._try_read(0):
                self._contended(self._block_read, "read")
            self._reads.cell.reads += 1
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            return len(self._data)
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_read()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        try:
            if not self._try_read(0):
                self._contended(self._block_read, "read")
            self._reads.cell.reads += 1
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            data = self._data.copy()  # one C call: no finalizer runs in the middle of it
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_read()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        yield from self._iters.iterate(data.items())

    def __iter__(self) -> Iterator[K]:
        try:
            if not self._try_read(0):
                self._contended(self._block_read, "read")
            self._reads.cell.reads += 1
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            keys = list(self._data)
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_read()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        return self._iters.iterate(keys)

    def clear(self) -> None:
        if self._held():
            with self._nested:
                old = self._clear_held()
        else:
            try:
                if not self._try_write(0):
                    self._contended(self._block_write, "write")
                self._write_acquisitions += 1
                old = self._clear_held()
            finally:
                try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                    self._release_write()
                except RuntimeError:
                    pass  # interrupted before the lock was taken: nothing to release
        del old  # values are released outside the lock: their __del__ may use the map

    def _clear_held(self) -> dict[K, V]:
        if self._busy:
            raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
        old, self._data = self._data, {}
        if old:
            self._deletes += len(old)
            self._counted_write()
        return old

    def snapshot(self) -> FrozenMap[K, V]:
        try:
            if not self._try_read(0):
                self._contended(self._block_read, "read")
            self._reads.cell.reads += 1
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            data = self._data.copy()
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_read()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        return FrozenMap._adopt(data)

    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        if self._refuse_write is not None:
            self._refuse_write()
        try:
            if not self._try_write(0):
                self._contended(self._block_write, "write")
            self._write_acquisitions += 1
            if self._busy:
                raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
            self._busy = self._txn = True
            view = TransactionView(self._data)
            try:
                result = fn(view)
                view._commit(self._data)
                self._count_commit(view)
                return result
            finally:
                view._close()
                self._busy = self._txn = False
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_write()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        # ``view`` holds the commit's undo log (every replaced or removed value) and the
        # values ``fn`` wrote: as a local, it is released after the lock.

    def _count_commit(self, view: TransactionView[K, V]) -> None:
        inserts, updates, deletes = commit_counts(view)
        self._inserts += inserts
        self._updates += updates
        self._deletes += deletes
        if inserts or updates or deletes:
            self._counted_write()

    # ---------------------------------- hot dict methods, shortened (same guarantees)

    def __getitem__(self, key: K) -> V:
        try:
            if not self._try_read(0):
                self._contended(self._block_read, "read")
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            value = self._data.get(key, _ABSENT)
            if value is _ABSENT:
                self._reads.cell.misses += 1
            else:
                self._reads.cell.hits += 1
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_read()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        if value is _ABSENT:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __setitem__(self, key: K, value: V) -> None:
        self.store(key, value)

    def __contains__(self, key: object) -> bool:
        try:
            if not self._try_read(0):
                self._contended(self._block_read, "read")
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            found = key in self._data
            if found:
                self._reads.cell.hits += 1
            else:
                self._reads.cell.misses += 1
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_read()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        return found

    def get(self, key: K, default: Any = None, /) -> Any:
        try:
            if not self._try_read(0):
                self._contended(self._block_read, "read")
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            value = self._data.get(key, _ABSENT)
            if value is _ABSENT:
                self._reads.cell.misses += 1
            else:
                self._reads.cell.hits += 1
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_read()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        return default if value is _ABSENT else value
