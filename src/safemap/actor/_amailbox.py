"""The asyncio mailbox: the bounded queue between an AsyncActorMap's callers and its owner task.

Everything here runs on the map's event loop, one callback or task step at a time, so no lock
is needed: a caller withdrawing its request and the owner taking it cannot interleave, which
makes "cancelled or timed out before the owner started it, never applied" exact. The owner
runs each request synchronously (callbacks are plain functions), so a request is never seen
half-run: it is PENDING (queued), DONE (ran) or CANCELLED (withdrawn, expired, rejected).

**The owner is a loop callback, not a task.** ``put`` schedules ``_run_batch`` with
``loop.call_soon`` when work arrives; it runs up to ``_BATCH`` requests, then reschedules
itself if more are queued, so other tasks of the loop get their turn. While the map is idle
nothing of it is pending on the loop: there is no task to leak, to cancel at loop shutdown,
or to end from a finalizer when the map is garbage-collected, and a map dropped without
``aclose()`` simply goes away.

**Callers on other threads** (the ``threadsafe`` view) wait on a :class:`ThreadCaller`
instead of an ``asyncio.Future``: the owner settles it directly, in the same callback that
runs the request, and claims it atomically with the thread's giving up (see ``_handoff``).
``receive`` (on the loop) turns such a call into a request and admits it with a small task,
which is needed only while the queue is full; once admitted, the request no longer depends
on that task, so a loop shutdown that cancels tasks cannot separate a call from its outcome.

Why not ``asyncio.Queue``: a withdrawn request must leave the queue at once (freeing its slot),
``close()`` must wake blocked senders and the owner, and the counters and breaker live with
the queue, as in the thread mailbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any, Final

from ..protocol import MapBusyError, MapClosedError
from ..protocol.contention import record
from ..protocol.stats import MailboxStats
from ._breaker import CircuitBreaker
from ._handoff import ThreadCaller
from ._owner import Owner
from ._stats import MailboxCounters

__all__ = ["AsyncMailbox", "AsyncRequest"]

NEW: Final = 0  # not admitted yet (waiting for a slot)
PENDING: Final = 1
DONE: Final = 2
CANCELLED: Final = 3

_BATCH: Final = 64  # requests the owner runs before it lets the loop's other tasks run
_EXPIRED = "the owner did not start the call before its deadline; it was not applied"
_WITHDRAWN = "the calling thread stopped waiting before the call was admitted; not applied"
_SHUT_DOWN = (
    "the map's event loop shut down (cancelling its tasks) before the call was admitted "
    "to the queue; not applied"
)


class AsyncRequest:
    """One call: what to run, by when (loop time), and the future its caller awaits."""

    __slots__ = ("args", "deadline", "future", "kind", "op", "state", "timer", "waiter")

    def __init__(
        self,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        kind: int,
        future: asyncio.Future[Any] | ThreadCaller,
        deadline: float | None,
    ) -> None:
        self.op = op
        self.args = args
        self.kind = kind
        self.future = future  # the caller's: a task's future, or a thread's ThreadCaller
        self.deadline = deadline
        self.state = NEW
        self.waiter: asyncio.Future[None] | None = None  # while waiting for a free slot
        self.timer: asyncio.TimerHandle | None = None  # expires it at its deadline

    def claim(self) -> bool:
        """The owner is about to run it: whether its caller still waits (atomically with a
        thread's giving up)."""
        future = self.future
        if isinstance(future, ThreadCaller):
            return future.claim()
        return not future.done()  # a task's future is done early only if it was cancelled

    def withdrawn(self) -> bool:
        """Whether its calling thread gave up on it (it will never run)."""
        future = self.future
        return isinstance(future, ThreadCaller) and future.abandoned()

    def disarm(self) -> None:
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()


def _deliverable(exc: BaseException) -> BaseException:
    # A future refuses StopIteration (it would end the awaiting coroutine silently); wrap
    # it the way PEP 479 does for generators.
    if isinstance(exc, StopIteration):
        wrapped = RuntimeError("a request raised StopIteration")
        wrapped.__cause__ = exc
        return wrapped
    return exc


class AsyncMailbox(MailboxCounters):
    """Bounded FIFO of requests on one event loop, and the owner that serves it."""

    __slots__ = (
        "__weakref__",
        "_drained",
        "_items",
        "_owner",
        "_putters",
        "_scheduled",
        "loop",
        "loop_thread",
    )

    def __init__(self, owner: Owner[Any, Any], maxsize: int, breaker: CircuitBreaker | None):
        super().__init__(maxsize, breaker)
        self._owner = owner
        self.loop: asyncio.AbstractEventLoop | None = None  # set by bind()
        # The thread that runs the loop, or last ran it (while it is stopped). The object,
        # not its ident: idents are reused once a thread ends, and a new thread must not be
        # taken for the loop's and let onto the dict.
        self.loop_thread: threading.Thread | None = None
        self._items: deque[AsyncRequest] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()  # callers waiting for a slot
        self._scheduled = False  # _run_batch is in the loop's ready queue
        self._drained: list[asyncio.Future[None]] = []  # aclose() waiting for the queue

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make ``loop`` the map's loop, for good. Called on that loop, while it runs."""
        self.loop = loop
        self.loop_thread = threading.current_thread()

    def serves_here(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the calling thread is the one that runs the map's ``loop``: it is running
        it now (a call waiting for the loop would wait for ever), or the loop is stopped and
        this thread ran it last (nobody else is going to run it: waiting would hang too)."""
        try:
            if asyncio.get_running_loop() is loop:
                return True
        except RuntimeError:
            pass
        return not loop.is_running() and self.loop_thread is threading.current_thread()

    def _expired(self, req: AsyncRequest) -> bool:
        return (
            req.deadline is not None
            and self.loop is not None
            and (self.loop.time() >= req.deadline)
        )

    # ------------------------------------------------------------------ callers

    async def put(self, req: AsyncRequest, block: bool) -> None:
        """Admit ``req``, waiting for a free slot until its deadline if ``block``. Raises
        like the thread mailbox's ``put``; a cancelled caller leaves nothing behind."""
        if not self._admit_now(req, block):
            await self._admit_when_room(req, block)

    def _admit_now(self, req: AsyncRequest, block: bool) -> bool:
        """Admit ``req`` if the queue has room: True. False if it must wait for a slot
        (``block`` only); raises like ``put`` if it is refused."""
        if self.closed:
            raise MapClosedError("the map is closed")
        error = self._breaker_verdict()
        if error is not None:
            raise error
        return self._admit_if_room(req, block, None, False)

    async def _admit_when_room(self, req: AsyncRequest, block: bool) -> None:
        """Wait for a free slot (the queue was full), then admit ``req``."""
        assert self.loop is not None
        started = self.loop.time()  # when the call began to wait for room
        while True:
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._putters.append(waiter)
            req.waiter = waiter
            try:
                await waiter
            except asyncio.CancelledError:
                self._stop_waiting(started)
                if not waiter.cancelled():
                    self._wake_putter()  # we were handed a free slot: pass it on
                raise
            finally:
                req.waiter = None
            if self.closed:
                self._stop_waiting(started)
                raise MapClosedError("the map is closed")
            if self._admit_if_room(req, block, started, True):
                return

    def _admit_if_room(
        self, req: AsyncRequest, block: bool, started: float | None, waited: bool
    ) -> bool:
        """One admission attempt: True if admitted, False to wait for a slot; raises
        ``MapBusyError`` if the caller withdrew or the call is refused. ``started`` is
        when it began to wait (loop time), ``waited`` whether it was woken for a slot."""
        if req.withdrawn():  # its thread stopped waiting (deadline or interrupt)
            if started is not None:
                self._stop_waiting(started)
            if self._expired(req):
                self.timeouts += 1
                self.rejected += 1  # the queue stayed full until the deadline
                self._overloaded()
            if waited:
                self._wake_putter()  # pass on the slot we may have been handed
            raise MapBusyError(_WITHDRAWN)
        items = self._items
        if len(items) < self._maxsize:
            if started is not None:
                self._stop_waiting(started)
            items.append(req)
            req.state = PENDING
            self._admitted(len(items))
            self._schedule()
            return True
        if not block or self._expired(req):
            if started is not None:
                self._stop_waiting(started)
            if block:
                self.timeouts += 1
            raise self._queue_full(block)
        return False

    def _stop_waiting(self, started: float) -> None:
        """A call that waited for room since ``started`` (loop time) stops waiting."""
        assert self.loop is not None
        waited = self.loop.time() - started
        self._waited(waited)
        record("AsyncActorMap.mailbox", waited)

    async def call(self, req: AsyncRequest, block: bool) -> Any:
        """A task's call: admit ``req`` and wait for its outcome, expiring it at its
        deadline."""
        self._arm(req)
        try:
            await self.put(req, block)
            return await self.result(req)
        finally:
            req.disarm()

    def _arm(self, req: AsyncRequest) -> None:
        if req.deadline is not None:
            assert self.loop is not None
            req.timer = self.loop.call_at(req.deadline, self.expire, req)

    def receive(
        self,
        caller: ThreadCaller,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        kind: int,
        deadline: float | None,
        block: bool,
    ) -> None:
        """A call from another thread has reached the loop (a ``call_soon_threadsafe``
        callback): make it a request and admit it. ``deadline`` is in ``time.monotonic()``
        seconds (the thread's clock); the outcome goes to ``caller``."""
        if caller.abandoned():
            return  # the thread gave up before its call got here: it never existed
        loop = self.loop
        assert loop is not None
        if deadline is not None:
            deadline = loop.time() + (deadline - monotonic())
        req = AsyncRequest(op, args, kind, caller, deadline)
        caller.request = req
        self._arm(req)
        # Admitted here when the queue has room: no task, so a loop shutting down cannot
        # drop a never-started coroutine. Only a call that must wait for a slot gets one.
        try:
            if self._admit_now(req, block):
                return
        except Exception as error:
            self._refused(req, error)
            return
        task = loop.create_task(self._admit_when_room(req, block))
        task.add_done_callback(lambda task: self._admission_done(req, task))

    def _admission_done(self, req: AsyncRequest, task: asyncio.Task[None]) -> None:
        # Not admitted (refused, or the task was cancelled by a loop shutdown): tell the
        # thread. Admitted: the owner will settle the caller; the task has nothing to say.
        if task.cancelled():
            error: BaseException | None = MapClosedError(_SHUT_DOWN)
        else:
            error = task.exception()  # also marks it retrieved, so asyncio does not log it
        if error is not None:
            self._refused(req, error)

    @staticmethod
    def _refused(req: AsyncRequest, error: BaseException) -> None:
        """``req`` (a thread's call) was not admitted: tell its thread why."""
        req.disarm()
        req.future.set_exception(error)

    def withdraw(self, caller: ThreadCaller, timed_out: bool) -> None:
        """On the loop: the thread of ``caller`` stopped waiting (its deadline passed, it was
        interrupted, or it gave up while the owner ran the call). Frees the request's slot
        at once and counts what happened; the request itself can no longer run (the thread
        abandoned it atomically with the owner's claim)."""
        req = caller.request
        if req is None:
            return  # not here yet: receive() will see the caller abandoned
        if req.state == PENDING:
            self._items.remove(req)
            if timed_out:
                self.timeouts += 1
                self._overloaded()
            self._cancel(req, MapBusyError(_EXPIRED))
            self._wake_putter()
        elif req.state == NEW:
            waiter = req.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # put() wakes and gives up (expired or withdrawn)
        elif req.state == DONE:
            self.dropped += 1  # it ran; the thread stopped waiting for its result

    async def result(self, req: AsyncRequest) -> Any:
        """Wait for ``req``'s outcome. If the caller is cancelled first (``task.cancel()``,
        ``asyncio.timeout``), a PENDING request is withdrawn and never runs."""
        future = req.future
        assert isinstance(future, asyncio.Future)
        try:
            return await future
        except asyncio.CancelledError:
            if req.state == PENDING:
                self._items.remove(req)
                req.state = CANCELLED
                self.cancelled += 1
                self._wake_putter()
            elif req.state == DONE:
                self.dropped += 1
                if not future.cancelled():
                    future.exception()  # retrieved: asyncio would log it otherwise
            raise

    def expire(self, req: AsyncRequest) -> None:
        """Timer callback at ``req``'s deadline."""
        if req.state == NEW:
            waiter = req.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # put() wakes, sees the deadline and gives up
        elif req.state == PENDING:
            self._items.remove(req)
            self.timeouts += 1
            self._overloaded()
            self._cancel(req, MapBusyError(_EXPIRED))
            self._wake_putter()

    def _wake_putter(self) -> None:
        putters = self._putters
        while putters:
            waiter = putters.popleft()
            if not waiter.done():  # skip callers cancelled or expired while waiting
                waiter.set_result(None)
                return

    def _cancel(self, req: AsyncRequest, error: BaseException) -> None:
        req.disarm()
        req.state = CANCELLED
        self.cancelled += 1
        if not req.future.done():
            req.future.set_exception(error)

    # -------------------------------------------------------------------- owner

    def _schedule(self) -> None:
        if not self._scheduled:
            assert self.loop is not None
            self._scheduled = True
            self.loop.call_soon(self._run_batch)

    def _run_batch(self) -> None:
        """The owner: run queued requests one at a time, at most ``_BATCH`` per turn."""
        self._scheduled = False
        owner = self._owner
        # The loop may have moved to another thread since the last batch (run_forever can be
        # called from any thread): the owner is whichever thread runs this.
        owner.ident = threading.get_ident()
        self.loop_thread = threading.current_thread()
        run = owner.run
        for _ in range(_BATCH):
            req = self.take()
            if req is None:
                break
            future = req.future
            try:
                result = run(req.op, req.args, req.kind)
            except BaseException as exc:  # delivered to the caller; the owner keeps serving
                owner.failed += 1
                future.set_exception(_deliverable(exc))
            else:
                future.set_result(result)
                del result
            owner.completed += 1
            # Hold nothing of a finished call once its caller can resume (identity rule).
            del req, future
        if self._items:
            self._schedule()
        elif self.closed:
            self._finish()

    def take(self) -> AsyncRequest | None:
        """The next request to run (the owner runs it at once), or None if none is queued.
        Requests whose caller was cancelled, or whose deadline passed, are skipped."""
        items = self._items
        while items:
            req = items.popleft()
            if self._putters:
                self._wake_putter()
            if self._expired(req):
                self.timeouts += 1
                self._overloaded()
                self._cancel(req, MapBusyError(_EXPIRED))
                continue
            if not req.claim():  # its caller was cancelled or gave up, not withdrawn yet
                req.disarm()
                req.state = CANCELLED
                self.cancelled += 1
                continue
            req.disarm()
            req.state = DONE  # nothing else runs on the loop until the owner has run it
            self._started()
            return req
        return None

    # ---------------------------------------------------------------- lifecycle

    def close(self, drain: bool) -> None:
        """Refuse new calls; reject the queue unless ``drain``; wake everyone waiting.
        Call on the loop (or before the map has one). Idempotent."""
        self.closed = True
        if not drain:
            while self._items:
                self._cancel(
                    self._items.popleft(),
                    MapClosedError("the map was closed without draining; not applied"),
                )
        while self._putters:
            waiter = self._putters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if not self._items:
            self._finish()

    async def wait_drained(self) -> None:
        """Wait until a closed map's queue is empty (the owner has run or rejected all)."""
        if self._items:
            assert self.loop is not None
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._drained.append(waiter)
            await waiter

    def _finish(self) -> None:
        drained, self._drained = self._drained, []
        for waiter in drained:
            if not waiter.done():
                waiter.set_result(None)

    def after_fork_in_child(self) -> None:
        """In a forked child the loop's thread is gone, and with it every caller that was
        waiting: drop the queue and detach from the loop; the map binds to the loop it is
        next used on."""
        self.loop = self.loop_thread = None
        self._items.clear()
        self._putters.clear()
        self._drained.clear()
        self._scheduled = False
        self._owner.after_fork_in_child()

    def stats(self, owner: Owner[Any, Any]) -> MailboxStats:
        stats = self._mailbox_stats(len(self._items), owner)
        if not stats.closed and self.loop is not None and self.loop.is_closed():
            stats = dataclasses.replace(stats, closed=True)  # its loop runs nothing any more
        return stats
