"""The bookkeeping both mailboxes share (counters, breaker, limits) and the statistics of an
actor map (``stats()``: a ``MapStats`` whose ``mailbox`` is a ``MailboxStats``)."""

from __future__ import annotations

import math
import threading
from typing import Any, Final

from ..protocol import MapBusyError
from ..protocol.stats import MailboxStats, MapStats
from ._breaker import CLOSED, BreakerState, CircuitBreaker
from ._owner import Owner

__all__ = [
    "ActorStats",
    "MailboxCounters",
    "check_maxsize",
    "check_options",
    "map_stats",
    "normalize_timeout",
]

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


ActorStats = MailboxStats
"""The former name of :class:`~safemap.MailboxStats`, what ``stats().mailbox`` of an actor
map is (``queue_depth`` is now ``depth``, ``maxsize`` is ``capacity``)."""


class MailboxCounters:
    """Admission state and counters shared by the thread and asyncio mailboxes.

    Mutated only under the thread mailbox's lock, or on the asyncio mailbox's loop: one
    writer at a time, so every counter is exact.
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
        "timeouts",
        "wait_seconds",
        "waits",
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
        self.waits = 0  # calls that found the queue full and waited for room
        self.wait_seconds = 0.0
        self.timeouts = 0  # calls whose deadline passed (waiting for room, queued, running)

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

    def _queue_full(self, block: bool) -> MapBusyError:
        """Count a call refused because the queue stayed full (at once if not ``block``,
        else until its deadline) and return the error to raise in the caller."""
        self.rejected += 1
        self._overloaded()
        how = "" if block else " (non-blocking call)"
        return MapBusyError(
            f"the map's queue is full ({self._maxsize} requests waiting){how}; "
            "the call was not applied"
        )

    def _started(self) -> None:
        breaker = self._breaker
        if breaker is not None and (breaker.streak or breaker.state != CLOSED):
            breaker.started()

    def _admitted(self, depth: int) -> None:
        self.accepted += 1
        if depth > self.peak_depth:
            self.peak_depth = depth

    def _waited(self, seconds: float) -> None:
        """A call found the queue full and waited ``seconds`` for room (or gave up)."""
        self.waits += 1
        self.wait_seconds += seconds

    def _mailbox_stats(self, depth: int, owner: Owner[object, object]) -> MailboxStats:
        breaker = self._breaker
        return MailboxStats(
            depth=depth,
            capacity=self._maxsize,
            peak_depth=self.peak_depth,
            accepted=self.accepted,
            completed=owner.completed,
            failed=owner.failed,
            waits=self.waits,
            timeouts=self.timeouts,
            rejected=self.rejected,
            breaker="none" if breaker is None else breaker.current(),
            wait_seconds=self.wait_seconds,
            rejected_by_breaker=self.rejected_by_breaker,
            cancelled=self.cancelled,
            dropped=self.dropped,
            breaker_trips=0 if breaker is None else breaker.trips,
            closed=self.closed,
        )


_NOTES = (
    "each count is exact: the operation counters are written by the owner alone, the "
    "mailbox's under its lock (or on its event loop)",
    "writes that an execute() function makes to the dict directly are not counted",
    "lock_acquisitions counts admitted requests; lock_contentions and lock_wait_seconds "
    "are the mailbox's waits for room in a full queue",
)


def map_stats(kind: str, mailbox: MailboxStats, owner: Owner[Any, Any]) -> MapStats:
    """An actor map's ``MapStats``: the owner's operation counters and its mailbox."""
    return MapStats(
        kind=kind,
        hits=owner.hits,
        misses=owner.misses,
        inserts=owner.inserts,
        updates=owner.updates,
        deletes=owner.deletes,
        size=len(owner.data),
        iterations=owner.iterations.started,
        writes_during_iteration=owner.writes_during_iteration,
        lock_acquisitions=mailbox.accepted,
        lock_contentions=mailbox.waits,
        lock_wait_seconds=mailbox.wait_seconds,
        mailbox=mailbox,
        notes=_NOTES,
    )
