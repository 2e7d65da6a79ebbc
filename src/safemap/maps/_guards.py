"""The two locks a dict-backed map can sit behind, and how the map counts through them.

``DictBackedMap`` takes shared access with ``_try_read()`` (and, only if that failed, the
timed blocking ``acquire_read()``), exclusive access with ``_try_write()`` /
``acquire_write()``, and keeps its own re-entry bookkeeping; a lock choice only says how to
exclude other threads:

- ``mutex_locks``: one re-entrant mutex (``MutexCore``: ``threading.RLock``'s semantics)
  for both. Re-entrant, so a compute callback, a key's ``__eq__`` or a ``__del__`` run by
  the cyclic GC that reads the map on the holding thread proceeds instead of deadlocking
  (the map refuses nested *writes* itself).
- ``rwlock_locks``: a :class:`~safemap.RWLock`. Its write side refuses, with
  ``RecursiveUpdateError``, a thread that already holds the lock: a nested write from inside
  an operation would be an upgrade, which deadlocks.

Counting. Both locks are the same C state machine (``safemap.locks._rwlock``: the RWLock,
and ``MutexCore``, its exclusive re-entrant mode), which also keeps the map's counts
(``_tallies()``): hits, misses and other reads, inserts, updates, deletes and writes during
iteration, changed only with the lock's own state locked, so exact under any number of
threads with or without the GIL. The map's point reads and stores do their dict operation,
count it and release the hold in one C call (``_get_release``, ``_store_release``, ...): the
statistics cost the hot paths no Python code. On free-threaded builds the counts sit beside
the state lock, which every holder writes anyway to take and drop its hold, so counting
makes no reader write a cache line it would not write without statistics.

After ``os.fork()`` the child has only the forking thread, so a lock another thread held at
the fork would never be released: the C module forgets, in the child, every hold and waiter
of the other threads of every lock (keeping the forking thread's holds and every count),
and ``_reset_after_fork`` then lets every live map reset its own Python-level state.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

from .._typing import Any
from ..locks import RWLock
from ..locks._rwlock import MutexCore, RWLockCore
from ..protocol import RecursiveUpdateError

__all__ = [
    "IN_OPERATION",
    "IN_TRANSACTION",
    "LockChoice",
    "mutex_locks",
    "rwlock_locks",
    "track_for_fork",
]

IN_TRANSACTION = (
    "the map's own methods cannot be called from inside its transaction(); use the view"
)
IN_OPERATION = (
    "cannot write to the map from inside one of its own operations "
    "(a compute-family callback, or a key's __hash__/__eq__)"
)


class LockChoice:
    """A map's lock and what it refuses.

    ``lock`` is an :class:`~safemap.locks._rwlock.RWLockCore` (an ``RWLock`` or a
    ``MutexCore``): the map binds its C methods (no wrapper on the fast path).
    ``refuse_write()`` (``None`` if the lock allows it) raises ``RecursiveUpdateError`` for a
    write the calling thread's own hold would deadlock, and is called before any write
    acquisition.

    Every acquisition and release is a method of the lock itself (C code), so that an
    acquisition made inside a ``try`` cannot be interrupted (by a signal handler's
    exception) after it took the lock and before the ``try`` protects it: no Python frame
    runs in between."""

    __slots__ = ("lock", "refuse_write")

    def __init__(self, lock: RWLockCore, refuse_write: Callable[[], None] | None) -> None:
        self.lock = lock
        self.refuse_write = refuse_write


def mutex_locks() -> LockChoice:
    """One re-entrant mutex for reads and writes (``threading.RLock``'s semantics)."""
    # The map reports its own contended waits (``LockedMap.read``/``.write``); a
    # MutexCore reports none to the native sampler. Re-entrant, so the map refuses
    # nested writes itself (``_busy``).
    return LockChoice(MutexCore(), None)


def rwlock_locks() -> LockChoice:
    """One writer-preferring readers-writer lock: reads share, writes exclude."""
    lock = RWLock()
    lock._unsampled()  # the map reports its contended waits under its own name
    held = lock.held_by_current_thread

    def refuse_write() -> None:
        # A thread holding the lock that asks for the write side would upgrade (deadlock):
        # the lock would raise RuntimeError; the map says why in its own terms.
        if held():
            raise RecursiveUpdateError(IN_OPERATION)

    return LockChoice(lock, refuse_write)


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
