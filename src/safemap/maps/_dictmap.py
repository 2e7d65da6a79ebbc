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
when that fails does it wait, with the lock's ``_wait_read``/``_wait_write``, which count the
contention and time the wait in the lock's state (``_stats()``). Every other count is kept
by the lock itself (``_guards``: its ``_tallies()`` and acquisitions, changed with the
lock's state locked, so exact): point reads and stores make their dict operation, count it
and release the hold in one C call of the lock (``_get_release``, ``_store_release``, ...);
``len``, iteration and snapshots count in their release (``_release_read_other``); the
other writes add their counts with ``_count_write`` while holding an exclusive hold.
``_iters`` counts the iterations started and in progress (from the copy to the end or the
close of the iterator): a write that finds one in progress counts in
``writes_during_iteration``.

Acquisition and interrupts. Each acquisition is a C method of the lock called as the first
statement inside a ``try`` (``_guards``), so a signal handler's exception
(``KeyboardInterrupt``) cannot land after the lock was taken and before the ``try`` protects
it: no Python frame runs in between. It can land before the lock was taken (while waiting in
the slow path, or between a failed try and the wait): the release then finds nothing to
release and its ``RuntimeError`` is ignored, and the interrupt propagates. A failed try means
this thread did not hold the lock already (both locks admit their holder at once), so that
release cannot drop an outer hold of the same thread. No lock of the map is taken with a
``with`` statement: on CPython 3.14 a signal handler can raise right after ``__enter__``
took the lock and before the block protects it (python/cpython#148874), which would leave
the lock held for good; ``_nested`` is taken by ``protocol._locked.locked``, which acquires,
calls and releases in one C call. The point reads and stores release
in the C call that does their dict operation, right after the ``try`` (whose ``except``
releases if anything in it raised): between the ``try``'s last call and that call there are
only loads of locals and attributes, and CPython runs signal handlers (and so raises their
exceptions) only on a call's return, a backward jump or a function's entry, so the
exception lands inside the ``try`` or after the release, never with the lock leaked.

Release outside the lock. A value (or a transaction's undo log) that a write replaces or
removes is kept in a local until the lock is released, so a ``__del__`` it triggers runs
with the map free and its own writes to the map land.
"""

from __future__ import annotations

import _thread
from collections.abc import Callable, Iterator, MutableMapping

from .._typing import TYPE_CHECKING, Any, TypeVar
from ..protocol import (
    DELETE,
    MISSING,
    ConcurrentMapping,
    FrozenMap,
    RecursiveUpdateError,
    TransactionView,
)
from ..protocol._locked import locked
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
        "_contains_release",
        "_data",
        "_get_release",
        "_getitem_release",
        "_held",
        "_iters",
        "_load_release",
        "_lock",
        "_nested",
        "_refuse_write",
        "_release_other",
        "_release_read",
        "_release_write",
        "_store_release",
        "_try_read",
        "_try_write",
        "_txn",
    )

    def __init__(self, other: Any = (), /, **kwargs: V) -> None:
        self._data: dict[K, V] = {}
        self._use_locks(self._make_locks())
        self._nested = _thread.RLock()
        self._busy = False
        self._txn = False
        self._iters = IterationGauge()
        track_for_fork(self)
        self.update(other, **kwargs)

    @staticmethod
    def _make_locks() -> LockChoice:
        raise NotImplementedError

    def _use_locks(self, choice: LockChoice) -> None:
        # Bound once: the hot paths call the lock's C methods with no lookup on the lock.
        lock = self._lock = choice.lock
        self._try_read, self._block_read = lock._try_read, lock._wait_read
        self._release_read, self._release_other = lock.release_read, lock._release_read_other
        self._try_write, self._block_write = lock._try_write, lock._wait_write
        self._release_write = lock.release_write
        self._get_release, self._getitem_release = lock._get_release, lock._getitem_release
        self._contains_release, self._load_release = lock._contains_release, lock._load_release
        self._store_release = lock._store_release
        self._refuse_write = choice.refuse_write
        self._held = lock.held_by_current_thread

    def _after_fork_in_child(self) -> None:
        # Only the forking thread survives in the child, and the lock already forgot the
        # holds of every other thread (its counts stay). If the forking thread held it, it
        # keeps it (it is inside one of this map's operations); otherwise no operation is in
        # progress any more. The data is consistent either way: every write is a single
        # dict operation.
        if not self._held():
            self._busy = self._txn = False
        if not self._nested._is_owned():  # type: ignore[attr-defined]
            self._nested = _thread.RLock()
        self._iters.after_fork_in_child()

    # ---------------------------------------------------------- locking, counting

    def _contended(self, wait: Callable[[], float], side: str) -> None:
        """The slow path: the try failed; wait for the lock (which counts and times the
        wait) and offer the wait to a running contention profile."""
        record(f"{plain_class(type(self)).__name__}.{side}", wait())

    def _count_write(self, inserts: int, updates: int, deletes: int) -> None:
        """Called under an exclusive hold by a write that changed the map."""
        self._lock._tally(inserts, updates, deletes, 1 if self._iters.active else 0)

    def _collect_stats(self) -> MapStats:
        from ..protocol.stats import MapStats

        lock = self._lock
        hits, misses, _, inserts, updates, deletes, during = lock._tallies()
        acquisitions, contentions, wait = lock._stats()
        return MapStats(
            kind=plain_class(type(self)).__name__,
            hits=hits,
            misses=misses,
            inserts=inserts,
            updates=updates,
            deletes=deletes,
            size=len(self._data),
            iterations=self._iters.started,
            writes_during_iteration=during,
            lock_acquisitions=acquisitions,
            lock_contentions=contentions,
            lock_wait_seconds=wait,
        )

    # ---------------------------------------------------------------- primitives

    def load(self, key: K) -> tuple[V | None, bool]:
        try:
            if not self._try_read():
                self._contended(self._block_read, "read")
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
        except BaseException:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_read()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
            raise
        return self._load_release(self._data, key)

    def store(self, key: K, value: V) -> None:
        if value is MISSING or value is DELETE:
            raise _sentinel_stored(value)
        # The lock's store (``_store_release`` / ``_store_held``): one lookup for a new key,
        # a second store for an existing one; the very object it held is no change; the
        # value it replaces is released after the lock (its __del__ may write to the map).
        if self._held():
            locked(self._nested, self._store_nested, key, value)
            return
        try:
            if not self._try_write():
                self._contended(self._block_write, "write")
        except BaseException:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_write()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
            raise
        # Taken by a thread that did not hold it: no compute or transaction is in progress
        # (only the holder sets ``_busy``), so there is nothing to refuse.
        self._store_release(self._data, key, value, self._iters.active)

    def compute(self, key: K, fn: Callable[[K, V | Missing], V | Delete]) -> V | None:
        if self._refuse_write is not None:
            self._refuse_write()
        try:
            if not self._try_write():
                self._contended(self._block_write, "write")
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
                        self._count_write(0, 0, 1)
                    return None
                if new is MISSING:
                    raise _sentinel_stored(new)
                if new is old:
                    return new  # type: ignore[no-any-return]  # kept: no change, no count
                data[key] = new
                if old is _ABSENT:
                    self._count_write(1, 0, 0)
                else:
                    self._count_write(0, 1, 0)
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
            value = locked(self._nested, self._pop_held, key)
        else:
            try:
                if not self._try_write():
                    self._contended(self._block_write, "write")
                value = self._pop_held(key)
            finally:
                try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                    self._release_write()
                except RuntimeError:
                    pass  # interrupted before the lock was taken: nothing to release
        return (None, False) if value is _ABSENT else (value, True)

    def _store_nested(self, key: K, value: V) -> None:
        if self._busy:
            raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
        self._lock._store_held(self._data, key, value, self._iters.active)

    def _pop_held(self, key: K) -> Any:
        if self._busy:
            raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
        value = self._data.pop(key, _ABSENT)
        if value is not _ABSENT:
            self._count_write(0, 0, 1)
        return value

    def __len__(self) -> int:
        try:
            if not self._try_read():
                self._contended(self._block_read, "read")
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            return len(self._data)
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_other()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        try:
            if not self._try_read():
                self._contended(self._block_read, "read")
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            data = self._data.copy()  # one C call: no finalizer runs in the middle of it
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_other()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        yield from self._iters.iterate(data.items())

    def __iter__(self) -> Iterator[K]:
        try:
            if not self._try_read():
                self._contended(self._block_read, "read")
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            keys = list(self._data)
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_other()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        return self._iters.iterate(keys)

    def clear(self) -> None:
        if self._held():
            old = locked(self._nested, self._clear_held)
        else:
            try:
                if not self._try_write():
                    self._contended(self._block_write, "write")
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
            self._count_write(0, 0, len(old))
        return old

    def snapshot(self) -> FrozenMap[K, V]:
        try:
            if not self._try_read():
                self._contended(self._block_read, "read")
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            data = self._data.copy()
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_other()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        return FrozenMap._adopt(data)

    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        if self._refuse_write is not None:
            self._refuse_write()
        try:
            if not self._try_write():
                self._contended(self._block_write, "write")
            if self._busy:
                raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
            view = TransactionView(self._data)
            # Set and cleared with no call between them and the try (a call is where an
            # exception from a signal handler can land): a flag left set would refuse every
            # later write to the map.
            self._busy = self._txn = True
            try:
                result = fn(view)
                view._commit(self._data)
                self._count_commit(view)
                return result
            finally:
                self._busy = self._txn = False
                view._close()
        finally:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_write()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
        # ``view`` holds the commit's undo log (every replaced or removed value) and the
        # values ``fn`` wrote: as a local, it is released after the lock.

    def _count_commit(self, view: TransactionView[K, V]) -> None:
        inserts, updates, deletes = commit_counts(view)
        if inserts or updates or deletes:
            self._count_write(inserts, updates, deletes)

    # ---------------------------------- hot dict methods, shortened (same guarantees)

    def __getitem__(self, key: K) -> V:
        try:
            if not self._try_read():
                self._contended(self._block_read, "read")
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
        except BaseException:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_read()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
            raise
        return self._getitem_release(self._data, key)  # type: ignore[no-any-return]

    def __setitem__(self, key: K, value: V) -> None:
        self.store(key, value)

    def __contains__(self, key: object) -> bool:
        try:
            if not self._try_read():
                self._contended(self._block_read, "read")
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
        except BaseException:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_read()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
            raise
        return self._contains_release(self._data, key)

    def get(self, key: K, default: Any = None, /) -> Any:
        try:
            if not self._try_read():
                self._contended(self._block_read, "read")
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
        except BaseException:
            try:  # noqa: SIM105  # suppress() is a call: it could be interrupted first
                self._release_read()
            except RuntimeError:
                pass  # interrupted before the lock was taken: nothing to release
            raise
        return self._get_release(self._data, key, default)
