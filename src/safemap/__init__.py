"""safemap: shared maps that are safe and fast under concurrency.

Every mutable map implements :class:`ConcurrentMapping` (``shared/spec/map-protocol.md``):
atomic per call, atomic compound operations (``compute``, ``merge``, compare-and-swap),
weakly consistent iteration that never raises, ``snapshot()`` and ``transaction()``.

Detection, as Go's runtime and ``-race`` do it: :func:`checked` gives a ``dict`` that
raises at once on overlapping use by several threads, and :mod:`safemap.race` is a
happens-before race detector for Python-level maps (also ``pytest --safemap-race``).
"""

import contextlib

from . import race
from ._version import __version__
from .actor import (
    ActorMap,
    ActorStats,
    AsyncActorMap,
    CircuitBreaker,
    CircuitOpenError,
)
from .failfast import (
    CheckedDict,
    ConcurrentIterationError,
    ConcurrentMapMisuse,
    ConcurrentReadWriteError,
    ConcurrentWriteError,
    ThreadConfinementError,
    checked,
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
    "CheckedDict",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConcurrentIterationError",
    "ConcurrentMap",
    "ConcurrentMapMisuse",
    "ConcurrentMapping",
    "ConcurrentReadWriteError",
    "ConcurrentWriteError",
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
    "ThreadConfinementError",
    "__version__",
    "checked",
    "race",
]


def _publish_under_package_name() -> None:
    # Public classes report ``safemap`` as their module, so reprs read ``safemap.LockedMap``
    # and pickles refer to the stable public name rather than to internal module paths.
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and obj.__module__.startswith("safemap."):
            # C types are immutable: they keep the name their module gave them.
            with contextlib.suppress(TypeError):
                obj.__module__ = "safemap"


_publish_under_package_name()
