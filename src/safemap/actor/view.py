"""``ThreadsafeView``: an AsyncActorMap as a synchronous ConcurrentMapping, for other threads."""

from __future__ import annotations

import _thread
import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

from ..protocol import MapClosedError
from ._owned import OwnedMap
from ._stats import ActorStats, normalize_timeout
from .asyncmap import AsyncActorMap

__all__ = ["ThreadsafeView"]

K = TypeVar("K")
V = TypeVar("V")


_UNBOUND = (
    "the AsyncActorMap has no event loop: create it inside its loop, or use it there once "
    "(e.g. 'async with'), before calling it from other threads (after a fork, too)"
)


async def _relay(
    amap: AsyncActorMap[Any, Any],
    op: Callable[..., Any],
    args: tuple[Any, ...],
    kind: int,
    timeout: float | None,
    block: bool,
) -> tuple[bool, Any]:
    """Run one call on the loop for a waiting thread, handing back *every* outcome.

    A task that raises ``KeyboardInterrupt`` or ``SystemExit`` makes asyncio re-raise it
    out of the event loop, stopping the loop for everyone; raised by a request's callback
    on behalf of another thread, it belongs to that thread instead.
    """
    try:
        return True, await amap._call(op, args, kind, timeout=timeout, block=block)
    except (KeyboardInterrupt, SystemExit) as exc:
        return False, exc


_LOOP_CHECK_INTERVAL = 0.25  # seconds between checks that the loop still exists


class _Handoff:
    """One call handed to the loop by another thread, which waits for its outcome.

    Interrupt-safe by construction: the waiting thread holds nothing the loop needs. (A
    ``concurrent.futures.Future``, as ``run_coroutine_threadsafe`` uses, guards its state
    with a ``Condition`` whose ``__enter__`` is Python code: a ``KeyboardInterrupt`` landing
    there in the waiting thread leaves the lock held, and the loop blocks on it for ever.)
    The loop thread only releases ``_done``, a raw lock the waiter sleeps on; the coroutine
    is created on the loop, so an interrupted hand-off never leaves one un-awaited; a
    waiter that gives up sends the cancellation through ``call_soon_threadsafe``.
    """

    __slots__ = ("_done", "_error", "_make", "_task", "_withdrawn")

    def __init__(
        self, make: Callable[[], Coroutine[Any, Any, Any]], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._make = make
        self._task: asyncio.Future[Any] | None = None
        self._error: BaseException | None = None
        self._withdrawn = False
        self._done = _thread.allocate_lock()
        self._done.acquire()
        loop.call_soon_threadsafe(self._start)  # RuntimeError if the loop is closed

    def _start(self) -> None:  # on the loop
        if self._withdrawn:
            self._done.release()
            return
        try:
            task = asyncio.ensure_future(self._make())
        except BaseException as exc:  # e.g. RecursionError creating the coroutine
            self._error = exc
            self._done.release()
            return
        self._task = task
        task.add_done_callback(lambda _: self._done.release())

    def _cancel(self) -> None:  # on the loop, queued after _start
        if self._task is not None:
            self._task.cancel()

    def result(self, loop: asyncio.AbstractEventLoop) -> Any:
        """Wait for the call and return its result or raise its exception. A loop that
        closes before running the call (its shutdown can drop a queued callback) fails it
        with ``MapClosedError`` instead of leaving this thread waiting for ever."""
        while not self._done.acquire(True, _LOOP_CHECK_INTERVAL):
            if loop.is_closed():
                raise MapClosedError(
                    "the map's event loop closed before running the call; not applied"
                )
        if self._error is not None:
            raise self._error
        task = self._task
        if task is None or task.cancelled():
            raise MapClosedError(
                "the call was cancelled by its event loop (the loop is shutting down)"
            )
        return task.result()

    def withdraw(self, loop: asyncio.AbstractEventLoop) -> None:
        """The waiter gives up (interrupted): cancel the call if it has not started."""
        self._withdrawn = True
        with contextlib.suppress(RuntimeError):  # a closed loop runs nothing any more
            loop.call_soon_threadsafe(self._cancel)


def _discard(coro: Coroutine[Any, Any, Any]) -> None:
    """Close ``coro`` if it has not started. An interrupt that lands inside
    ``run_coroutine_threadsafe`` after it scheduled the call leaves ``coro`` already running
    on the loop: the call then takes effect or not, as with any interrupted call, and
    closing it is neither possible (``ValueError``) nor needed."""
    with contextlib.suppress(ValueError, RuntimeError):
        coro.close()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class ThreadsafeView(OwnedMap[K, V]):
    """The whole :class:`~safemap.ConcurrentMapping` protocol over an
    :class:`~safemap.AsyncActorMap`, for threads other than its event loop's.

    Each call is sent to the map's loop (as ``asyncio.run_coroutine_threadsafe`` does) and
    waited for, with the map's guarantees: atomic per call, backpressure, deadlines
    (``execute(..., timeout=)``, exact as on the loop: ``MapBusyError`` means not applied).
    Calls made on the loop's own thread (which would wait for ever for the loop they block)
    run inline instead: from the map's own callbacks under the protocol's re-entry rules,
    and from anywhere else on that thread at once, ahead of the queued requests (which have
    not taken effect yet, so each call is still atomic). If the loop shuts down, calls
    raise :class:`~safemap.MapClosedError`.

    A view shares the map; it cannot be copied or pickled (take ``snapshot()``).
    """

    __slots__ = ("_map",)

    def __init__(self, amap: AsyncActorMap[K, V]) -> None:
        if amap._mailbox.loop is None and not amap.closed:
            raise RuntimeError(_UNBOUND)
        self._map = amap

    @property
    def map(self) -> AsyncActorMap[K, V]:
        """The :class:`~safemap.AsyncActorMap` this view sends calls to."""
        return self._map

    def _options(self) -> NoReturn:
        raise TypeError(
            "a ThreadsafeView shares an AsyncActorMap bound to its event loop: it cannot be "
            "copied, pickled or combined with '|'; take view.snapshot() instead"
        )

    def _call(
        self,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        kind: int,
        *,
        timeout: float | None = None,
        block: bool = True,
    ) -> Any:
        amap = self._map
        owner = amap._owner
        if owner.busy and owner.on_owner_thread():
            return owner.run_inline(op, args, kind)  # from inside a request of this map
        loop = amap._mailbox.loop
        if loop is None:
            if amap.closed:
                raise MapClosedError("the map is closed")
            raise RuntimeError(_UNBOUND)
        if _on_loop(loop):
            # On the loop's own thread, between this map's requests: only this thread runs
            # the owner, so running the call here and now is the same as running it as the
            # next request (linearizable: queued requests have not taken effect yet), while
            # waiting for the loop would wait for ever.
            if amap.closed:
                raise MapClosedError("the map is closed")
            return owner.run_inline(op, args, kind)
        try:
            handoff = _Handoff(lambda: _relay(amap, op, args, kind, timeout, block), loop)
        except RuntimeError:
            if loop.is_closed():
                raise MapClosedError("the map's event loop is closed") from None
            raise
        try:
            ok, outcome = handoff.result(loop)
        except BaseException:
            handoff.withdraw(loop)  # interrupted while waiting: withdraw it if not started
            raise
        if ok:
            return outcome
        try:
            raise outcome
        finally:
            del outcome  # no frame <-> traceback cycle through this local

    @property
    def closed(self) -> bool:
        return self._map.closed

    def stats(self) -> ActorStats:
        return self._map.stats()

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Close the map (see ``AsyncActorMap.aclose``) and wait up to ``timeout`` seconds
        for the queue to drain (``TimeoutError`` if it has not). On the loop's own thread
        it closes without waiting."""
        amap = self._map
        loop = amap._mailbox.loop
        if loop is None or _on_loop(loop):  # cannot wait for the loop on its own thread
            amap._mailbox.close(drain)
            return
        coro = amap.aclose(drain)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except BaseException:
            _discard(coro)
            if loop.is_closed():
                amap._mailbox.closed = True  # nothing runs there any more
                return
            raise
        future.result(normalize_timeout(timeout))

    def __enter__(self) -> ThreadsafeView[K, V]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"{type(self).__name__}(<closed>)"
        return super().__repr__()
