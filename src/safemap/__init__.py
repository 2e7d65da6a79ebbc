"""safemap: shared maps that are safe and fast under concurrency.

Every mutable map implements :class:`ConcurrentMapping` (``docs/protocol.md``): atomic per
call, atomic compound operations (``compute``, ``merge``, compare-and-swap), weakly
consistent iteration that never raises, ``snapshot()`` and ``transaction()``.

Detection, as Go's runtime and ``-race`` do it: :func:`checked` gives a ``dict`` that
raises at once on overlapping use by several threads, and :mod:`safemap.race` is a
happens-before race detector for Python-level maps (also ``pytest --safemap-race``).

``import safemap`` loads only the protocol and the lock-based and native maps; the actor
maps, the fail-fast dict and the race detector are imported on first use of their names
(PEP 562), so a program pays for what it touches.

PYTEST_DONT_REWRITE (safemap holds no assertions for pytest; the marker keeps pytest from
warning when the race detector's start-up hook imported safemap before pytest started)
"""

from __future__ import annotations

import sys

from ._typing import TYPE_CHECKING, Any
from ._version import __version__
from .locks import RWLock
from .maps import LockedMap, RWLockMap
from .native import ConcurrentMap, SyncMap
from .persistent import PersistentMap
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

if TYPE_CHECKING:  # the lazily imported names, for type checkers and IDEs
    from . import race
    from .actor import (
        ActorMap,
        ActorStats,
        AsyncActorMap,
        CircuitBreaker,
        CircuitOpenError,
        OutcomeUnknownError,
    )
    from .cache import Cache, CacheInfo, cached
    from .failfast import (
        CheckedDict,
        ConcurrentIterationError,
        ConcurrentMapMisuse,
        ConcurrentReadWriteError,
        ConcurrentWriteError,
        ThreadConfinementError,
        checked,
    )
    from .protocol.stats import LatencyHistogram, MailboxStats, MapStats, ShardStats

# Public name -> the module that defines it, imported on first access.
_LAZY: dict[str, str] = {
    "Cache": "safemap.cache",
    "CacheInfo": "safemap.cache",
    "cached": "safemap.cache",
    "ActorMap": "safemap.actor",
    "ActorStats": "safemap.actor",
    "AsyncActorMap": "safemap.actor",
    "CircuitBreaker": "safemap.actor",
    "CircuitOpenError": "safemap.actor",
    "OutcomeUnknownError": "safemap.actor",
    "CheckedDict": "safemap.failfast",
    "ConcurrentIterationError": "safemap.failfast",
    "ConcurrentMapMisuse": "safemap.failfast",
    "ConcurrentReadWriteError": "safemap.failfast",
    "ConcurrentWriteError": "safemap.failfast",
    "ThreadConfinementError": "safemap.failfast",
    "checked": "safemap.failfast",
    "LatencyHistogram": "safemap.protocol.stats",
    "MailboxStats": "safemap.protocol.stats",
    "MapStats": "safemap.protocol.stats",
    "ShardStats": "safemap.protocol.stats",
}

__all__ = [
    "DELETE",
    "MISSING",
    "ActorMap",
    "ActorStats",
    "AsyncActorMap",
    "Cache",
    "CacheInfo",
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
    "LatencyHistogram",
    "LockedMap",
    "MailboxStats",
    "MapBusyError",
    "MapClosedError",
    "MapStats",
    "MissingType",
    "OutcomeUnknownError",
    "PersistentMap",
    "RWLock",
    "RWLockMap",
    "RecursiveUpdateError",
    "ShardStats",
    "SyncMap",
    "ThreadConfinementError",
    "__version__",
    "cached",
    "checked",
    "race",
]


def __getattr__(name: str) -> Any:
    if name == "race":
        __import__("safemap.race")
        return sys.modules["safemap.race"]
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'safemap' has no attribute {name!r}")
    __import__(module)
    value = getattr(sys.modules[module], name)
    globals()[name] = value  # later lookups are plain module attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
