"""``ActorStats`` and the bookkeeping both mailboxes share (counters, breaker, limits)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Final

from ..protocol import MapBusyError
from ._breaker import CLOSED, BreakerState, CircuitBreaker
from ._owner import Owner

__all__ = ["ActorStats", "MailboxCounters", "check_maxsize", "check_options", "normalize_timeout"]

# Longest wait the lock primitives accept; anything longer means "no deadline".
_TIMEOUT_MAX: Final = threading.TIMEOUT_MAX


def check_maxsize(maxsize: int) -> int:
    if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
        raise ValueError(f"maxsize must be a positive int, not {maxsize!r}")
    return maxsize


_OPTION_TYPES: Final[dict[str, tuple[str, tuple[type, ...]]]] = {
    "name": ("a str or None", (str, type(None))),
    "breaker": ("a CircuitBreaker or None", (CircuitBreaker, type(None))),
    "daemon": ("a bool", (bool,)),
}


def check_options(kind: str, **options: object) -> None:
    """Check the type of an actor map's keyword-only options (``name``, ``breaker``,
    ``daemon``; ``maxsize`` and ``timeout`` have their own checks). Their names are
    reserved, so a value of the wrong type most likely meant an item: the error says how
    to store such a key."""
    for option, value in options.items():
        expected, types = _OPTION_TYPES[option]
        if not isinstance(value, types):
            raise TypeError(
                f"{kind}'s keyword option {option}= must be {expected}, not {value!r}; "
                f"option names are reserved: to store the key {option!r}, pass it in the "
                f"mapping, e.g. {kind}({{{option!r}: ...}})"
            )


def normalize_timeout(timeout: float | None) -> float | None:
    """``None`` for no deadline, else a number of seconds >= 0 (``inf`` means none)."""
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError(f"timeout must be None or a number of seconds, not {timeout!r}")
    if not timeout >= 0:  # also rejects NaN
        raise ValueError(f"timeout must be None or a non-negative number, not {timeout!r}")
    return None if timeout >= _TIMEOUT_MAX or math.isinf(timeout) else float(timeout)


@dataclass(frozen=True, slots=True)
class ActorStats:
    """Counters of an actor map (``m.stats()``). Each counter is exact; they are read
    together but the owner may finish a request between two reads, so ``completed`` can
    be ahead of ``accepted - queue_depth`` by the request in progress."""

    queue_depth: int
    """Requests waiting in the queue now (not counting the one running)."""
    peak_depth: int
    """The deepest the queue has been."""
    maxsize: int
    """Capacity of the queue."""
    accepted: int
    """Requests admitted to the queue."""
    completed: int
    """Requests the owner ran to the end (returned or raised)."""
    failed: int
    """Of ``completed``, those that raised (the exception went to their caller)."""
    rejected: int
    """Calls refused with ``MapBusyError`` at admission: the queue was full (at once for a
    non-blocking call, or until the call's deadline) or the circuit was open. No effect."""
    rejected_by_breaker: int
    """Of ``rejected``, those refused because the circuit breaker was open."""
    cancelled: int
    """Admitted requests withdrawn before the owner started them: their deadline passed,
    their caller was cancelled or interrupted, or ``close(drain=False)`` rejected them.
    Never applied."""
    dropped: int
    """Requests whose caller stopped waiting after the owner had started them: applied,
    their result discarded."""
    breaker: str
    """``"closed"``, ``"open"``, ``"half-open"``, or ``"off"`` without a breaker."""
    breaker_trips: int
    """How many times the circuit opened."""
    closed: bool
    """Whether the map was closed (it accepts no more calls)."""


class MailboxCounters:
    """Admission state and counters shared by the thread and asyncio mailboxes.

    Mutated only under the thread mailbox's lock, or on the asyncio mailbox's loop.
    """

    __slots__ = (
        "_breaker",
        "_maxsize",
        "accepted",
        "cancelled",
        "closed",
        "dropped",
        "peak_depth",
        "rejected",
        "rejected_by_breaker",
    )

    def __init__(self, maxsize: int, breaker: CircuitBreaker | None) -> None:
        self._maxsize = check_maxsize(maxsize)
        self._breaker = None if breaker is None else BreakerState(breaker)
        self.closed = False
        self.accepted = 0
        self.peak_depth = 0
        self.rejected = 0
        self.rejected_by_breaker = 0
        self.cancelled = 0
        self.dropped = 0

    def _breaker_verdict(self) -> MapBusyError | None:
        """The error to reject a new call with because the circuit is open, or None."""
        breaker = self._breaker
        if breaker is None:
            return None
        error = breaker.check()
        if error is not None:
            self.rejected += 1
            self.rejected_by_breaker += 1
        return error

    def _overloaded(self) -> None:
        breaker = self._breaker
        if breaker is not None:
            breaker.overload()

    def _started(self) -> None:
        breaker = self._breaker
        if breaker is not None and (breaker.streak or breaker.state != CLOSED):
            breaker.started()

    def _admitted(self, depth: int) -> None:
        self.accepted += 1
        if depth > self.peak_depth:
            self.peak_depth = depth

    def _stats(self, depth: int, owner: Owner[object, object]) -> ActorStats:
        breaker = self._breaker
        return ActorStats(
            queue_depth=depth,
            peak_depth=self.peak_depth,
            maxsize=self._maxsize,
            accepted=self.accepted,
            completed=owner.completed,
            failed=owner.failed,
            rejected=self.rejected,
            rejected_by_breaker=self.rejected_by_breaker,
            cancelled=self.cancelled,
            dropped=self.dropped,
            breaker="off" if breaker is None else breaker.current(),
            breaker_trips=0 if breaker is None else breaker.trips,
            closed=self.closed,
        )
