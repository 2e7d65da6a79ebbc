"""The pure-Python maps: a dict behind a mutex or a readers-writer lock."""

from .locked import LockedMap
from .rwlocked import RWLockMap

__all__ = ["LockedMap", "RWLockMap"]
