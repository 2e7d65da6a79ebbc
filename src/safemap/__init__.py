"""safemap: shared maps that are safe and fast under concurrency.

Every mutable map implements :class:`ConcurrentMapping` (``shared/spec/map-protocol.md``):
atomic per call, atomic compound operations (``compute``, ``merge``, compare-and-swap),
weakly consistent iteration that never raises, ``snapshot()`` and ``transaction()``.
"""

from ._version import __version__
from .actor import (
    ActorMap,
    ActorStats,
    AsyncActorMap,
    CircuitBreaker,
    CircuitOpenError,
)
from .locks import RWLock
from .maps import LockedMap, RWLockMap
from .native import ConcurrentMap, SyncMap
from .protocol import (
    DELETE,
    MISSING,
    ConcurrentMapping,
    DeleteType,
    FrozenMap,
    MapBusyError,
    MapClosedError,
    MissingType,
    RecursiveUpdateError,
)

__all__ = [
    "DELETE",
    "MISSING",
    "ActorMap",
    "ActorStats",
    "AsyncActorMap",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConcurrentMap",
    "ConcurrentMapping",
    "DeleteType",
    "FrozenMap",
    "LockedMap",
    "MapBusyError",
    "MapClosedError",
    "MissingType",
    "RWLock",
    "RWLockMap",
    "RecursiveUpdateError",
    "SyncMap",
    "__version__",
]


def _publish_under_package_name() -> None:
    # Public classes report ``safemap`` as their module, so reprs read ``safemap.LockedMap``
    # and pickles refer to the stable public name rather than to internal module paths.
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and obj.__module__.startswith("safemap."):
            obj.__module__ = "safemap"


_publish_under_package_name()
