"""The circuit breaker: shed calls at once for a while after repeated overloads.

An *overload* is a call that an actor map could not take in time: its queue was full (at
once for a non-blocking call, or until the call's deadline), or it waited in the queue past
its deadline without being started. A *success* is a request the owner started. After
``failures`` overloads in a row the circuit opens: every call fails at once with
:class:`CircuitOpenError` for ``cooldown`` seconds, so callers stop piling onto a map that
cannot keep up and the owner can drain its backlog. Then the circuit is half-open: calls go
through again; the next success closes it, the next overload opens it for another cool-down.

``BreakerState`` is not thread-safe on its own: a mailbox calls it only under its own lock
(threads) or on its event loop (asyncio), where it already serializes admissions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ..protocol import MapBusyError

__all__ = ["BreakerState", "CircuitBreaker", "CircuitOpenError"]


class CircuitOpenError(MapBusyError):
    """The map's circuit breaker is open: after repeated overloads it rejects every call at
    once for a cool-down period. The call had no effect. ``retry_after`` is how many seconds
    remain until calls are let through again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class CircuitBreaker:
    """Breaker policy of an actor map: open after ``failures`` consecutive overloads and
    reject calls for ``cooldown`` seconds. ``clock`` (monotonic seconds) is replaceable for
    tests. Each map keeps its own state; one policy can configure many maps."""

    failures: int = 5
    cooldown: float = 1.0
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.failures, int) or self.failures < 1:
            raise ValueError(f"failures must be a positive int, not {self.failures!r}")
        if not self.cooldown >= 0:  # also rejects NaN
            raise ValueError(f"cooldown must be a non-negative number, not {self.cooldown!r}")


CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"


class BreakerState:
    """One map's breaker: the policy plus the current streak and state."""

    __slots__ = ("opened_at", "policy", "state", "streak", "trips")

    def __init__(self, policy: CircuitBreaker) -> None:
        self.policy = policy
        self.state = CLOSED
        self.streak = 0  # consecutive overloads
        self.opened_at = 0.0
        self.trips = 0  # how many times it opened

    def check(self) -> CircuitOpenError | None:
        """The error to reject a call with, or None to admit it. Reads the clock only while
        open, so a closed breaker costs one comparison per call."""
        if self.state != OPEN:
            return None
        wait = self.opened_at + self.policy.cooldown - self.policy.clock()
        if wait > 0:
            return CircuitOpenError(
                f"circuit open after {self.policy.failures} consecutive overloads; "
                f"calls are rejected for {wait:.3g} s more",
                wait,
            )
        self.state = HALF_OPEN
        return None

    def overload(self) -> None:
        self.streak += 1
        if self.state == HALF_OPEN or self.streak >= self.policy.failures:
            self.state = OPEN
            self.opened_at = self.policy.clock()
            self.streak = 0
            self.trips += 1

    def success(self) -> None:
        self.streak = 0
        self.state = CLOSED
