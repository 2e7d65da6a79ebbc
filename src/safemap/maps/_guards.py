"""Guards: the context managers through which a dict-backed map reads, writes and transacts.

A guard turns a lock into the three access modes of the protocol and enforces its re-entry
rules, so that ``_dictmap.DictBackedMap`` is written once for every lock:

- ``read``: shared access. Allowed while the same thread is inside a compute callback or a
  key's ``__eq__`` (the data cannot change under it: this thread holds the lock), refused with
  ``RecursiveUpdateError`` inside a transaction (the callback must use its view).
- ``write``: exclusive access for one mutation or one compute. Refused with
  ``RecursiveUpdateError`` when the calling thread is already inside any operation of the
  same map: a write from a compute callback or from a key's ``__eq__`` would break the atomicity
  of the operation in progress, and, with a readers-writer lock, deadlock on an upgrade.
- ``exclusive``: like ``write``, for a transaction; marks the map so that reads refuse too.

Each guard's bookkeeping (``depth``, ``txn``) is only touched by the thread holding the lock,
so it needs no lock of its own.
"""

from __future__ import annotations

import threading
from typing import Protocol

from ..locks import RWLock
from ..protocol import RecursiveUpdateError

__all__ = ["Guards", "mutex_guards", "rwlock_guards"]


class _Mode(Protocol):
    def __enter__(self) -> None: ...
    def __exit__(self, *exc_info: object) -> None: ...


Guards = tuple[_Mode, _Mode, _Mode]
"""``(read, write, exclusive)`` context managers sharing one lock."""

_IN_TXN = "the map's own methods cannot be called from inside its transaction(); use the view"
_IN_OP = (
    "cannot write to the map from inside one of its own operations "
    "(a compute-family callback, or a key's __hash__/__eq__)"
)


# ------------------------------------------------------------------- one mutex


class _MutexState:
    """A re-entrant mutex plus the holder's nesting depth and transaction flag."""

    __slots__ = ("depth", "lock", "txn")

    def __init__(self) -> None:
        # Re-entrant so that a compute callback (or a key's __eq__, or a __del__ run by the
        # cyclic GC) that reads the map on the holding thread proceeds instead of deadlocking.
        self.lock = threading.RLock()
        self.depth = 0  # operations of this map the holding thread is inside
        self.txn = False


class _MutexRead:
    __slots__ = ("_s",)

    def __init__(self, state: _MutexState) -> None:
        self._s = state

    def __enter__(self) -> None:
        s = self._s
        s.lock.acquire()
        if s.txn:
            s.lock.release()
            raise RecursiveUpdateError(_IN_TXN)
        s.depth += 1

    def __exit__(self, *exc_info: object) -> None:
        s = self._s
        s.depth -= 1
        s.lock.release()


class _MutexWrite:
    __slots__ = ("_s", "_txn")

    def __init__(self, state: _MutexState, txn: bool) -> None:
        self._s = state
        self._txn = txn

    def __enter__(self) -> None:
        s = self._s
        s.lock.acquire()
        if s.depth:
            s.lock.release()
            raise RecursiveUpdateError(_IN_TXN if s.txn else _IN_OP)
        s.depth = 1
        s.txn = self._txn

    def __exit__(self, *exc_info: object) -> None:
        s = self._s
        s.depth = 0
        s.txn = False
        s.lock.release()


def mutex_guards() -> Guards:
    """Guards over one re-entrant mutex: every access is exclusive."""
    state = _MutexState()
    return _MutexRead(state), _MutexWrite(state, False), _MutexWrite(state, True)


# --------------------------------------------------------- readers-writer lock


class _RWState:
    __slots__ = ("lock", "txn")

    def __init__(self) -> None:
        self.lock = RWLock()
        self.txn = False


class _RWRead:
    __slots__ = ("_s",)

    def __init__(self, state: _RWState) -> None:
        self._s = state

    def __enter__(self) -> None:
        s = self._s
        s.lock.acquire_read()
        # While txn is set the transacting thread holds the write lock, so it is the only
        # thread that can have been granted this read hold.
        if s.txn:
            s.lock.release_read()
            raise RecursiveUpdateError(_IN_TXN)

    def __exit__(self, *exc_info: object) -> None:
        self._s.lock.release_read()


class _RWWrite:
    __slots__ = ("_s", "_txn")

    def __init__(self, state: _RWState, txn: bool) -> None:
        self._s = state
        self._txn = txn

    def __enter__(self) -> None:
        s = self._s
        if s.lock.held_by_current_thread():
            raise RecursiveUpdateError(_IN_TXN if s.txn else _IN_OP)
        s.lock.acquire_write()
        s.txn = self._txn

    def __exit__(self, *exc_info: object) -> None:
        s = self._s
        s.txn = False
        s.lock.release_write()


def rwlock_guards() -> Guards:
    """Guards over one :class:`~safemap.RWLock`: reads share, writes exclude."""
    state = _RWState()
    return _RWRead(state), _RWWrite(state, False), _RWWrite(state, True)
