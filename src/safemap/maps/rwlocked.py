"""``RWLockMap``: a readers-writer lock around a dict."""

from __future__ import annotations

from .._typing import TypeVar
from ._dictmap import DictBackedMap
from ._guards import LockChoice, rwlock_locks

__all__ = ["RWLockMap"]

K = TypeVar("K")
V = TypeVar("V")


class RWLockMap(DictBackedMap[K, V]):
    """A dict behind a writer-preferring :class:`~safemap.RWLock` (Go's ``sync.RWMutex`` +
    ``map``). Implements the whole :class:`~safemap.ConcurrentMapping` protocol.

    Readers proceed together and a writer waits for them; a waiting writer holds back new
    readers, so writes are not starved. The lock itself costs more than a mutex per call:
    choose it when reads are long (large ``snapshot()``, iteration copies, slow key
    ``__eq__``) and writes rare; for short operations prefer :class:`~safemap.ConcurrentMap`.
    """

    __slots__ = ()

    @staticmethod
    def _make_locks() -> LockChoice:
        return rwlock_locks()
