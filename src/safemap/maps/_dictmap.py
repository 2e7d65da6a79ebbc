"""``DictBackedMap``: the protocol over one plain ``dict`` behind one lock.

Invariants:
- ``_data`` is read only inside ``_read`` and written only inside ``_write``, so each
  primitive is atomic: the lock excludes every conflicting operation for the call's whole
  duration, including while a key's ``__hash__``/``__eq__`` or a callback runs Python code,
  releases the GIL or blocks.
- ``_busy`` is true while a write, a compute (and its callback) or a transaction is in
  progress; ``_txn`` while a transaction's callback runs. Only the thread holding the write
  lock sets them and, because the read side of a re-entrant mutex or of an RWLock held for
  writing admits only that same thread meanwhile, only it can observe them set. So a write
  that finds ``_busy`` is a re-entrant write from inside an operation, and a read that finds
  ``_txn`` is a call from inside a transaction: both raise ``RecursiveUpdateError`` and
  change nothing.
- Flags are set right after the lock is taken and cleared in ``finally`` inside the
  ``with``, so no exception (an asynchronous ``KeyboardInterrupt`` included) leaves them set.
- Iteration copies under the read lock and yields with no lock held, so the consumer may do
  anything, including writing to the map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, TypeVar

from ..protocol import (
    DELETE,
    MISSING,
    ConcurrentMapping,
    FrozenMap,
    RecursiveUpdateError,
    TransactionView,
)
from ..protocol.sentinels import Delete, Missing
from ._guards import IN_OPERATION, IN_TRANSACTION, Locks, track_for_fork

__all__ = ["DictBackedMap"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_ABSENT: Any = object()


class DictBackedMap(ConcurrentMapping[K, V]):
    """Shared implementation of the pure-Python maps; a subclass chooses the lock."""

    __slots__ = ("__weakref__", "_busy", "_data", "_held", "_read", "_txn", "_write")

    def __init__(self, other: Any = (), /, **kwargs: V) -> None:
        self._data: dict[K, V] = {}
        self._read, self._write, self._held = self._make_locks()
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

    # ---------------------------------------------------------------- primitives

    def load(self, key: K) -> tuple[V | None, bool]:
        with self._read:
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            value = self._data.get(key, _ABSENT)
        return (None, False) if value is _ABSENT else (value, True)

    def store(self, key: K, value: V) -> None:
        with self._write:
            if self._busy:
                raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
            self._busy = True
            try:
                self._data[key] = value
            finally:
                self._busy = False

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
                data[key] = new
                return new
            finally:
                self._busy = False

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        with self._write:
            if self._busy:
                raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
            self._busy = True
            try:
                value = self._data.pop(key, _ABSENT)
            finally:
                self._busy = False
        return (None, False) if value is _ABSENT else (value, True)

    def __len__(self) -> int:
        with self._read:
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            return len(self._data)

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        with self._read:
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            items = list(self._data.items())
        yield from items

    def __iter__(self) -> Iterator[K]:
        with self._read:
            if self._txn:
                raise RecursiveUpdateError(IN_TRANSACTION)
            keys = list(self._data)
        return iter(keys)

    def clear(self) -> None:
        with self._write:
            if self._busy:
                raise RecursiveUpdateError(IN_TRANSACTION if self._txn else IN_OPERATION)
            old, self._data = self._data, {}
        del old  # values are released outside the lock: their __del__ may use the map

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
