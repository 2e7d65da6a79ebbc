"""The protocol layer: the ``ConcurrentMapping`` ABC, its sentinels, errors and value types.

Everything above (the maps, detection, metrics, bench, CLI) imports from here; this layer
imports nothing else of safemap's.
"""

from .errors import MapBusyError, MapClosedError, RecursiveUpdateError
from .frozen import FrozenMap
from .mapping import ConcurrentMapping
from .sentinels import DELETE, MISSING, DeleteType, MissingType
from .transaction import TransactionView

__all__ = [
    "DELETE",
    "MISSING",
    "ConcurrentMapping",
    "DeleteType",
    "FrozenMap",
    "MapBusyError",
    "MapClosedError",
    "MissingType",
    "RecursiveUpdateError",
    "TransactionView",
]
