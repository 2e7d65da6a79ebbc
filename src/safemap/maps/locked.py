"""``LockedMap``: one mutex around a dict."""

from __future__ import annotations

from .._typing import TypeVar
from ._dictmap import DictBackedMap
from ._guards import LockChoice, mutex_locks

__all__ = ["LockedMap"]

K = TypeVar("K")
V = TypeVar("V")


class LockedMap(DictBackedMap[K, V]):
    """The simplest correct map: every operation holds one mutex (Go's ``sync.Mutex`` +
    ``map``). Implements the whole :class:`~safemap.ConcurrentMapping` protocol.

    Use it as the reference model, for small maps, or when operations are few and cheap.
    One lock serializes everything, so it does not scale with threads: prefer
    :class:`~safemap.ConcurrentMap` for throughput. A compute callback that blocks blocks
    every other operation on the map until it returns.
    """

    __slots__ = ()

    @staticmethod
    def _make_locks() -> LockChoice:
        return mutex_locks()
