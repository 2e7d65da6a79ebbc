"""``PersistentMap``: a concurrent map whose every version is an immutable hash trie.

The C core (``safemap.persistent._hamt``) holds a persistent hash array mapped trie
(``Trie``: each ``set``/``delete`` returns a new version sharing every node off the changed
path) and ``PersistentMapBase``: the pointer to the map's current version, the lock-free
reads and the writes, serialized by one writer lock. This module adds the rest of the
protocol. Design and guarantees: ``docs/persistent.md``.

Invariants:
- the current version is replaced only by a thread holding the writer lock, so each write
  (including a compute-family callback and a transaction) sees the version it replaces
  unchanged: writes are atomic per call and callbacks run exactly once;
- readers take no lock: they load the current version and walk it (free-threaded 3.14+:
  point reads of exact str/int keys without even a reference, a replaced version being
  released only when no such read can still be walking it; see docs/persistent.md); a
  version never changes once observable, so a read, an iteration or a ``snapshot()`` sees
  one version, whatever writers do meanwhile;
- a thread that holds the writer lock and asks for a write is inside one of the map's own
  operations: the write raises ``RecursiveUpdateError`` and changes nothing;
- a replaced version is released after the writer lock is released, so overwritten and
  removed values are freed (and their ``__del__`` runs) outside the lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping

from .._typing import TYPE_CHECKING, Any, TypeVar, cast
from ..maps._guards import track_for_fork
from ..protocol import ConcurrentMapping, FrozenMap, TransactionView
from ..protocol.variants import plain_class
from ._hamt import PersistentMapBase, Trie

if TYPE_CHECKING:
    from ..protocol.stats import MapStats

__all__ = ["PersistentMap", "Trie"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


class _Builder:
    """A version under construction: the target ``TransactionView._commit`` applies to.

    The changes go into one private batch (``Trie.mutate()``: nodes the batch made are
    updated in place, any other node is copied once); nothing is shared with readers until
    the caller publishes ``finish()``, so a commit that fails half-way leaves the map
    untouched. Counts the inserts, updates and deletes it applied (for ``stats()``).
    """

    __slots__ = ("batch", "deletes", "inserts", "updates")

    def __init__(self, trie: Trie) -> None:
        self.batch = trie.mutate()
        self.inserts = self.updates = self.deletes = 0

    def __contains__(self, key: object) -> bool:
        return key in self.batch

    def __getitem__(self, key: Any) -> Any:
        return self.batch[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.batch.set(key, value):
            self.inserts += 1
        else:
            self.updates += 1

    def __delitem__(self, key: Any) -> None:
        self.batch.pop(key)
        self.deletes += 1


def _run_transaction(
    base: Trie, fn: Callable[[MutableMapping[Any, Any]], T]
) -> tuple[T, Trie, int, int, int]:
    """Run ``fn`` on a view over ``base`` (the version the transaction starts from) and
    build the version its changes make; called holding the writer lock, by ``_transact``,
    which publishes that version. Returns (``fn``'s result, the new version, inserts,
    updates, deletes); if anything raises, nothing is published."""
    # A Trie is read as a Mapping by the view (get item, in, iter, len).
    view: TransactionView[Any, Any] = TransactionView(cast("Mapping[Any, Any]", base))
    try:
        result = fn(view)
        builder = _Builder(base)
        view._commit(builder)  # type: ignore[arg-type]
    finally:
        view._close()
    return result, builder.batch.finish(), builder.inserts, builder.updates, builder.deletes


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
      removed values are released after the writer lock is released;
    - ``update()`` (and the constructor) stores all its items as one batch published as
      one version: readers see none or all of them; a key that raises stores nothing;
    - ``copy()`` is O(1): the copy starts from the same (immutable) version.
    """

    __slots__ = ("__weakref__",)

    def __init__(self, other: Any = (), /, **kwargs: V) -> None:
        track_for_fork(self)
        if type(other) is dict and not kwargs:
            # update()'s own path, minus its Python loops: _store_items takes a dict as
            # is (it reads a private copy) and refuses a sentinel value before storing
            # anything, as update() does.
            self._store_items(other)
        else:
            self.update(other, **kwargs)

    def _after_fork_in_child(self) -> None:
        self._after_fork()

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        return self._items()

    def _collect_stats(self) -> MapStats:
        """Exact counters on every build: point reads count into per-thread stripes (on
        free-threaded builds a reader writes only its own cache line), writes count under
        the writer lock; ``lock_*`` are the writer lock's."""
        from ..protocol.stats import MapStats

        c = self._stats()
        return MapStats(
            kind=type(self).__name__,
            hits=c["hits"],
            misses=c["misses"],
            inserts=c["inserts"],
            updates=c["updates"],
            deletes=c["deletes"],
            size=len(self),
            iterations=c["iterations"],
            writes_during_iteration=c["writes_during_iteration"],
            lock_acquisitions=c["lock_acquisitions"],
            lock_contentions=c["lock_contentions"],
            lock_wait_seconds=c["lock_wait_ns"] / 1e9,
        )

    def snapshot(self) -> FrozenMap[K, V]:
        """The current version as a FrozenMap: O(1), the FrozenMap shares the version."""
        return FrozenMap._from_trie(self._current())

    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        """Run ``fn(view)`` holding the writer lock and return its result. The view's
        changes become one new version, published at once when ``fn`` returns; if ``fn``
        raises, nothing is published. Readers never see a partial commit."""
        result: T = self._transact(_run_transaction, fn)  # one C call: see docs/native.md
        return result

    def copy(self) -> PersistentMap[K, V]:
        """A new map of the same type holding this map's current version (O(1): versions
        are immutable and shared) and, for a subclass, its instance attributes (shallow)."""
        new = plain_class(type(self))()
        new._publish(self._current())
        attributes = getattr(self, "__dict__", None)
        if attributes:
            new.__dict__.update(attributes)
        return new
