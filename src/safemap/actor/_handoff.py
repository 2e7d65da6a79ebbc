"""``ThreadCaller``: the outcome of an ``AsyncActorMap`` request made from another thread.

A thread that calls an ``AsyncActorMap`` through its ``threadsafe`` view sends the call to
the map's event loop and waits. What it must get back is exact, whatever the loop does
meanwhile (block, stop, shut down, close): the request's own outcome whenever it has one,
"not applied" only when the request provably never ran, and "unknown" only when that truly
cannot be told. So the outcome is not read from the task that carried the call (asyncio
cancels tasks at shutdown, possibly after the owner ran the request) but from this object,
which the *owner* settles directly, and which the owner and the waiting thread decide
atomically::

    waiting --(owner claims it to run it)--> running --(owner settles it)--> finished
       |   \\--(settled before running: refused, expired, closed)----------> finished
       \\--(the thread gives up: deadline, interrupt, loop closed)--------> abandoned

A request is run only after a successful claim, and a thread gives up only from WAITING, so
"the thread gave up" and "the owner ran it" cannot both happen: a call that times out before
it runs never runs.

**Interrupt-safe by construction: the waiting thread never holds anything the loop needs.**
A lock the thread held across Python code could be left held by a ``KeyboardInterrupt``
landing between two bytecodes (a ``with lock:`` can leak it, CPython bpo-29988), and the
loop would then block on it for ever. So the one decision "run it, refuse it, or abandon
it" is a single non-blocking acquire of ``_decided``, a raw lock that whoever decides first
takes for good; the loop never waits for it. The loop records which way *it* decided in
plain attributes (written by the loop thread only): ``_claimed`` is set *before* its
acquire, so a thread that finds the lock taken knows whether the owner took the request to
run it. The outcome travels through ``_done``, a raw lock created held that the loop
releases once the outcome is written and only the thread acquires: that orders the
outcome's writes before the thread's reads, on free-threaded builds too.
"""

from __future__ import annotations

import _thread
from typing import Any, Final

__all__ = ["FINISHED", "RUNNING", "WAITING", "OutcomeUnknownError", "ThreadCaller"]

# What the waiting thread finds when it gives up (ThreadCaller.give_up).
WAITING: Final = 0
RUNNING: Final = 1
FINISHED: Final = 2


class OutcomeUnknownError(RuntimeError):
    """The outcome of an ``AsyncActorMap`` call made from another thread cannot be known:
    the map's event loop stopped for good (it was closed) after its owner had started the
    request and before the request's outcome was handed back (the loop's thread was
    interrupted inside the request). The call may or may not have taken effect: it is not
    safe to retry blindly. Deliberately not a ``MapClosedError``, which means "not
    applied"."""


class ThreadCaller:
    """The waiting side of one call from another thread (see the module doc)."""

    __slots__ = ("_claimed", "_decided", "_done", "_error", "_result", "_settled", "request")

    def __init__(self) -> None:
        self._decided = _thread.allocate_lock()  # taken once, for good, by who decides first
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._claimed = False  # loop-written: the owner took the request to run it
        self._settled = False  # loop-written: the outcome is written
        self._result: Any = None
        self._error: BaseException | None = None
        self.request: Any = None  # the AsyncRequest, once the call has reached the loop

    # ------------------------------------------------- loop side (one thread)

    def claim(self) -> bool:
        """The owner is about to run the request: True if it may (the thread still waits)."""
        self._claimed = True  # first: a thread that finds _decided taken reads this
        if self._decided.acquire(False):
            return True
        self._claimed = False  # the thread gave up first
        return False

    def abandoned(self) -> bool:
        """Whether the thread gave up before the loop decided anything."""
        return not self._claimed and not self._settled and self._decided.locked()

    def done(self) -> bool:
        """Whether nothing more can be delivered (as ``asyncio.Future.done``)."""
        return self._settled or self.abandoned()

    def set_result(self, result: Any) -> None:
        self._settle(result, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, result: Any, error: BaseException | None) -> None:
        if self._settled:
            return
        if not self._claimed and not self._decided.acquire(False):
            return  # the thread gave up first: it never learns this (a refusal)
        self._result = result
        self._error = error
        self._settled = True
        self._done.release()

    # ------------------------------------------------------------ thread side

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the outcome; True once it is set (then take
        it with :meth:`outcome`)."""
        return self._done.acquire(True, timeout)

    def give_up(self) -> int:
        """The thread stops waiting. Returns what it found: WAITING, the request will never
        run (abandoned now); RUNNING, the owner is running it; FINISHED, the outcome is set
        and acquired (take it with :meth:`outcome`)."""
        if self._decided.acquire(False):
            return WAITING
        if not self._claimed:
            # The loop is refusing it (expired, closed, full) right now: the outcome is
            # being written and comes at once.
            self._done.acquire()
            return FINISHED
        return FINISHED if self._done.acquire(False) else RUNNING

    def outcome(self) -> Any:
        """The result, or raise the request's exception; call once the outcome is acquired
        (:meth:`wait` returned True, or :meth:`give_up` FINISHED). Drops both, so nothing of
        the call outlives it here (the protocol's identity rule)."""
        error, result = self._error, self._result
        self._error = self._result = None
        self.request = None
        if error is not None:
            try:
                raise error
            finally:
                del error  # no frame <-> traceback cycle through this local
        return result
