"""Synchronization primitives the maps are built on."""

from ..protocol import contention
from . import _rwlock
from .rwlock import RWLock

__all__ = ["RWLock"]


# The contention profiler (safemap.protocol.contention) turns the native locks' sampling on
# and off through this setter. It is the one sampler of the C RWLock and of the native maps'
# locks (native._core reaches it through _rwlock's capsule, and its
# _set_contention_sampling is this same function), so one registration covers them all.
contention.register_backend(_rwlock._set_contention_sampling)
