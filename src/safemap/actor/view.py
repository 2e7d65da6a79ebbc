"""``ThreadsafeView``: an AsyncActorMap as a synchronous ConcurrentMapping, for other threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
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
    on behalf of another thread, it belongs to that thread instead. (One coroutine object,
    not two: if creating it fails, e.g. with ``RecursionError``, nothing is left unawaited.)
    """
    try:
        return True, await amap._call(op, args, kind, timeout=timeout, block=block)
    except (KeyboardInterrupt, SystemExit) as exc:
        return False, exc


_LOOP_CHECK_INTERVAL = 0.25  # seconds between checks that the loop still exists


def _wait(
    future: concurrent.futures.Future[Any],
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
) -> Any:
    """``future.result()``, but a loop that closes before running the call (its shutdown
    can drop a call submitted at that moment without cancelling it) fails the call with
    ``MapClosedError`` instead of leaving this thread waiting for ever."""
    while True:
        try:
            return future.result(_LOOP_CHECK_INTERVAL)
        except TimeoutError:
            if future.done():
                raise  # the call's own outcome
            if loop.is_closed():
                future.cancel()
                coro.close()  # never started: nothing ran, and no "never awaited" warning
                raise MapClosedError(
                    "the map's event loop closed before running the call; not applied"
                ) from None


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
        coro = _relay(amap, op, args, kind, timeout, block)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except BaseException:
            coro.close()
            if loop.is_closed():
                raise MapClosedError("the map's event loop is closed") from None
            raise
        try:
            ok, outcome = _wait(future, loop, coro)
        except concurrent.futures.CancelledError:
            raise MapClosedError(
                "the call was cancelled by its event loop (the loop is shutting down)"
            ) from None
        except BaseException:
            future.cancel()  # interrupted while waiting: withdraw it if not started
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
            coro.close()
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
