"""Synchronization primitives the maps are built on."""

from ..protocol import contention
from . import _rwlock
from .rwlock import RWLock

__all__ = ["RWLock"]


# The contention profiler (safemap.protocol.contention) turns the native locks' sampling on
# and off through this setter (one function for every native lock of the process).
contention.register_backend(_rwlock._set_contention_sampling)
