"""``AsyncActorMap``, a dict owned by one event loop and reached only through messages, and
``ThreadsafeView``, the same map as a synchronous ``ConcurrentMapping`` for other threads.

The view lives here, with the map, because it is the map's other face: it reaches the map's
owner and mailbox directly. Both sit on the same lower layers (``_amailbox`` for the queue
and the owner, ``_handoff`` for a thread's side of a call) and nothing below imports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, MutableMapping
from time import monotonic
from types import TracebackType
from typing import Any, Final, Generic, NoReturn, TypeVar, TypeVarTuple, overload

from ..protocol import FrozenMap, MapBusyError, MapClosedError
from ..protocol.mapping import IterationGauge
from ..protocol.sentinels import Delete, Missing
from ..protocol.stats import MapStats
from . import _ops
from ._amailbox import AsyncMailbox, AsyncRequest
from ._breaker import CircuitBreaker
from ._handoff import FINISHED, WAITING, OutcomeUnknownError, ThreadCaller
from ._lifecycle import new_map, track_for_fork
from ._owned import OwnedMap, stage
from ._owner import EXEC, READ, TXN, WRITE, Owner
from ._stats import check_options, map_stats, normalize_timeout

__all__ = ["AsyncActorMap", "ThreadsafeView"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_serial = itertools.count(1)
_VIEW_LOCK = threading.Lock()  # serializes creating the one live ThreadsafeView of a map


class AsyncActorMap(Generic[K, V]):
    """A map owned by one event loop that serves every call, in order, from a bounded queue.

    The asyncio twin of :class:`~safemap.ActorMap`, with the same guarantees: each call is
    atomic, :meth:`execute` runs multi-key logic atomically, backpressure raises
    :class:`~safemap.MapBusyError`, calls after close raise :class:`~safemap.MapClosedError`.
    Its methods are coroutines (``await m.get(k)``, ``await m.execute(fn)``), so it is not
    a ``ConcurrentMapping``; :attr:`threadsafe` gives one, for code in other threads.

    The map belongs to the event loop it is first used on (construction inside a running
    loop, ``async with``, or the first awaited call), where its owner task runs. Callbacks
    (``compute`` functions, ``execute`` functions, predicates of ``transaction``) are plain
    functions that run on that loop: they must not block.

    **Sentinels.** ``MISSING`` and ``DELETE`` are never stored: a method given one as a value
    raises ``TypeError`` before anything is queued (see ``docs/actor.md``).

    **Cancellation and deadlines.** A call cancelled (``task.cancel()``,
    ``asyncio.timeout``) before the owner started it is withdrawn and *never applied*; one
    the owner already ran took effect, and the cancellation drops its result. A ``timeout``
    (per call, or the map's default) that passes before the owner starts the call raises
    ``MapBusyError``: not applied.

    **Lifecycle.** ``async with AsyncActorMap() as m:`` closes (draining) at the end;
    ``await m.aclose(drain=False)`` rejects what is queued. The owner is a callback the
    loop runs only while requests are queued (not a task), so an idle map has nothing
    pending on its loop: dropping it without closing leaks nothing, and a loop that shuts
    down cancels only the callers' tasks (their queued calls are withdrawn, not applied).
    In a forked child (where the loop's thread does not exist) the map keeps its data and
    binds to the loop it is next used on.

    Keyword-only options (reserved names, never keyword items): ``maxsize``, ``timeout``,
    ``name``, ``breaker``, as for ``ActorMap`` (there is no ``daemon``: that is an item).
    """

    __slots__ = ("__weakref__", "_mailbox", "_options_", "_owner", "_view_ref")

    def __init__(
        self,
        other: Any = (),
        /,
        *,
        maxsize: int = 1024,
        name: str | None = None,
        timeout: float | None = None,
        breaker: CircuitBreaker | None = None,
        **kwargs: V,
    ) -> None:
        check_options("AsyncActorMap", name=name, breaker=breaker)
        self._options_: dict[str, Any] = {
            "maxsize": maxsize,
            "name": name or f"AsyncActorMap-{next(_serial)}",
            "timeout": normalize_timeout(timeout),
            "breaker": breaker,
        }
        self._owner: Owner[K, V] = Owner(stage(other, kwargs))
        self._mailbox = AsyncMailbox(self._owner, maxsize, breaker)
        self._view_ref: weakref.ref[ThreadsafeView[K, V]] | None = None
        track_for_fork(self._mailbox)
        new_map(self)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop here: the map binds to the loop it is first used on
        self._mailbox.bind(loop)

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        mailbox = self._mailbox
        if mailbox.loop is not loop:
            if mailbox.loop is None:
                mailbox.bind(loop)
            elif mailbox.loop.is_closed():
                raise MapClosedError("the map's event loop is closed")
            else:
                raise RuntimeError(
                    "this AsyncActorMap belongs to another event loop; "
                    "from other threads, use its .threadsafe view"
                )
        return loop

    async def _call(
        self,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        kind: int,
        *,
        timeout: float | None = None,
        block: bool = True,
    ) -> Any:
        loop = self._bind()
        timeout = self._options_["timeout"] if timeout is None else normalize_timeout(timeout)
        deadline = None if timeout is None else loop.time() + timeout
        req = AsyncRequest(op, args, kind, loop.create_future(), deadline)
        return await self._mailbox.call(req, block)

    # ------------------------------------------------------------------ lifecycle

    @property
    def name(self) -> str:
        return str(self._options_["name"])

    @property
    def closed(self) -> bool:
        """Whether the map accepts no more calls: it was closed, or its event loop was."""
        mailbox = self._mailbox
        return mailbox.closed or (mailbox.loop is not None and mailbox.loop.is_closed())

    @property
    def threadsafe(self) -> ThreadsafeView[K, V]:
        """A synchronous :class:`~safemap.ConcurrentMapping` over this map for code in
        other threads: each call is sent to the map's loop and waited for (see
        :class:`~safemap.actor.ThreadsafeView`). The map must have started on its loop.

        While a view is alive every access returns that same view, so the entries bound
        through it (``scoped``, ``bind``) and its loads in flight (``get_or_compute``) are
        shared by every thread that asks for ``m.threadsafe``. The map holds its view
        weakly (a strong reference both ways would keep a dropped map alive until the cyclic
        collector ran)."""
        ref = self._view_ref
        view = ref() if ref is not None else None
        if view is None:
            with _VIEW_LOCK:  # two threads asking at once get one view
                ref = self._view_ref
                view = ref() if ref is not None else None
                if view is None:
                    view = ThreadsafeView(self)
                    self._view_ref = weakref.ref(view)
        return view

    async def aget_or_compute(
        self, key: K, loader: Callable[[K], Awaitable[V]], *, timeout: float | None = None
    ) -> V:
        """The value of ``key``; if absent, ``await loader(key)`` is stored and returned,
        with the guarantees of ``ConcurrentMapping.aget_or_compute``: the loader runs in a
        task of its own with no lock held, once per key at a time; other callers wait for
        its result (up to ``timeout``, then ``TimeoutError``), a cancelled waiter leaves it
        running for the others, a raising loader fails every waiter and stores nothing, a
        value stored meanwhile wins. Callers on this loop and, through ``m.threadsafe``,
        in other threads share one load of a key while that view is alive. For scoped and
        bound entries use the view: ``m.threadsafe.scoped(...)``, ``m.threadsafe.bind(...)``
        (it also works on this loop, where it runs calls inline)."""
        # On this loop the view runs calls inline; elsewhere it sends them here.
        return await self.threadsafe.aget_or_compute(key, loader, timeout=timeout)

    def stats(self) -> MapStats:
        """The map's statistics (see ``safemap.MapStats``): its operation counters and, in
        ``mailbox``, the queue's depth, admissions, waits, timeouts, rejections,
        cancellations and the breaker's state. Exact on the map's loop; from another
        thread, each counter is a recent value."""
        return map_stats("AsyncActorMap", self._mailbox.stats(self._owner), self._owner)

    async def aclose(self, drain: bool = True) -> None:
        """Stop accepting calls; with ``drain`` (the default) wait until the owner has run
        what is queued, else fail the queued calls with ``MapClosedError`` (not applied).
        Idempotent."""
        loop = self._mailbox.loop
        if loop is not None and loop.is_closed():
            self._mailbox.closed = True  # nothing runs there any more: just refuse calls
            return
        if loop is not None:
            self._bind()  # on the map's own loop, or RuntimeError
        self._mailbox.close(drain)
        await self._mailbox.wait_drained()

    async def __aenter__(self) -> AsyncActorMap[K, V]:
        self._bind()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._mailbox._items)} queued"
        return f"<{type(self).__name__} {self.name!r} {state}>"

    # ------------------------------------------------------------ protocol, awaited

    async def load(self, key: K) -> tuple[V | None, bool]:
        """``(value, True)`` if ``key`` is present, else ``(None, False)``."""
        return await self._call(_ops.load, (key,), READ)  # type: ignore[no-any-return]

    @overload
    async def get(self, key: K, /) -> V | None: ...
    @overload
    async def get(self, key: K, default: V | T, /) -> V | T: ...

    async def get(self, key: K, default: Any = None, /) -> Any:
        """The value for ``key`` if present, else ``default``."""
        value, found = await self.load(key)
        return value if found else default

    async def contains(self, key: K) -> bool:
        """Whether ``key`` is present."""
        return (await self.load(key))[1]

    async def size(self) -> int:
        """The number of entries."""
        return await self._call(_ops.length, (), READ)  # type: ignore[no-any-return]

    async def snapshot(self) -> FrozenMap[K, V]:
        """A :class:`~safemap.FrozenMap` of the contents at one instant (also the way to
        iterate, copy or pickle the data)."""
        return FrozenMap._adopt(await self._call(_ops.copy, (), READ))

    async def store(self, key: K, value: V) -> None:
        """Set ``key`` to ``value``."""
        _ops.check_storable(value)
        await self._call(_ops.store, (key, value), WRITE)

    async def update(self, other: Any = (), /, **kwargs: V) -> None:
        """Store every item of ``other`` (a mapping or pairs) and ``kwargs``, at one instant."""
        staged = stage(other, kwargs)
        if staged:
            await self._call(_ops.update, (staged,), WRITE)

    async def delete(self, key: K) -> None:
        """Remove ``key`` if present."""
        await self._call(_ops.load_and_delete, (key,), WRITE)

    async def pop(self, key: K, default: Any = _ops.ABSENT, /) -> Any:
        """Remove ``key`` and return its value; ``default`` (or ``KeyError``) if absent."""
        value, found = await self.load_and_delete(key)
        if found:
            return value
        if default is _ops.ABSENT:
            raise KeyError(key)
        return default

    async def popitem(self) -> tuple[K, V]:
        """Remove and return some ``(key, value)``; ``KeyError`` if the map is empty."""
        item = await self._call(_ops.popitem, (), WRITE)
        if item is _ops.ABSENT:
            raise KeyError("popitem(): map is empty")
        return item  # type: ignore[no-any-return]

    async def setdefault(self, key: K, default: V = None) -> V:  # type: ignore[assignment]
        """The value for ``key``, first storing ``default`` if absent."""
        return (await self.load_or_store(key, default))[0]

    async def clear(self) -> None:
        """Remove every entry, atomically."""
        old = await self._call(_ops.clear, (), WRITE)
        del old  # freed here, in the calling task (see _ops.clear)

    async def load_or_store(self, key: K, value: V) -> tuple[V, bool]:
        """``(existing, True)``, or store ``value`` and return ``(value, False)``."""
        _ops.check_storable(value)
        return await self._call(_ops.load_or_store, (key, value), WRITE)  # type: ignore[no-any-return]

    async def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        """Remove ``key``; ``(value, True)``, or ``(None, False)`` if absent."""
        return await self._call(_ops.load_and_delete, (key,), WRITE)  # type: ignore[no-any-return]

    async def swap(self, key: K, value: V) -> tuple[V | None, bool]:
        """Store ``value``; ``(previous, True)``, or ``(None, False)`` if absent."""
        _ops.check_storable(value)
        return await self._call(_ops.swap, (key, value), WRITE)  # type: ignore[no-any-return]

    async def compare_and_swap(self, key: K, old: V, new: V) -> bool:
        """Store ``new`` only if ``key`` holds a value equal to ``old``."""
        _ops.check_storable(new)
        if _ops.is_sentinel(old):
            return False  # no entry holds a sentinel (whatever a value's __eq__ says)
        return await self._call(_ops.compare_and_swap, (key, old, new), WRITE)  # type: ignore[no-any-return]

    async def compare_and_delete(self, key: K, old: V) -> bool:
        """Remove ``key`` only if it holds a value equal to ``old``."""
        if _ops.is_sentinel(old):
            return False
        return await self._call(_ops.compare_and_delete, (key, old), WRITE)  # type: ignore[no-any-return]

    async def compute(self, key: K, fn: Callable[[K, V | Missing], V | Delete]) -> V | None:
        """Replace the entry with ``fn(key, old)`` atomically (see the protocol)."""
        return await self._call(_ops.compute, (key, fn), WRITE)  # type: ignore[no-any-return]

    async def compute_if_absent(self, key: K, factory: Callable[[K], V | Delete]) -> V | None:
        """The value for ``key``, first storing ``factory(key)`` if absent (at most once)."""
        return await self._call(_ops.compute_if_absent, (key, factory), WRITE)  # type: ignore[no-any-return]

    async def compute_if_present(self, key: K, fn: Callable[[K, V], V | Delete]) -> V | None:
        """If present, replace the value with ``fn(key, old)`` (``DELETE`` removes)."""
        return await self._call(_ops.compute_if_present, (key, fn), WRITE)  # type: ignore[no-any-return]

    async def merge(self, key: K, value: V, fn: Callable[[V, V], V | Delete]) -> V | None:
        """Store ``value`` if absent, else ``fn(old, value)`` (``DELETE`` removes)."""
        _ops.check_storable(value)
        return await self._call(_ops.merge, (key, value, fn), WRITE)  # type: ignore[no-any-return]

    async def range(self, fn: Callable[[K, V], object]) -> None:
        """Call ``fn(key, value)`` over one snapshot, in the calling task, until it returns
        ``False``."""
        items = await self._call(_ops.items, (), READ)
        for key, value in self._owner.iterations.iterate(items):
            if fn(key, value) is False:
                return

    async def delete_if(self, pred: Callable[[K, V], object]) -> int:
        """Remove the entries for which ``pred(key, value)`` is true (``pred`` runs in the
        calling task over one snapshot; each match is removed only if unchanged)."""
        pairs: Iterable[tuple[K, V]] = await self._call(_ops.items, (), READ)
        matches = [(key, value) for key, value in pairs if pred(key, value)]
        if not matches:
            return 0
        return await self._call(_ops.delete_matching, (matches,), WRITE)  # type: ignore[no-any-return]

    async def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        """Run ``fn(view)`` on the owner: all of its changes land at once, or none if it
        raises (see the protocol). ``fn`` is a plain function."""
        return await self._call(_ops.transaction, (fn,), TXN)  # type: ignore[no-any-return]

    async def execute(
        self,
        fn: Callable[[dict[K, V], *Ts], T],
        *args: *Ts,
        timeout: float | None = None,
        block: bool = True,
    ) -> T:
        """Run ``fn(d, *args)`` on the owner task against the map's own ``dict`` and return
        its result: multi-key logic, atomically. As ``ActorMap.execute``; ``fn`` is a plain
        function (it must not block the loop), ``timeout`` bounds the wait for the owner to
        start it (``MapBusyError``: not applied) and ``block=False`` fails at once on a full
        queue."""
        return await self._call(  # type: ignore[no-any-return]
            _ops.execute, (fn, *args), EXEC, timeout=timeout, block=block
        )


# ------------------------------------------------------------------ the threadsafe view

_UNBOUND = (
    "the AsyncActorMap has no event loop: create it inside its loop, or use it there once "
    "(e.g. 'async with'), before calling it from other threads (after a fork, too)"
)
_LOOP_CHECK_INTERVAL: Final = 0.25  # seconds between checks that the loop still exists
_EXPIRED = "the call's deadline passed before the owner started it; it was not applied"
_NOT_RUN = "the map's event loop closed before running the call; not applied"


def _discard(coro: Coroutine[Any, Any, Any]) -> None:
    """Close ``coro`` if it has not started (an interrupt inside
    ``run_coroutine_threadsafe`` after it scheduled the call leaves it running instead)."""
    with contextlib.suppress(ValueError, RuntimeError):
        coro.close()


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop runs nothing any more
        loop.call_soon_threadsafe(fn, *args)


def _sleep(caller: ThreadCaller, loop: asyncio.AbstractEventLoop, deadline: float | None) -> str:
    """Wait for ``caller``'s outcome: ``"done"``, ``"timeout"`` or ``"closed"`` (the loop
    closed first; a closed loop runs nothing, so waiting longer is pointless)."""
    while True:
        interval = _LOOP_CHECK_INTERVAL
        if deadline is not None:
            remaining = deadline - monotonic()
            if remaining <= 0:
                return "timeout"
            interval = min(interval, remaining)
        if caller.wait(interval):
            return "done"
        if loop.is_closed():
            return "closed"


def _wait(
    caller: ThreadCaller,
    mailbox: AsyncMailbox,
    loop: asyncio.AbstractEventLoop,
    deadline: float | None,
) -> Any:
    """The calling thread's side of a view call: the request's outcome whenever it has one.

    Giving up (deadline, interrupt, closed loop) is atomic with the owner's claim of the
    request (``ThreadCaller``), so each answer is exact: ``MapBusyError``/``MapClosedError``
    only when the request never ran and never will, ``TimeoutError`` when it is running,
    ``OutcomeUnknownError`` when the loop closed in the middle of running it.
    """
    try:
        why = _sleep(caller, loop, deadline)
    except BaseException:  # interrupted (KeyboardInterrupt): withdraw it if not started
        if caller.give_up() != FINISHED:
            _post(loop, mailbox.withdraw, caller, False)
        raise
    if why == "done":
        return caller.outcome()
    state = caller.give_up()
    if state == FINISHED:  # settled just now, as we gave up: it is the outcome
        return caller.outcome()
    if why == "closed":
        if state == WAITING:
            raise MapClosedError(_NOT_RUN)
        raise OutcomeUnknownError(
            "the map's event loop closed while its owner was running the call: it may or "
            "may not have taken effect"
        )
    _post(loop, mailbox.withdraw, caller, True)
    if state == WAITING:
        raise MapBusyError(_EXPIRED)
    raise TimeoutError(
        "the call's deadline passed while the owner was running it: it runs to completion "
        "(its effect takes place) and its result is dropped"
    )


class ThreadsafeView(OwnedMap[K, V]):
    """The whole :class:`~safemap.ConcurrentMapping` protocol over an
    :class:`~safemap.AsyncActorMap`, for threads other than its event loop's.

    Each call is sent to the map's loop and waited for, with the map's guarantees: atomic
    per call, backpressure, and deadlines (``execute(..., timeout=)`` or the map's default)
    that bound the whole call from the caller's side, also while the loop is blocked or
    stopped. The outcome is exact:

    - the result or the request's exception: it ran (also when the loop shut down right
      after running it);
    - :class:`~safemap.MapBusyError`: not applied, ever (the deadline passed before the
      owner started it, or the queue stayed full);
    - :class:`~safemap.MapClosedError`: not applied (the map or its loop was closed first,
      or the loop shut down before admitting it);
    - ``TimeoutError``: the deadline passed while the owner was running it: it takes effect,
      the result is dropped;
    - :class:`~safemap.actor.OutcomeUnknownError`: the loop closed in the middle of running
      it (its thread was interrupted there): it may or may not have taken effect.

    Calls made on the loop's own thread run inline instead of waiting for the loop they
    would block: from the map's own callbacks under the protocol's re-entry rules, and from
    anywhere else on that thread at once, ahead of the queued requests (which have not
    taken effect yet, so each call is still atomic). The loop's own thread is the one
    running it, or, while it is stopped (between ``run_until_complete`` calls), the one
    that ran it last.

    A view shares the map; it cannot be copied or pickled (take ``snapshot()``).
    """

    __slots__ = ("__weakref__", "_map")  # weakly referenceable, as the protocol promises

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
        mailbox = amap._mailbox
        loop = mailbox.loop
        if loop is None:
            if amap.closed:
                raise MapClosedError("the map is closed")
            raise RuntimeError(_UNBOUND)
        if loop.is_closed():
            raise MapClosedError("the map's event loop is closed")
        if mailbox.serves_here(loop):
            # Only this thread runs the owner, so running the call here and now is the same
            # as running it as the next request (linearizable: queued requests have not
            # taken effect yet), while waiting for the loop would wait for ever.
            if mailbox.closed:
                raise MapClosedError("the map is closed")
            return owner.run_inline(op, args, kind)
        # The deadline starts now, on this side: it bounds the whole call, also while the
        # loop is too busy to even receive it.
        timeout = amap._options_["timeout"] if timeout is None else normalize_timeout(timeout)
        deadline = None if timeout is None else monotonic() + timeout
        caller = ThreadCaller()
        try:
            loop.call_soon_threadsafe(mailbox.receive, caller, op, args, kind, deadline, block)
        except RuntimeError:
            if loop.is_closed():
                raise MapClosedError("the map's event loop is closed") from None
            raise
        return _wait(caller, mailbox, loop, deadline)

    @property
    def closed(self) -> bool:
        return self._map.closed

    @property
    def _iterations(self) -> IterationGauge:
        return self._map._owner.iterations

    def _collect_stats(self) -> MapStats:
        return self._map.stats()

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Close the map (see ``AsyncActorMap.aclose``) and wait up to ``timeout`` seconds
        for the queue to drain (``TimeoutError`` if it has not). On the loop's own thread
        it closes without waiting."""
        amap = self._map
        mailbox = amap._mailbox
        loop = mailbox.loop
        if loop is not None and loop.is_closed():
            mailbox.closed = True  # nothing runs there any more: just refuse calls
            return
        if loop is None or mailbox.serves_here(loop):  # cannot wait for the loop here
            mailbox.close(drain)
            return
        coro = amap.aclose(drain)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except BaseException:
            _discard(coro)
            if loop.is_closed():
                mailbox.closed = True
                return
            raise
        future.result(normalize_timeout(timeout))

    def __enter__(self) -> ThreadsafeView[K, V]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
