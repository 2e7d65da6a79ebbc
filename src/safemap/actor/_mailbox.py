"""The thread mailbox: the bounded queue of requests between an ActorMap's callers and its owner.

Why not ``queue.Queue``: three promises of the map need the queue's own lock.

- A caller that gives up (deadline passed, ``KeyboardInterrupt``) withdraws its request if
  the owner has not taken it yet, atomically with the owner's take. That makes "timed out
  before the owner started it, never applied" exact, and frees the request's slot at once.
- ``close()`` wakes callers blocked on a full queue (they get ``MapClosedError``) and stops
  the owner without needing a free slot for a stop message.
- Admission counters and the circuit breaker change in the same critical section as the
  queue, so ``stats()`` is consistent and the breaker costs no lock of its own.

A request's life, every transition under the mailbox lock::

    PENDING --(owner takes it)--> RUNNING --(owner finishes, releases `done`)--> finished
       \\--(caller withdraws it, deadline passed at take, close(drain=False))--> CANCELLED

Critical sections, finalizers and signals. Every critical section is written as::

    try:
        lock.acquire()
        ...
    finally:
        try:
            lock.release()  # first thing in the finally: no check for signals runs before it
        except RuntimeError:
            pass

not as ``with lock:``. From CPython 3.14 a signal handler (on the main thread) can raise
right after ``__enter__`` returned and before the ``with`` protects the block (bpo-29988),
leaving the lock held for ever. Here the acquire is inside the ``try``, so whatever raises
after the lock was taken releases it. A handler can also raise *inside* ``acquire()``
while it waits, and then the lock was not taken: ``release()`` checks that the calling
thread holds the lock, so it raises ``RuntimeError`` (ignored) and never drops another
thread's hold. (Not ``_release_save()``: on CPython 3.11 it releases the lock whichever
thread holds it.) A nested section (re-entered by a finalizer on the same thread) cannot be
interrupted in ``acquire()``, which only counts up; its ``release()`` counts down.

The lock is re-entrant because any allocation can start the cyclic garbage collector, whose
finalizers may call this map on a thread that is inside one of these sections. Such a call
must not wait for the owner while holding the lock (the owner needs it to take the call):
:meth:`Mailbox.unlocked` releases every hold of this thread for the duration of the call
and restores them after, like ``Condition.wait``. So a section may find the state changed
after any point where user code can run; each is written for that (see ``put``).

Invariant: a request is in ``_items`` exactly while it is PENDING. The caller learns the
outcome through ``done``, a lock created held that the owner (or whoever cancels) releases
once the outcome fields are written: acquiring it orders those writes before the caller's
reads, on free-threaded builds too.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Any, Final

from ..protocol import MapBusyError, MapClosedError
from ..protocol.contention import record
from ..protocol.stats import MailboxStats
from ._breaker import CircuitBreaker
from ._owner import Owner
from ._stats import MailboxCounters

__all__ = ["Mailbox", "Request"]

PENDING: Final = 0
RUNNING: Final = 1
CANCELLED: Final = 2

_EXPIRED = "the owner did not start the call before its deadline; it was not applied"

# Python runs signal handlers on the main thread only, at its checks between bytecodes, and
# a lock wait is woken only by a signal that arrives while it sleeps. A Ctrl-C arriving after
# the last check and before the wait parks (or one simulated by ``_thread.interrupt_main``)
# would be seen only when the wait ends: after the owner applied the call, or never while
# the queue stays full. So the main thread waits in slices of this many seconds, and a
# pending handler runs within one slice, while its request can still be withdrawn.
_SIGNAL_SLICE: Final = 0.05


def signal_slice(timeout: float | None) -> float | None:
    """How long the calling thread may wait in one go, out of ``timeout`` (None: for ever),
    and still see a Ctrl-C that arrived just before it started waiting (see above)."""
    if threading.get_ident() != threading.main_thread().ident:
        return timeout
    return _SIGNAL_SLICE if timeout is None or timeout > _SIGNAL_SLICE else timeout


class Request:
    """One call: what to run, by when, and (once done) its outcome."""

    __slots__ = ("args", "deadline", "done", "error", "kind", "op", "result", "state")

    def __init__(
        self, op: Callable[..., Any], args: tuple[Any, ...], kind: int, deadline: float | None
    ) -> None:
        self.op = op
        self.args = args
        self.kind = kind
        self.deadline = deadline  # time.monotonic() seconds, or None for no deadline
        self.state = PENDING
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()

    def wait(self) -> bool:
        """Wait for the outcome until the deadline (for ever without one); True once it is
        set (then take it with :meth:`outcome`). A Ctrl-C on the main thread raises within
        one signal slice, even one that arrived just before the wait began."""
        done, deadline = self.done, self.deadline
        while True:
            remaining = None if deadline is None else max(0.0, deadline - monotonic())
            wait = signal_slice(remaining)
            if done.acquire(True, -1 if wait is None else wait):
                return True
            if wait == remaining:
                return False  # the deadline passed

    def outcome(self) -> Any:
        """Return the result, or re-raise the exception with the traceback it got where it
        was raised (on the owner), continued by the caller's frames."""
        error = self.error
        if error is not None:
            self.error = None
            try:
                raise error
            finally:
                del error  # no frame <-> traceback cycle through this local
        return self.result


class Mailbox(MailboxCounters):
    """Bounded FIFO of requests with withdrawal, deadlines and closing (see module doc)."""

    __slots__ = (
        "__weakref__",
        "_finished",
        "_items",
        "_lock",
        "_not_full",
        "_owner_idle",
        "_putters",
        "_wakeup",
    )

    def __init__(self, maxsize: int, breaker: CircuitBreaker | None) -> None:
        super().__init__(maxsize, breaker)
        self._items: deque[Request] = deque()
        self._putters = 0  # callers waiting on _not_full for a free slot
        self._init_locks()

    def _init_locks(self) -> None:
        # Re-entrant on purpose: any allocation can start the cyclic garbage collector, and
        # a finalizer it runs may call this map on a thread that is already inside one of
        # these methods (see the module doc).
        self._lock = threading.RLock()
        self._not_full = threading.Condition(self._lock)
        # The owner sleeps on _wakeup, a lock used as a binary semaphore: released means
        # "look at the queue again". Not a Condition: a caller on the main thread can be hit
        # by a signal handler's exception between any two bytecodes, and a Condition's
        # notify interrupted half-way can lose the wakeup for good (the owner would sleep
        # with requests queued). Only the owner writes _owner_idle, under the lock: set
        # when it found the queue empty, just before sleeping, cleared once it woke. A put
        # releases the token after appending whenever it sees the flag set, so a caller
        # interrupted (or re-entered by a finalizer) anywhere cannot leave the owner asleep
        # with the flag clear; a wakeup too many only makes the owner look once more.
        self._wakeup = threading.Lock()
        self._wakeup.acquire()
        self._owner_idle = False
        self._finished = False  # the owner saw the map closed and empty, and stopped

    def held_here(self) -> bool:
        """Whether the calling thread is inside one of this mailbox's critical sections
        (a finalizer the garbage collector runs there)."""
        return self._lock._is_owned()  # type: ignore[attr-defined,no-any-return]

    @contextlib.contextmanager
    def unlocked(self) -> Iterator[None]:
        """Release every hold the calling thread has on the lock for the duration of the
        block, then take them back: how a call from a finalizer run inside a critical
        section waits for the owner (see the module doc)."""
        lock: Any = self._lock
        state = (lock._recursion_count(), threading.get_ident())  # raising here: no change
        try:
            lock._release_save()  # runs before any signal check: the finally always restores
            yield
        finally:
            lock._acquire_restore(state)  # not interruptible: it always takes them back

    # ------------------------------------------------------------------ callers

    def put(self, req: Request, block: bool) -> None:
        """Admit ``req``, waiting for a free slot until its deadline if ``block``.

        Raises ``MapClosedError`` if the map is closed (also when it closes while waiting),
        ``CircuitOpenError`` while the breaker is open, ``MapBusyError`` if no slot frees up
        in time (at once when not ``block``). In each case ``req`` was not admitted.
        """
        lock: Any = self._lock
        started: float | None = None  # when the call found the queue full
        waited = 0.0
        try:
            lock.acquire()
            if self.closed:
                raise MapClosedError("the map is closed")
            error = self._breaker_verdict()
            if error is not None:
                raise error
            items = self._items
            while len(items) >= self._maxsize:
                now = monotonic()
                remaining = None if req.deadline is None else req.deadline - now
                if not block or (remaining is not None and remaining <= 0):
                    if started is not None:
                        waited = now - started
                        self._waited(waited)
                        self.timeouts += 1
                    raise self._queue_full(block)
                if started is None:
                    started = now
                self._putters += 1
                try:
                    self._not_full.wait(signal_slice(remaining))  # the loop re-checks
                finally:
                    self._putters -= 1
                if self.closed:
                    raise MapClosedError("the map is closed")
            if started is not None:
                waited = monotonic() - started
                self._waited(waited)
            items.append(req)
            # A finalizer's call may have released the lock since the check above (module
            # doc): if the owner has stopped meanwhile, nobody would ever take req.
            if self._finished and req.state == PENDING:
                items.remove(req)
                raise MapClosedError("the map is closed")
            if self._owner_idle:  # read after the append: see _init_locks
                self._wake_owner()
            self._admitted(len(items))
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                lock.release()
            except RuntimeError:
                pass  # acquire() was interrupted: this thread took nothing
            if waited:
                record("ActorMap.mailbox", waited)  # sampled; with the lock released

    def _wake_owner(self) -> None:
        with contextlib.suppress(RuntimeError):  # already released: the owner will look
            self._wakeup.release()

    def abandon(self, req: Request, timed_out: bool) -> None:
        """The caller of ``req`` stops waiting (its deadline passed, or it was interrupted).

        A PENDING request is withdrawn and will never run; on a timeout its outcome becomes
        ``MapBusyError``. A request that finished or was cancelled meanwhile keeps its
        outcome. A RUNNING one runs to completion and its result is dropped: on a timeout
        this raises ``TimeoutError`` to say so. A request that ``put`` never admitted is
        left as it is.
        """
        lock: Any = self._lock
        try:
            lock.acquire()
            state = req.state
            if state == PENDING:
                try:
                    self._items.remove(req)
                except ValueError:
                    return  # put() refused it (or was interrupted before admitting it)
                req.state = CANCELLED
                self.cancelled += 1
                if self._putters:
                    self._not_full.notify_all()
                if timed_out:
                    self.timeouts += 1
                    self._overloaded()
                    req.error = MapBusyError(_EXPIRED)
                return
            if state == CANCELLED or req.done.acquire(False):
                return  # cancelled by the owner or close, or finished just now: outcome ready
            self.dropped += 1
            if timed_out:
                self.timeouts += 1
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                lock.release()
            except RuntimeError:
                pass  # acquire() was interrupted: this thread took nothing
        if timed_out:
            raise TimeoutError(
                "the call's deadline passed while the owner was running it: it runs to "
                "completion (its effect takes place) and its result is dropped"
            )

    # -------------------------------------------------------------------- owner

    def take(self) -> Request | None:
        """The next request to run, now RUNNING; None once closed and nothing is left.
        Blocks while the queue is empty and open. Expired requests are cancelled here, so
        none starts after its deadline."""
        items = self._items
        lock: Any = self._lock
        while True:
            # The owner thread gets no signals, and a finalizer here runs its calls inline
            # (not through the mailbox), so this section needs neither guard of the others.
            with lock:
                self._owner_idle = False
                while items:
                    req = items.popleft()
                    if self._putters:
                        self._not_full.notify_all()
                    if req.deadline is not None and monotonic() >= req.deadline:
                        self.timeouts += 1
                        self._overloaded()
                        self._cancel(req, MapBusyError(_EXPIRED))
                        continue
                    req.state = RUNNING
                    self._started()
                    return req
                if self.closed:
                    self._finished = True
                    return None
                self._owner_idle = True
            self._wakeup.acquire()

    def _cancel(self, req: Request, error: BaseException) -> None:
        req.state = CANCELLED
        req.error = error
        self.cancelled += 1
        req.done.release()

    # ---------------------------------------------------------------- lifecycle

    def close(self, drain: bool) -> None:
        """Refuse new calls. With ``drain`` the owner still runs what is queued, else the
        queued requests fail with ``MapClosedError`` (not applied). Idempotent."""
        lock: Any = self._lock
        try:
            lock.acquire()
            self.closed = True
            if not drain:
                while self._items:
                    self._cancel(
                        self._items.popleft(),
                        MapClosedError("the map was closed without draining; not applied"),
                    )
            self._wake_owner()
            self._not_full.notify_all()
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                lock.release()
            except RuntimeError:
                pass  # acquire() was interrupted: this thread took nothing

    def after_fork_in_child(self) -> None:
        """Start afresh in a forked child, where the only thread is the one that forked:
        the lock may have been held by a thread that is gone, and the queued requests'
        callers are gone too (their requests are dropped, never applied)."""
        self._items.clear()
        self._putters = 0
        self._init_locks()

    def stats(self, owner: Owner[Any, Any]) -> MailboxStats:
        lock: Any = self._lock
        try:
            lock.acquire()
            return self._mailbox_stats(len(self._items), owner)
        finally:
            try:  # noqa: SIM105  # not suppress(): its __enter__ is a call before the release
                lock.release()
            except RuntimeError:
                pass  # acquire() was interrupted: this thread took nothing
