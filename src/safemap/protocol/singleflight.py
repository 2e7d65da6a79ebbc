"""Loading a missing value once: ``get_or_compute``, ``aget_or_compute`` and the miss path
of ``@safemap.cached`` (``call_once``).

Written once on top of the protocol's ``load`` and ``load_or_store``, so every map type
has them, and no map lock is ever held while a loader runs.

Invariants:
- A map's in-flight loads live in its sidecar (``flights``: key -> ``_Flight``). The first
  caller for a missing key puts its flight there (``dict.setdefault``: exactly one wins)
  and runs the loader; every other caller for that key waits for that flight. Other keys,
  and writers of any key, never wait for a loader.
- The loading caller checks the map again after taking the flight (a load that just
  finished has stored its value), and stores the result with ``load_or_store``: a value
  someone stored meanwhile wins and is what every waiter gets.
- The flight leaves the table after the value is in the map and before waiters are told,
  so a caller arriving later finds the value (or, after a failure, starts a new load: a
  failure is not cached).
- A flight costs one small object and nothing more while nobody waits for it: it is a
  list of wake-up callables, one per waiter (a thread's lock release, an event loop's
  relay), to which the loader appends its outcome marker (``_DONE``/``_FAILED``) once the
  outcome is in ``flight.outcome``. Appends to a list are atomic and ordered (the GIL;
  the list's lock on free-threaded builds), so a waiter that appended before the marker
  is woken by the loader, which calls every entry before the marker, and a waiter that
  appended after it sees the marker when it looks for it after its own append: no
  waiter is missed and none waits for a flight that is over.
- A waiter that gives up (timeout, cancellation) leaves the load running for the others;
  an asyncio load runs in a task of its own for that reason.
"""

from __future__ import annotations

import contextlib
from _thread import allocate_lock, get_ident
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._flight import land as _land
from ._flight import set_markers as _set_markers
from .errors import RecursiveUpdateError
from .sidecar import sidecar

if TYPE_CHECKING:
    import asyncio

    from .mapping import ConcurrentMapping

__all__ = [
    "aget_or_compute",
    "call_once",
    "flights",
    "get_or_compute",
    "owner_path",
    "read_through",
]

K = TypeVar("K")
V = TypeVar("V")


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_DONE = _Marker("<done>")  # appended once flight.outcome holds the value
_FAILED = _Marker("<failed>")  # appended once flight.outcome holds the exception
_ABSENT = _Marker("<absent>")  # never a value: private


class _Flight(list[Any]):
    """One load in progress: who runs it (``thread``; ``loop``/``task`` for asyncio), its
    waiters' wake-ups, then its outcome marker (see the module's invariants)."""

    __slots__ = ("loop", "outcome", "owner_wake", "task", "thread")
    thread: int
    owner_wake: Callable[[], None]  # an asyncio owner's own wake-up (not a waiter)
    loop: asyncio.AbstractEventLoop | None
    task: asyncio.Task[None] | None
    outcome: Any

    @property
    def waiters(self) -> list[Any]:
        """The wake-ups of the callers that waited for this load, its owner's excluded
        (diagnostics, tests)."""
        own = getattr(self, "owner_wake", None)
        return [w for w in self if w is not _DONE and w is not _FAILED and w is not own]


def flights(m: object) -> dict[Any, _Flight]:
    """The table of ``m``'s loads in progress (in its sidecar), made on first use."""
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


# _land(table, key, flight, outcome, ok) ends ``flight`` (its owner only): out of the
# table, outcome published, waiters woken. It is one C call, so that an interrupt (an
# exception a signal handler raises) cannot stop it half-way and strand the waiters;
# landing again, or landing a flight that never entered the table, publishes nothing more.
_set_markers(_DONE, _FAILED)


def _outcome(flight: _Flight) -> Any:
    """The outcome of a landed flight: its value, or its exception raised."""
    for entry in reversed(flight):
        if entry is _DONE:
            return flight.outcome
        if entry is _FAILED:
            raise flight.outcome
    raise AssertionError("the flight has not landed")  # pragma: no cover


def _landed(flight: _Flight) -> bool:
    return _DONE in flight or _FAILED in flight


def owner_path(table: dict[Any, _Flight], fn: Callable[..., Any]) -> tuple[Any, ...]:
    """What the C twin of ``call_once``'s owner path needs to follow this module's
    protocol on ``table`` (``CachedFunction(..., owner=...)``, the sync ``@cached``'s
    miss): the table, the function, the flight type and ``_land``. Any change to the owner
    path here must be made there too (``safemap/native/sm_cached.c``, ``cached_own``)."""
    return (table, fn, _Flight, _land)


def call_once(
    m: ConcurrentMapping[Any, Any],
    table: dict[Any, _Flight],
    fn: Callable[..., Any],
    count: Callable[[bool], object] | None,
    key: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None,
    timeout: float | None = None,
) -> Any:
    """``fn(*args, **kwargs)`` stored at ``key`` of ``m``, run once however many threads
    ask (the others wait for it); ``count(ok)`` after each run. ``table`` is
    ``flights(m)``. The miss path of ``get_or_compute`` and of ``@safemap.cached``."""
    mine = _Flight()
    mine.thread = get_ident()
    mine.loop = None
    # Every step from the flight's entry into the table to its landing is inside the
    # try: an interrupt anywhere lands it (failed), so no waiter is left waiting.
    try:
        flight = table.setdefault(key, mine)
        if flight is mine:
            value = m.get(key, _ABSENT)  # a load that just landed has stored its value
            if value is _ABSENT:
                if count is None:
                    value = fn(*args, **kwargs) if kwargs else fn(*args)
                else:
                    try:
                        value = fn(*args, **kwargs) if kwargs else fn(*args)
                    except BaseException:
                        count(False)
                        raise
                    count(True)
                value, _ = m.load_or_store(key, value)
    except BaseException as exc:
        _land(table, key, mine, exc, False)  # (a flight not in the table has no waiters)
        raise
    if flight is not mine:
        return _wait(flight, key, timeout)
    # (the sync @cached's misses run these steps in C: owner_path's docstring)
    _land(table, key, mine, value, True)
    return value


def get_or_compute(
    m: ConcurrentMapping[K, V],
    key: K,
    loader: Callable[[K], V],
    timeout: float | None,
    count: Callable[[bool], object] | None = None,
) -> V:
    """The miss path of ``ConcurrentMapping.get_or_compute``."""
    if timeout is not None:
        _check_timeout(timeout)
    return call_once(m, flights(m), loader, count, key, (key,), None, timeout)  # type: ignore[no-any-return]


def read_through(
    m: ConcurrentMapping[K, V],
    key: K,
    loader: Callable[[K], V],
    timeout: float | None,
    count: Callable[[bool], object] | None = None,
) -> V:
    """``get_or_compute`` through ``m.get``: the native maps' C method calls it when
    ``m``'s class overrides ``get`` (a subclass, a feature's mixin, the race detector),
    so that the read a hit costs is that ``get``."""
    value: Any = m.get(key, _ABSENT)
    if value is not _ABSENT:
        return value  # type: ignore[no-any-return]
    return get_or_compute(m, key, loader, timeout, count)


def _wait(flight: _Flight, key: object, timeout: float | None) -> Any:
    if flight.thread == get_ident():
        if flight.loop is None:
            raise _recursive(key)
        raise RuntimeError(
            f"{key!r} is being loaded by aget_or_compute on this thread's event loop: "
            "waiting for it here would block that loop for ever; use "
            "'await m.aget_or_compute(...)'"
        )
    lock = allocate_lock()
    lock.acquire()
    flight.append(lock.release)
    if not _landed(flight) and not lock.acquire(True, -1 if timeout is None else timeout):
        raise TimeoutError(f"{key!r} was not loaded within {timeout} seconds")
    return _outcome(flight)


async def aget_or_compute(
    m: ConcurrentMapping[K, V],
    key: K,
    loader: Callable[[K], Awaitable[V]],
    timeout: float | None,
    count: Callable[[bool], object] | None = None,
) -> V:
    """The miss path of ``ConcurrentMapping.aget_or_compute``."""
    import asyncio

    _check_timeout(timeout)
    loop = asyncio.get_running_loop()
    table = flights(m)
    mine = _Flight()
    mine.thread = get_ident()
    mine.loop = loop
    mine.task = None
    try:  # an interrupt once the flight is in the table lands it (see call_once)
        flight = table.setdefault(key, mine)
        if flight is mine:
            mine.task = loop.create_task(_load(m, table, key, loader, count, mine))
    except BaseException as exc:
        _land(table, key, mine, exc, False)
        raise
    if (
        flight is not mine
        and flight.thread == get_ident()
        and (flight.loop is None or flight.task is asyncio.current_task())
    ):
        raise _recursive(key)
    return await _await(flight, loop, timeout, flight is mine)  # type: ignore[no-any-return]


async def _load(
    m: ConcurrentMapping[K, V],
    table: dict[Any, _Flight],
    key: K,
    loader: Callable[[K], Awaitable[V]],
    count: Callable[[bool], object] | None,
    flight: _Flight,
) -> None:
    try:
        value, found = m.load(key)
        if not found:
            try:
                loaded = await loader(key)
            except BaseException:
                if count is not None:
                    count(False)
                raise
            if count is not None:
                count(True)
            value, _ = m.load_or_store(key, loaded)
    except BaseException as exc:
        _land(table, key, flight, exc, False)
        if not isinstance(exc, Exception):
            raise  # cancellation of the load itself (its loop shutting down), interrupts
        return
    _land(table, key, flight, value, True)


async def _await(
    flight: _Flight, loop: asyncio.AbstractEventLoop, timeout: float | None, owner: bool
) -> Any:
    """Wait for ``flight`` on ``loop``; cancelling this wait leaves the load alone."""
    import asyncio

    mine: asyncio.Future[Any] = loop.create_future()

    def settle() -> None:
        if mine.done():
            return  # this waiter gave up, or was settled already
        try:
            mine.set_result(_outcome(flight))
        except BaseException as exc:
            mine.set_exception(exc)

    def relay() -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there any more
            loop.call_soon_threadsafe(settle)

    if owner:
        flight.owner_wake = relay
    flight.append(relay)
    if _landed(flight):
        settle()
    if timeout is None:
        return await mine
    return await asyncio.wait_for(mine, timeout)
