"""Synchronization primitives the maps are built on."""

from .rwlock import RWLock

__all__ = ["RWLock"]
