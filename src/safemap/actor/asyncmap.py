"""``AsyncActorMap``: a dict owned by one event loop and reached only through messages."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable, MutableMapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, TypeVarTuple, overload

from ..protocol import FrozenMap, MapClosedError
from ..protocol.sentinels import Delete, Missing
from . import _ops
from ._amailbox import AsyncMailbox, AsyncRequest
from ._breaker import CircuitBreaker
from ._lifecycle import track_for_fork
from ._owned import stage
from ._owner import EXEC, READ, TXN, WRITE, Owner
from ._stats import ActorStats, normalize_timeout

if TYPE_CHECKING:
    from .view import ThreadsafeView

__all__ = ["AsyncActorMap"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_serial = itertools.count(1)


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

    Options as for ``ActorMap``: ``maxsize``, ``timeout``, ``name``, ``breaker``.
    """

    __slots__ = ("__weakref__", "_mailbox", "_options_", "_owner")

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
        self._options_: dict[str, Any] = {
            "maxsize": maxsize,
            "name": name or f"AsyncActorMap-{next(_serial)}",
            "timeout": normalize_timeout(timeout),
            "breaker": breaker,
        }
        self._owner: Owner[K, V] = Owner(stage(other, kwargs))
        self._mailbox = AsyncMailbox(self._owner, maxsize, breaker)
        track_for_fork(self._mailbox)
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
        mailbox = self._mailbox
        timeout = self._options_["timeout"] if timeout is None else normalize_timeout(timeout)
        if timeout is None:
            req = AsyncRequest(op, args, kind, loop.create_future(), None)
            await mailbox.put(req, block)
            return await mailbox.result(req)
        req = AsyncRequest(op, args, kind, loop.create_future(), loop.time() + timeout)
        assert req.deadline is not None
        timer = loop.call_at(req.deadline, mailbox.expire, req)
        try:
            await mailbox.put(req, block)
            return await mailbox.result(req)
        finally:
            timer.cancel()

    # ------------------------------------------------------------------ lifecycle

    @property
    def name(self) -> str:
        return str(self._options_["name"])

    @property
    def closed(self) -> bool:
        """Whether the map was closed (it accepts no more calls)."""
        return self._mailbox.closed

    @property
    def threadsafe(self) -> ThreadsafeView[K, V]:
        """A synchronous :class:`~safemap.ConcurrentMapping` over this map for code in
        other threads: each call is sent to the map's loop and waited for (see
        :class:`~safemap.actor.ThreadsafeView`). The map must have started on its loop."""
        from .view import ThreadsafeView

        return ThreadsafeView(self)

    def stats(self) -> ActorStats:
        """Queue depth, admissions, rejections, cancellations and the breaker's state.
        Exact on the map's loop; from another thread, each counter is a recent value."""
        return self._mailbox.stats(self._owner)

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
        return await self._call(_ops.load_or_store, (key, value), WRITE)  # type: ignore[no-any-return]

    async def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        """Remove ``key``; ``(value, True)``, or ``(None, False)`` if absent."""
        return await self._call(_ops.load_and_delete, (key,), WRITE)  # type: ignore[no-any-return]

    async def swap(self, key: K, value: V) -> tuple[V | None, bool]:
        """Store ``value``; ``(previous, True)``, or ``(None, False)`` if absent."""
        return await self._call(_ops.swap, (key, value), WRITE)  # type: ignore[no-any-return]

    async def compare_and_swap(self, key: K, old: V, new: V) -> bool:
        """Store ``new`` only if ``key`` holds a value equal to ``old``."""
        return await self._call(_ops.compare_and_swap, (key, old, new), WRITE)  # type: ignore[no-any-return]

    async def compare_and_delete(self, key: K, old: V) -> bool:
        """Remove ``key`` only if it holds a value equal to ``old``."""
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
        return await self._call(_ops.merge, (key, value, fn), WRITE)  # type: ignore[no-any-return]

    async def range(self, fn: Callable[[K, V], object]) -> None:
        """Call ``fn(key, value)`` over one snapshot, in the calling task, until it returns
        ``False``."""
        for key, value in await self._call(_ops.items, (), READ):
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
