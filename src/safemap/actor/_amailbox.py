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

Why not ``asyncio.Queue``: a withdrawn request must leave the queue at once (freeing its slot),
``close()`` must wake blocked senders and the owner, and the counters and breaker live with
the queue, as in the thread mailbox.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from ..protocol import MapBusyError, MapClosedError
from ._breaker import CircuitBreaker
from ._owner import Owner
from ._stats import ActorStats, MailboxCounters

__all__ = ["AsyncMailbox", "AsyncRequest"]

NEW: Final = 0  # not admitted yet (waiting for a slot)
PENDING: Final = 1
DONE: Final = 2
CANCELLED: Final = 3

_BATCH: Final = 64  # requests the owner runs before it lets the loop's other tasks run
_EXPIRED = "the owner did not start the call before its deadline; it was not applied"


class AsyncRequest:
    """One call: what to run, by when (loop time), and the future its caller awaits."""

    __slots__ = ("args", "deadline", "future", "kind", "op", "state", "waiter")

    def __init__(
        self,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        kind: int,
        future: asyncio.Future[Any],
        deadline: float | None,
    ) -> None:
        self.op = op
        self.args = args
        self.kind = kind
        self.future = future
        self.deadline = deadline
        self.state = NEW
        self.waiter: asyncio.Future[None] | None = None  # while waiting for a free slot


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

    __slots__ = ("__weakref__", "_drained", "_items", "_owner", "_putters", "_scheduled", "loop")

    def __init__(self, owner: Owner[Any, Any], maxsize: int, breaker: CircuitBreaker | None):
        super().__init__(maxsize, breaker)
        self._owner = owner
        self.loop: asyncio.AbstractEventLoop | None = None  # set by bind()
        self._items: deque[AsyncRequest] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()  # callers waiting for a slot
        self._scheduled = False  # _run_batch is in the loop's ready queue
        self._drained: list[asyncio.Future[None]] = []  # aclose() waiting for the queue

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make ``loop`` the map's loop, for good."""
        self.loop = loop

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
        if self.closed:
            raise MapClosedError("the map is closed")
        error = self._breaker_verdict()
        if error is not None:
            raise error
        items = self._items
        while len(items) >= self._maxsize:
            if not block or self._expired(req):
                self.rejected += 1
                self._overloaded()
                how = "" if block else " (non-blocking call)"
                raise MapBusyError(
                    f"the map's queue is full ({self._maxsize} requests waiting){how}; "
                    "the call was not applied"
                )
            assert self.loop is not None
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._putters.append(waiter)
            req.waiter = waiter
            try:
                await waiter
            except asyncio.CancelledError:
                if not waiter.cancelled():
                    self._wake_putter()  # we were handed a free slot: pass it on
                raise
            finally:
                req.waiter = None
            if self.closed:
                raise MapClosedError("the map is closed")
        items.append(req)
        req.state = PENDING
        self._admitted(len(items))
        self._schedule()

    async def result(self, req: AsyncRequest) -> Any:
        """Wait for ``req``'s outcome. If the caller is cancelled first (``task.cancel()``,
        ``asyncio.timeout``), a PENDING request is withdrawn and never runs."""
        try:
            return await req.future
        except asyncio.CancelledError:
            if req.state == PENDING:
                self._items.remove(req)
                req.state = CANCELLED
                self.cancelled += 1
                self._wake_putter()
            elif req.state == DONE:
                self.dropped += 1
                if not req.future.cancelled():
                    req.future.exception()  # retrieved: asyncio would log it otherwise
            raise

    def expire(self, req: AsyncRequest) -> None:
        """Timer callback at ``req``'s deadline."""
        if req.state == NEW:
            waiter = req.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # put() wakes, sees the deadline and gives up
        elif req.state == PENDING:
            self._items.remove(req)
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
            if req.future.done():  # its caller was cancelled and has not withdrawn it yet
                req.state = CANCELLED
                self.cancelled += 1
                continue
            if self._expired(req):
                self._overloaded()
                self._cancel(req, MapBusyError(_EXPIRED))
                continue
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
        self.loop = None
        self._items.clear()
        self._putters.clear()
        self._drained.clear()
        self._scheduled = False
        self._owner.after_fork_in_child()

    def stats(self, owner: Owner[Any, Any]) -> ActorStats:
        return self._stats(len(self._items), owner)
