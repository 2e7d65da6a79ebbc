"""``PersistentMap``: a concurrent map whose every version is an immutable hash trie.

The C core (``safemap.persistent._hamt``) holds a persistent hash array mapped trie
(``Trie``: each ``set``/``delete`` returns a new version sharing every node off the changed
path) and ``PersistentMapBase``, the pointer to the map's current version. This module adds
the writers' side and the rest of the protocol. Design and guarantees: ``docs/persistent.md``.

Invariants:
- the current version is replaced only while ``_lock`` is held, so each write (including a
  compute-family callback and a transaction) sees the version it replaces unchanged: writes
  are atomic per call and callbacks run exactly once;
- readers take a strong reference to the current version (no lock) and walk it; a version
  never changes once published, so a read, an iteration or a ``snapshot()`` sees one
  version, whatever writers do meanwhile;
- ``_busy`` is true while a write, a compute callback or a transaction runs; only the
  thread holding ``_lock`` (re-entrant) can see it set, so a write that finds it is a
  re-entrant write and raises ``RecursiveUpdateError``, changing nothing;
- a replaced version is released after ``_lock`` is released, so overwritten and removed
  values are freed (and their ``__del__`` runs) outside the lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, TypeVar

from ..maps._guards import IN_OPERATION, IN_TRANSACTION, mutex_locks, track_for_fork
from ..protocol import (
    DELETE,
    MISSING,
    ConcurrentMapping,
    FrozenMap,
    RecursiveUpdateError,
    TransactionView,
)
from ..protocol.sentinels import Delete, Missing
from ._hamt import PersistentMapBase, Trie

__all__ = ["PersistentMap", "Trie"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_ABSENT: Any = object()

class _Builder:
    """A trie under construction: the target ``TransactionView._commit`` applies to.

    Each change makes a new version; nothing is shared with readers until the caller
    publishes ``trie``, so a commit that fails half-way leaves the map untouched.
    """

    __slots__ = ("trie",)

    def __init__(self, trie: Trie) -> None:
        self.trie = trie

    def __setitem__(self, key: Any, value: Any) -> None:
        self.trie = self.trie.set(key, value)

    def __delitem__(self, key: Any) -> None:
        self.trie = self.trie.delete(key)

    def update(self, items: Mapping[Any, Any]) -> None:
        for key, value in items.items():
            self[key] = value


class PersistentMap(PersistentMapBase, ConcurrentMapping[K, V]):
    """A concurrent map whose every version is an immutable hash array mapped trie.

    Guarantees (those of every :class:`~safemap.ConcurrentMapping`), on GIL and
    free-threaded CPython:

    - every method call is atomic (linearizable), also when a key's
      ``__hash__``/``__eq__`` or a callback runs Python code;
    - reads (``m[k]``, ``get``, ``in``, ``load``, ``len``) take no lock: they walk the
      current version, which no writer ever changes;
    - writes are serialized by one writer lock and publish a new version that shares all
      but the O(log n) nodes on the changed path; a compute-family callback runs holding
      that lock (it may read the map; writing to it raises
      :class:`~safemap.RecursiveUpdateError`), so a slow callback delays writers, never
      readers;
    - iteration walks the one version current when it started: it never raises, yields
      each key of that version exactly once, and ignores later writes;
    - ``transaction(fn)`` builds the next version from the view's changes and publishes it
      at once, or not at all if ``fn`` raises;
    - an exception from a key or a callback leaves the map unchanged; overwritten and
      removed values are released after the writer lock is released.
    """

    __slots__ = ("__weakref__", "_busy", "_held", "_lock")

    def __init__(self, other: Any = (), /, **kwargs: V) -> None:
        self._lock, _, self._held = mutex_locks()
        self._busy = False
        track_for_fork(self)
        self.update(other, **kwargs)

    def _after_fork_in_child(self) -> None:
        # Only the forking thread survives: if it holds the writer lock it is inside one of
        # this map's operations and keeps it; otherwise the lock may belong to a thread that
        # no longer exists, so the map gets a fresh one. The current version is consistent
        # either way: it changes by one pointer swap.
        if not self._held():
            self._lock, _, self._held = mutex_locks()
            self._busy = False
            self._set_txn(False)

    def _begin_write(self) -> None:
        """Called holding ``_lock``: refuse a re-entrant write, then mark the map busy."""
        if self._busy:
            raise RecursiveUpdateError(IN_OPERATION)
        self._busy = True

    # ---------------------------------------------------------------- primitives

    def store(self, key: K, value: V) -> None:
        with self._lock:
            self._begin_write()
            try:
                replaced = self._set(key, value)
            finally:
                self._busy = False
        del replaced  # released outside the lock: a value's __del__ may use the map

    def __setitem__(self, key: K, value: V) -> None:
        self.store(key, value)

    def compute(self, key: K, fn: Callable[[K, V | Missing], V | Delete]) -> V | None:
        replaced: Any = None
        with self._lock:
            self._begin_write()
            try:
                old = self._current().get(key, _ABSENT)
                new = fn(key, MISSING if old is _ABSENT else old)
                if new is DELETE:
                    if old is not _ABSENT:
                        replaced = self._pop(key)
                    result = None
                else:
                    replaced = self._set(key, new)
                    result = new
            finally:
                self._busy = False
        del replaced
        return result

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        with self._lock:
            self._begin_write()
            try:
                popped = self._pop(key)
            finally:
                self._busy = False
        if popped is None:
            return None, False
        return popped[1], True

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        return self._current().items()  # type: ignore[no-any-return]

    def clear(self) -> None:
        with self._lock:
            self._begin_write()
            try:
                replaced = self._publish(Trie())
            finally:
                self._busy = False
        del replaced

    def snapshot(self) -> FrozenMap[K, V]:
        return FrozenMap._adopt(self._current().to_dict())

    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        """Run ``fn(view)`` holding the writer lock and return its result. The view's
        changes become one new version, published at once when ``fn`` returns; if ``fn``
        raises, nothing is published. Readers never see a partial commit."""
        with self._lock:
            if self._busy:
                raise RecursiveUpdateError(IN_TRANSACTION)
            self._busy = True
            base = self._current()
            self._set_txn(True)
            view: TransactionView[K, V] = TransactionView(base)
            try:
                result = fn(view)
                builder = _Builder(base)
                view._commit(builder)  # type: ignore[arg-type]
                replaced = self._publish(builder.trie)
            finally:
                view._close()
                self._set_txn(False)
                self._busy = False
        del replaced, base
        return result

    def copy(self) -> PersistentMap[K, V]:
        """A new map of the same type with this map's current version (O(1): versions are
        immutable and shared) and, for a subclass, its instance attributes (shallow)."""
        new = type(self)()
        new._publish(self._current())
        attributes = getattr(self, "__dict__", None)
        if attributes:
            new.__dict__.update(attributes)
        return new
