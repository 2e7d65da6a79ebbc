"""The circuit breaker: shed calls at once for a while after repeated overloads.

An *overload* is a call that an actor map could not take in time: its queue was full (at
once for a non-blocking call, or until the call's deadline), or it waited in the queue past
its deadline without being started. A *success* is a request the owner started. After
``failures`` overloads in a row the circuit opens: every call fails at once with
:class:`CircuitOpenError` for ``cooldown`` seconds, so callers stop piling onto a map that
cannot keep up and the owner can drain its backlog. Then the circuit is half-open: calls go
through again; the next success closes it, the next overload opens it for another cool-down.

The whole state machine (each transition under the mailbox's serialization)::

    CLOSED --(failures-th overload in a row)--> OPEN --(cooldown elapsed)--> HALF_OPEN
    CLOSED --(success)--> CLOSED, streak reset
    OPEN --(success or overload)--> OPEN: the owner is draining the backlog admitted before
        the circuit opened, which is what the cool-down is for; neither says anything new
    HALF_OPEN --(success)--> CLOSED;  HALF_OPEN --(overload)--> OPEN, a new cool-down

OPEN becomes HALF_OPEN when the clock passes the cool-down, whoever looks first (an
admission, a start, an overload or ``stats()``), so a start after the cool-down closes the
circuit even if no call was admitted in between.

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

    def current(self) -> str:
        """The state as of now (OPEN reads as HALF_OPEN once the cool-down is over), without
        changing anything: for ``stats()``, which may run off the mailbox's serialization."""
        if self.state == OPEN and not self._cooling():
            return HALF_OPEN
        return self.state

    def _cooling(self) -> bool:
        return self.opened_at + self.policy.cooldown - self.policy.clock() > 0

    def _refresh(self) -> None:
        if self.state == OPEN and not self._cooling():
            self.state = HALF_OPEN

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
        """A call was refused on a full queue or expired in it."""
        self._refresh()
        if self.state == OPEN:
            return  # the backlog from before the circuit opened expiring: already shedding
        self.streak += 1
        if self.state == HALF_OPEN or self.streak >= self.policy.failures:
            self.state = OPEN
            self.opened_at = self.policy.clock()
            self.streak = 0
            self.trips += 1

    def started(self) -> None:
        """The owner started a request. Only in HALF_OPEN does that close the circuit:
        while OPEN the owner is draining the backlog the cool-down is there for."""
        if self.state == CLOSED:
            self.streak = 0
            return
        self._refresh()
        if self.state == HALF_OPEN:
            self.state = CLOSED
            self.streak = 0
