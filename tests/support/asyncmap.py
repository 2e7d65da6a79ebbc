"""``BlockingAsyncActorMap``: how the shared (synchronous) protocol suite reaches AsyncActorMap.

A :class:`safemap.actor.ThreadsafeView` is already the whole synchronous protocol over an
``AsyncActorMap``; all this adds is ``dict``-style construction: each instance gets a new
``AsyncActorMap`` on one background event loop (a daemon thread shared by the test run), and
copies and pickles rebuild through that constructor like every other map type. Like any
program that runs a loop in a thread, it starts a new loop in a forked child (where the
thread is gone); the maps, detached from the old loop by the fork, bind to the new one.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, TypeVar

from safemap.actor import AsyncActorMap, ThreadsafeView

K = TypeVar("K")
V = TypeVar("V")

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The event loop every adapter's map lives on, running in a daemon thread."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="actor-test-loop", daemon=True).start()
            _loop = loop
        return _loop


def _forget_loop_in_child() -> None:
    global _loop, _loop_lock
    _loop, _loop_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_loop_in_child)


async def _new_map() -> AsyncActorMap[Any, Any]:
    return AsyncActorMap()  # created on the loop, so it belongs to it at once


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class BlockingAsyncActorMap(ThreadsafeView[K, V]):
    """``AsyncActorMap`` behind a synchronous, dict-constructible ``ConcurrentMapping``."""

    def __init__(self, other: Any = (), /, **kwargs: V) -> None:
        loop = background_loop()
        if _on(loop):  # e.g. copy() inside a callback: the loop cannot turn to create it
            amap: AsyncActorMap[K, V] = AsyncActorMap()
        else:
            amap = asyncio.run_coroutine_threadsafe(_new_map(), loop).result()
        super().__init__(amap)
        self.update(other, **kwargs)

    def _options(self) -> dict[str, Any]:  # type: ignore[override]
        return {}

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        amap = self._map
        if amap._mailbox.loop is None and not amap.closed:  # detached by a fork
            asyncio.run_coroutine_threadsafe(amap.size(), background_loop()).result()
        return super()._call(*args, **kwargs)
