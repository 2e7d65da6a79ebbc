"""``ThreadCaller``: the outcome of an ``AsyncActorMap`` request made from another thread.

A thread that calls an ``AsyncActorMap`` through its ``threadsafe`` view sends the call to
the map's event loop and waits. What it must get back is exact, whatever the loop does
meanwhile (block, stop, shut down, close): the request's own outcome whenever it has one,
"not applied" only when the request provably never ran, and "unknown" only when that truly
cannot be told. So the outcome is not read from the task that carried the call (asyncio
cancels tasks at shutdown, possibly after the owner ran the request) but from this object,
which the *owner* settles directly, and which the owner and the waiting thread claim
atomically::

    WAITING --(owner claims it to run it)--> RUNNING --(owner settles it)--> FINISHED
       |   \\--(settled before running: refused, expired, closed)----------> FINISHED
       \\--(the thread gives up: deadline, interrupt, loop closed)--------> ABANDONED

A request is run only after a successful claim, and a thread gives up only from WAITING, so
"the thread gave up" and "the owner ran it" cannot both happen: a call that times out before
it runs never runs. Everything is under one raw lock (``_thread``'s: nothing there runs
Python code, so an interrupt in the waiting thread cannot leave it held). The waiting thread
sleeps on ``_done``, a second raw lock created held and released once the outcome is set;
acquiring it orders the outcome's writes before the thread's reads, on free-threaded builds
too.
"""

from __future__ import annotations

import _thread
from typing import Any, Final

__all__ = ["ABANDONED", "FINISHED", "RUNNING", "WAITING", "OutcomeUnknownError", "ThreadCaller"]

WAITING: Final = 0
RUNNING: Final = 1
FINISHED: Final = 2
ABANDONED: Final = 3


class OutcomeUnknownError(RuntimeError):
    """The outcome of an ``AsyncActorMap`` call made from another thread cannot be known:
    the map's event loop stopped for good (it was closed) after its owner had started the
    request and before the request's outcome was handed back (the loop's thread was
    interrupted inside the request). The call may or may not have taken effect: it is not
    safe to retry blindly. Deliberately not a ``MapClosedError``, which means "not
    applied"."""


class ThreadCaller:
    """The waiting side of one call from another thread (see the module doc)."""

    __slots__ = ("_done", "_error", "_lock", "_result", "request", "state")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self.state = WAITING
        self._result: Any = None
        self._error: BaseException | None = None
        self.request: Any = None  # the AsyncRequest, once the call has reached the loop

    # ------------------------------------------------------------- loop side

    def claim(self) -> bool:
        """The owner is about to run the request: True if it may (the thread still waits)."""
        with self._lock:
            if self.state != WAITING:
                return False
            self.state = RUNNING
            return True

    def done(self) -> bool:
        """Whether nothing more can be delivered (as ``asyncio.Future.done``)."""
        return self.state >= FINISHED

    def abandoned(self) -> bool:
        return self.state == ABANDONED

    def set_result(self, result: Any) -> None:
        self._settle(result, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, result: Any, error: BaseException | None) -> None:
        with self._lock:
            if self.state >= FINISHED:
                return  # the thread gave up first: it never learns this (a refusal)
            self.state = FINISHED
            self._result = result
            self._error = error
        self._done.release()

    # ----------------------------------------------------------- thread side

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the outcome; True once it is set."""
        return self._done.acquire(True, timeout)

    def give_up(self) -> int:
        """The thread stops waiting. Returns the state at that instant: WAITING means the
        request will never run (now ABANDONED); RUNNING, that the owner is running it;
        FINISHED, that the outcome is set (take it with :meth:`outcome`)."""
        with self._lock:
            state = self.state
            if state == WAITING:
                self.state = ABANDONED
            return state

    def outcome(self) -> Any:
        """The result, or raise the request's exception; call once :meth:`wait` returned
        True. Drops both, so nothing of the call outlives it here (the identity rule)."""
        error, result = self._error, self._result
        self._error = self._result = None
        self.request = None
        if error is not None:
            try:
                raise error
            finally:
                del error  # no frame <-> traceback cycle through this local
        return result
