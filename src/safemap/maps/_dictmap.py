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

Release outside the lock. A value (or a transaction's undo log) that a write replaces or
removes is kept in a local until the lock is released, so a ``__del__`` it triggers runs
with the map free and its own writes to the map land.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, MutableMapping

from .._typing import Any, TypeVar
from ..protocol import (
    DELETE,
    MISSING,
    ConcurrentMapping,
    FrozenMap,
    RecursiveUpdateError,
    TransactionView,
)
from ..protocol.mapping import _sentinel_stored
from ..protocol.sentinels import Delete, Missing
from ._guards import IN_OPERATION, IN_TRANSACTION, Locks, track_for_fork

__all__ = ["DictBackedMap"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_ABSENT: Any = object()


class DictBackedMap(ConcurrentMapping[K, V]):
    """Shared implementation of the pure-Python maps; a subclass chooses the lock."""

    __slots__ = ("__weakref__", "_busy", "_data", "_held", "_nested", "_read", "_txn", "_write")

    def __init__(self, other: Any = (), /, **kwargs: V) -> None:
        self._data: dict[K, V] = {}
        self._read, self._write, self._held = self._make_locks()
        self._nested = threading.RLock()
        self._busy = False
        self._txn = False
        track_for_fork(self)
        self.update(other, **kwargs)

    @staticmethod
    def _make_locks() -> Locks:
        raise NotImplementedError

    def _after_fork_in_child(self) -> None:
        # Only the forking thread survives in the child. If it held this map's lock it keeps
        # it (it is inside one of this map's operations); otherwise the lock may be held by
        # a thread that no longer exists, so the map gets a fresh, free one. The data is
        # consistent either way: every write is a single dict operation.
        if not self._held():
            self._read, self._write, self._held = self._make_locks()
            self._busy = self._txn = False
        if not self._nested._is_owned():  # type: ignore[attr-defined]
            self._nested = threading.RLock()

    # ---------------------------------------------------------------- primitives

    def load(self, key: K) -> tuple[V | None, bool]:
        with self._read:
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            value = self._data.get(key, _ABSENT)
        return (None, False) if value is _ABSENT else (value, True)

    def store(self, key: K, value: V) -> None:
        if value is MISSING or value is DELETE:
            raise _sentinel_stored(value)
        if self._held():
            with self._nested:
                old = self._store_held(key, value)
        else:
            with self._write:
                old = self._store_held(key, value)
        del old  # released with the lock free: its __del__ may write to the map

    def _store_held(self, key: K, value: V) -> Any:
        """Set ``key`` under a hold of the lock; return the replaced value (or ``value``)."""
        if self._busy:
            raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
        data = self._data
        # One lookup for a new key; an existing one is replaced by a second store, and the
        # value it held is returned so that the caller releases it after unlocking.
        old = data.setdefault(key, value)
        if old is not value:
            data[key] = value
        return old

    def compute(self, key: K, fn: Callable[[K, V | Missing], V | Delete]) -> V | None:
        with self._write:
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
                    return None
                if new is MISSING:
                    raise _sentinel_stored(new)
                data[key] = new
                return new
            finally:
                self._busy = False
        # ``old`` is a local: the value replaced or removed is released after the ``with``.

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        if self._held():
            with self._nested:
                value = self._pop_held(key)
        else:
            with self._write:
                value = self._pop_held(key)
        return (None, False) if value is _ABSENT else (value, True)

    def _pop_held(self, key: K) -> Any:
        if self._busy:
            raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
        return self._data.pop(key, _ABSENT)

    def __len__(self) -> int:
        with self._read:
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            return len(self._data)

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        with self._read:
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            data = self._data.copy()  # one C call: no finalizer runs in the middle of it
        yield from data.items()

    def __iter__(self) -> Iterator[K]:
        with self._read:
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            keys = list(self._data)
        return iter(keys)

    def clear(self) -> None:
        if self._held():
            with self._nested:
                old = self._clear_held()
        else:
            with self._write:
                old = self._clear_held()
        del old  # values are released outside the lock: their __del__ may use the map

    def _clear_held(self) -> dict[K, V]:
        if self._busy:
            raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
        old, self._data = self._data, {}
        return old

    def snapshot(self) -> FrozenMap[K, V]:
        with self._read:
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            data = self._data.copy()
        return FrozenMap._adopt(data)

    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        with self._write:
            if self._busy:
                raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
            self._busy = self._txn = True
            view = TransactionView(self._data)
            try:
                result = fn(view)
                view._commit(self._data)
                return result
            finally:
                view._close()
                self._busy = self._txn = False
        # ``view`` holds the commit's undo log (every replaced or removed value) and the
        # values ``fn`` wrote: as a local, it is released after the ``with``.

    # ---------------------------------- hot dict methods, shortened (same guarantees)

    def __getitem__(self, key: K) -> V:
        with self._read:
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            return self._data[key]

    def __setitem__(self, key: K, value: V) -> None:
        self.store(key, value)

    def __contains__(self, key: object) -> bool:
        with self._read:
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            return key in self._data

    def get(self, key: K, default: Any = None, /) -> Any:
        with self._read:
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            return self._data.get(key, default)
