"""The two locks a dict-backed map can sit behind, as ``(read, write)`` context managers.

``DictBackedMap`` enters ``read`` for shared access and ``write`` for exclusive access and
keeps its own re-entry bookkeeping; a lock choice only says how to exclude other threads:

- ``mutex_locks``: one ``threading.RLock`` for both. Re-entrant, so a compute callback, a
  key's ``__eq__`` or a ``__del__`` run by the cyclic GC that reads the map on the holding
  thread proceeds instead of deadlocking (the map refuses nested *writes* itself). The RLock
  is its own context manager, implemented in C: an asynchronous ``KeyboardInterrupt`` cannot
  land between the body and the release and leak the lock.
- ``rwlock_locks``: a :class:`~safemap.RWLock`. Its write side refuses, with
  ``RecursiveUpdateError``, a thread that already holds the lock: a nested write from inside
  an operation would be an upgrade, which deadlocks.

After ``os.fork()`` the child has only the forking thread, so a lock another thread held at
the fork would never be released: ``reset_after_fork`` gives every live map fresh locks in
the child (keeping holds of the forking thread), so the child can use its maps.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

from .._typing import TYPE_CHECKING, Any
from ..locks import RWLock
from ..protocol import RecursiveUpdateError

__all__ = [
    "IN_OPERATION",
    "IN_TRANSACTION",
    "Locks",
    "mutex_locks",
    "rwlock_locks",
    "track_for_fork",
]

if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from typing import TypeAlias

    Locks: TypeAlias = tuple[
        AbstractContextManager[Any], AbstractContextManager[Any], Callable[[], bool]
    ]
else:
    Locks = tuple  # annotations only; kept cheap at run time
"""``(read, write, held)``: context managers of one lock, and whether the calling thread
holds it."""

IN_TRANSACTION = (
    "the map's own methods cannot be called from inside its transaction(); use the view"
)
IN_OPERATION = (
    "cannot write to the map from inside one of its own operations "
    "(a compute-family callback, or a key's __hash__/__eq__)"
)


def mutex_locks() -> Locks:
    """One re-entrant mutex for reads and writes."""
    lock = threading.RLock()
    return lock, lock, lock._is_owned  # type: ignore[attr-defined]


class _RWRead:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire_read()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release_read()


class _RWWrite:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        if self._lock.held_by_current_thread():
            raise RecursiveUpdateError(IN_OPERATION)
        self._lock.acquire_write()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release_write()


def rwlock_locks() -> Locks:
    """One writer-preferring readers-writer lock: reads share, writes exclude."""
    lock = RWLock()
    return _RWRead(lock), _RWWrite(lock), lock.held_by_current_thread


# Keyed by id: maps are unhashable, so a WeakSet cannot hold them.
_live_maps: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def track_for_fork(owner: Any) -> None:
    """Register ``owner`` (it has ``_after_fork_in_child()``) to be reset in a fork child."""
    _live_maps[id(owner)] = owner


def _reset_after_fork() -> None:
    for owner in list(_live_maps.values()):
        owner._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
