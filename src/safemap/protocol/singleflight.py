"""Loading a missing value once: ``get_or_compute`` and ``aget_or_compute``.

Written once on top of the protocol's ``load`` and ``load_or_store``, so every map type
has them, and no map lock is ever held while a loader runs.

Invariants:
- A map's in-flight loads live in its sidecar (``flights``: key -> ``_Flight``). The first
  caller for a missing key puts its flight there (``dict.setdefault``: exactly one wins)
  and runs the loader; every other caller for that key waits on the flight's
  ``concurrent.futures.Future``, which threads, event loops and other loops all can wait
  on. Other keys, and writers of any key, never wait for a loader.
- The loading caller checks the map again after taking the flight (a load that just
  finished has stored its value), and stores the result with ``load_or_store``: a value
  someone stored meanwhile wins and is what every waiter gets.
- The flight leaves the table after the value is in the map and before waiters are told,
  so a caller arriving later finds the value (or, after a failure, starts a new load: a
  failure is not cached).
- A waiter that gives up (timeout, cancellation) leaves the load running for the others;
  an asyncio load runs in a task of its own for that reason.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import RecursiveUpdateError
from .sidecar import sidecar

if TYPE_CHECKING:
    import asyncio

    from .mapping import ConcurrentMapping

__all__ = ["aget_or_compute", "get_or_compute"]

K = TypeVar("K")
V = TypeVar("V")


class _Flight:
    """One load in progress: who runs it, and where its outcome will be."""

    __slots__ = ("future", "loop", "task", "thread", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.thread = threading.get_ident()
        self.loop = loop
        self.task: asyncio.Task[None] | None = None
        self.waiters: list[None] = []  # one item per caller that waited (list.append is atomic)


def _flights(m: object) -> dict[Any, _Flight]:
    sc = sidecar(m)
    table: dict[Any, _Flight] | None = getattr(sc, "flights", None)
    if table is None:
        table = vars(sc).setdefault("flights", {})
    return table


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be None or a number >= 0, not {timeout!r}")


def _recursive(key: object) -> RecursiveUpdateError:
    return RecursiveUpdateError(
        f"the loader of {key!r} asked for its own key: it would wait for itself"
    )


def _finish(table: dict[Any, _Flight], key: object, flight: _Flight) -> None:
    if table.get(key) is flight:
        del table[key]


def get_or_compute(
    m: ConcurrentMapping[K, V], key: K, loader: Callable[[K], V], timeout: float | None
) -> V:
    """The miss path of ``ConcurrentMapping.get_or_compute``."""
    _check_timeout(timeout)
    table = _flights(m)
    mine = _Flight()
    flight = table.setdefault(key, mine)
    if flight is not mine:
        return _wait(flight, key, timeout)  # type: ignore[no-any-return]
    try:
        value, found = m.load(key)
        if not found:
            value, _ = m.load_or_store(key, loader(key))
    except BaseException as exc:
        _finish(table, key, mine)
        mine.future.set_exception(exc)
        raise
    _finish(table, key, mine)
    mine.future.set_result(value)
    return value  # type: ignore[return-value]


def _wait(flight: _Flight, key: object, timeout: float | None) -> Any:
    if flight.thread == threading.get_ident():
        if flight.loop is None:
            raise _recursive(key)
        raise RuntimeError(
            f"{key!r} is being loaded by aget_or_compute on this thread's event loop: "
            "waiting for it here would block that loop for ever; use "
            "'await m.aget_or_compute(...)'"
        )
    flight.waiters.append(None)
    return flight.future.result(timeout)


async def aget_or_compute(
    m: ConcurrentMapping[K, V],
    key: K,
    loader: Callable[[K], Awaitable[V]],
    timeout: float | None,
) -> V:
    """The miss path of ``ConcurrentMapping.aget_or_compute``."""
    import asyncio

    _check_timeout(timeout)
    loop = asyncio.get_running_loop()
    table = _flights(m)
    mine = _Flight(loop)
    flight = table.setdefault(key, mine)
    if flight is mine:
        mine.task = loop.create_task(_load(m, table, key, loader, mine))
    elif flight.thread == threading.get_ident() and (
        flight.loop is None or flight.task is asyncio.current_task()
    ):
        raise _recursive(key)
    else:
        flight.waiters.append(None)
    return await _await(flight.future, loop, timeout)  # type: ignore[no-any-return]


async def _load(
    m: ConcurrentMapping[K, V],
    table: dict[Any, _Flight],
    key: K,
    loader: Callable[[K], Awaitable[V]],
    flight: _Flight,
) -> None:
    try:
        value, found = m.load(key)
        if not found:
            value, _ = m.load_or_store(key, await loader(key))
    except BaseException as exc:
        _finish(table, key, flight)
        flight.future.set_exception(exc)
        if not isinstance(exc, Exception):
            raise  # cancellation of the load itself (its loop shutting down), interrupts
        return
    _finish(table, key, flight)
    flight.future.set_result(value)


async def _await(
    future: concurrent.futures.Future[Any], loop: asyncio.AbstractEventLoop, timeout: float | None
) -> Any:
    """Wait for ``future`` on ``loop``; cancelling this wait leaves ``future`` alone."""
    import asyncio

    mine: asyncio.Future[Any] = loop.create_future()

    def settle() -> None:
        if mine.done():
            return  # this waiter gave up
        exc = future.exception()
        if exc is not None:
            mine.set_exception(exc)
        else:
            mine.set_result(future.result())

    def relay(_: object) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there any more
            loop.call_soon_threadsafe(settle)

    future.add_done_callback(relay)
    if timeout is None:
        return await mine
    return await asyncio.wait_for(mine, timeout)
