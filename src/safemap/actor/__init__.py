"""Actor maps: a dict owned by one thread (``ActorMap``) or one asyncio task
(``AsyncActorMap``), reached only through messages. See ``docs/actor.md``."""

from ._breaker import CircuitBreaker, CircuitOpenError
from ._handoff import OutcomeUnknownError
from ._stats import ActorStats
from .asyncmap import AsyncActorMap, ThreadsafeView
from .threaded import ActorMap

__all__ = [
    "ActorMap",
    "ActorStats",
    "AsyncActorMap",
    "CircuitBreaker",
    "CircuitOpenError",
    "OutcomeUnknownError",
    "ThreadsafeView",
]


def _publish_under_package_name() -> None:
    # Public classes report ``safemap.actor`` as their module, so reprs and pickles (a
    # CircuitBreaker is pickled with a map's options) use the stable public path.
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and obj.__module__.startswith("safemap.actor."):
            obj.__module__ = "safemap.actor"


_publish_under_package_name()
