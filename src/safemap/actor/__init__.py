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
