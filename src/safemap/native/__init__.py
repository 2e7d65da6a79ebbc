"""The native maps: :class:`ConcurrentMap` (sharded) and :class:`SyncMap` (Go ``sync.Map``).

Both are C types (``safemap.native._core``) combined with the protocol ABC
:class:`~safemap.protocol.ConcurrentMapping`, which supplies the derived methods (views,
``==``, ``repr``, copy, pickle, ``update``, ``range``, ``delete_if``, ``popitem``, ``|``).
The C side implements every hot method itself. The design, and how each operation stays
atomic, is in ``docs/native.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping

from .._typing import TYPE_CHECKING, Any, TypeVar
from ..protocol import ConcurrentMapping, TransactionView
from . import _core

if TYPE_CHECKING:
    from ..protocol.stats import MapStats

__all__ = ["ConcurrentMap", "SyncMap"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

if hasattr(os, "register_at_fork"):
    # In a fork child only the forking thread exists: locks other threads held are void.
    os.register_at_fork(after_in_child=_core._after_fork_child)

DEFAULT_SHARDS: int = _core.DEFAULT_SHARDS
"""The shard count ``ConcurrentMap()`` uses: 4 per CPU, a power of two in [8, 128]."""


_COUNTERS = (
    "hits",
    "misses",
    "inserts",
    "updates",
    "deletes",
    "size",
    "iterations",
    "writes_during_iteration",
    "lock_acquisitions",
    "lock_contentions",
    "lock_wait_seconds",
)


def _map_stats(kind: str, raw: dict[str, Any]) -> MapStats:
    """The MapStats of a native map's ``_stats_raw()`` (imported here, not at module import:
    ``import safemap`` stays light)."""
    from ..protocol.stats import MapStats, ShardStats

    shards = tuple(ShardStats(i, *row) for i, row in enumerate(raw.get("shards", ())))
    return MapStats(kind=kind, shards=shards, **{name: raw[name] for name in _COUNTERS})


def _run_transaction(storage: Any, fn: Callable[[MutableMapping[Any, Any]], T]) -> T:
    """Run ``fn`` on a view over ``storage`` and commit the view into it.

    Called while the map's every lock is held by this thread; the caller releases them.
    If ``fn`` raises, the view is closed and nothing reaches the map.
    """
    view: TransactionView[Any, Any] = TransactionView(storage)
    try:
        result = fn(view)
    except BaseException:
        view._close()
        raise
    view._commit(storage)
    return result


class ConcurrentMap(_core.ConcurrentMapBase, ConcurrentMapping[K, V]):
    """A general-purpose concurrent map: a fixed array of shards, each a ``dict`` with its
    own lock.

    ``ConcurrentMap(data=(), /, *, shards=None, **items)``: ``shards`` is a positive int
    (``ValueError`` otherwise; ``TypeError`` for a non-int or a bool); the default,
    ``safemap.native.DEFAULT_SHARDS``, is 4 per CPU.

    Guarantees (``docs/protocol.md``), on GIL and free-threaded CPython:

    - every method call is atomic (linearizable), also when a key's ``__hash__``/``__eq__``
      or a callback runs Python code, releases the GIL or blocks;
    - reads (``m[k]``, ``get``, ``in``, ``load``) take no lock;
    - writes lock one shard; a compute-family callback (``compute``,
      ``compute_if_absent``, ``compute_if_present``, ``merge``) runs holding its key's
      shard lock, so a slow or blocked callback delays writers of that shard only;
      it may read the map, and any write to the map from it raises
      :class:`~safemap.RecursiveUpdateError`;
    - ``compute_if_absent`` calls its factory at most once per absent key;
    - iteration is weakly consistent and holds no lock while your loop body runs;
      ``snapshot()`` is a consistent point-in-time copy;
    - ``transaction(fn)`` holds every shard lock while ``fn`` runs; the map's own
      methods raise :class:`~safemap.RecursiveUpdateError` inside ``fn`` (use the view);
    - an exception from a key or a callback leaves the map unchanged; overwritten and
      removed values are released only after the lock is released.

    Statistics (``stats()``) are exact on both builds and always on: point reads as hits
    and misses, inserts, updates and deletes, iterations and writes made during one, and
    per shard its entries, lock acquisitions, contended acquisitions and time waited.
    """

    __slots__ = ()

    def _collect_stats(self) -> MapStats:
        """Exact counters since the map was made (``docs/native.md``, "Statistics"); one
        ``ShardStats`` per shard."""
        return _map_stats(type(self).__name__, self._stats_raw())

    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        """Run ``fn(view)`` holding every shard lock (taken in index order) and return its
        result; the view's changes land all at once when ``fn`` returns, or not at all if
        it raises. Readers never see a partial commit."""
        result: T = self._transact(_run_transaction, fn)  # one C call: see docs/native.md
        return result


class SyncMap(_core.SyncMapBase, ConcurrentMapping[K, V]):
    """A read-optimized concurrent map with Go ``sync.Map``'s design.

    Best for keys written once and read many times, or for threads working on disjoint
    key sets. Guarantees (``docs/protocol.md``), on GIL and free-threaded
    CPython:

    - every method call is atomic (linearizable);
    - reads never take a lock for keys already promoted to the read map, and updating
      or deleting such a key takes no map-wide lock either (a per-entry atomic swap);
      new keys go to a "dirty" map under one mutex, which is promoted to the read map
      after enough reads had to take the mutex (Go's miss counter);
    - compute-family callbacks run under the map's mutex, with in-place writers
      diverted to it: a slow callback delays writers (never readers); writing to the map
      from a callback raises :class:`~safemap.RecursiveUpdateError`;
    - iteration is weakly consistent and holds no lock while your loop body runs;
      ``snapshot()`` is a consistent point-in-time copy;
    - an exception from a key or a callback leaves the map unchanged.

    Statistics (``stats()``) are exact on both builds and always on; the mutex's
    acquisitions, contentions and wait are the map's ``lock_*`` counters (no per-shard
    detail: the map has one lock).
    """

    __slots__ = ()

    def _collect_stats(self) -> MapStats:
        """Exact counters since the map was made (``docs/native.md``, "Statistics")."""
        return _map_stats(type(self).__name__, self._stats_raw())

    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        """Run ``fn(view)`` with every writer excluded and return its result; the view's
        changes land all at once when ``fn`` returns, or not at all if it raises."""
        result: T = self._transact(_run_transaction, fn)  # one C call: see docs/native.md
        return result
