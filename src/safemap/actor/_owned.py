"""``OwnedMap``: the protocol for a map whose dict belongs to one owner, one request per call.

``ActorMap`` (an owner thread) and ``ThreadsafeView`` (an ``AsyncActorMap``'s owner task,
reached from other threads) differ only in how a request gets to the owner and back, their
``_call``. Everything else is here: each method below is *one* request, so it costs one
hand-off and is atomic simply because the owner runs one request at a time. Methods the
base class derives in a single request already (``get``, ``pop``, ``m[k]``, ``in``,
``delete``, ``setdefault``, ...) are inherited; the ones it would derive through a
``compute`` closure or through several requests are replaced.
"""

from __future__ import annotations

import abc
import reprlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, TypeVar, TypeVarTuple

from ..protocol import ConcurrentMapping, FrozenMap, MapBusyError, MapClosedError
from ..protocol.mapping import IterationGauge
from ..protocol.sentinels import Delete, Missing
from . import _ops
from ._owner import EXEC, READ, TXN, WRITE

__all__ = ["REPR_TIMEOUT", "OwnedMap", "stage"]

REPR_TIMEOUT = 1.0
"""Seconds ``repr`` waits for the owner before it gives a repr without the contents."""

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def stage(other: Any, kwargs: Mapping[str, Any]) -> dict[Any, Any]:
    """The items ``dict.update(other, **kwargs)`` would store, in a new dict.

    Built on the calling thread, so user code (iterators, ``keys()``, ``__hash__``) runs
    there and a malformed input (or a sentinel as a value: ``TypeError``) raises before the
    owner sees anything.
    """
    if isinstance(other, ConcurrentMapping):
        other = other.snapshot()  # one consistent view, as the protocol's update() takes
    staged: dict[Any, Any] = {}
    staged.update(other, **kwargs)
    for value in staged.values():
        _ops.check_storable(value)
    return staged


class OwnedMap(ConcurrentMapping[K, V]):
    """A :class:`~safemap.ConcurrentMapping` served by one owner: each call is one request."""

    __slots__ = ()

    @abc.abstractmethod
    def _call(
        self,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        kind: int,
        *,
        timeout: float | None = None,
        block: bool = True,
    ) -> Any:
        """Run ``op(dict, *args)`` on the owner and return its result (or raise its
        exception); ``kind`` is ``READ``/``WRITE``/``EXEC``/``TXN`` (see ``_owner``)."""

    @property
    @abc.abstractmethod
    def _iterations(self) -> IterationGauge:
        """The iterations of the map (its owner's gauge)."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """Whether the map was closed (it accepts no more calls)."""

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        """``Type({...})``, or ``Type(<busy>)`` if the owner did not serve the call within
        ``REPR_TIMEOUT`` seconds (a repr never hangs on a blocked owner: it is what a
        debugger or a log line calls), ``Type(<closed>)`` once closed."""
        name = type(self).__name__
        if self.closed:
            return f"{name}(<closed>)"
        try:
            data = self._call(_ops.copy, (), READ, timeout=REPR_TIMEOUT)
        except MapClosedError:
            return f"{name}(<closed>)"
        except (MapBusyError, TimeoutError):
            return f"{name}(<busy>)"
        return f"{name}({data!r})"

    # ---------------------------------------------------------------- primitives

    def load(self, key: K) -> tuple[V | None, bool]:
        return self._call(_ops.load, (key,), READ)  # type: ignore[no-any-return]

    def store(self, key: K, value: V) -> None:
        _ops.check_storable(value)
        self._call(_ops.store, (key, value), WRITE)

    def compute(self, key: K, fn: Callable[[K, V | Missing], V | Delete]) -> V | None:
        return self._call(_ops.compute, (key, fn), WRITE)  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self._call(_ops.length, (), READ)  # type: ignore[no-any-return]

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        # A list taken on the owner, yielded here: the consumer can do anything meanwhile.
        return self._iterations.iterate(self._call(_ops.items, (), READ))

    def clear(self) -> None:
        self._call(_ops.clear, (), WRITE)

    def snapshot(self) -> FrozenMap[K, V]:
        return FrozenMap._adopt(self._call(_ops.copy, (), READ))

    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        return self._call(_ops.transaction, (fn,), TXN)  # type: ignore[no-any-return]

    def execute(
        self,
        fn: Callable[[dict[K, V], *Ts], T],
        *args: *Ts,
        timeout: float | None = None,
        block: bool = True,
    ) -> T:
        """Run ``fn(d, *args)`` on the owner, where ``d`` is the map's own ``dict``, and
        return its result: any multi-key logic, atomically.

        No other request runs while ``fn`` does. ``d`` is valid only inside ``fn`` and on
        the owner: do not keep it. If ``fn`` raises, the exception reaches this caller with
        its traceback, and whatever ``fn`` changed in ``d`` before raising stays changed
        (use :meth:`transaction` for all-or-nothing). Calls to this map from inside ``fn``
        run inline. ``fn`` should be short: it holds up every other caller.

        ``timeout`` (default: the map's) bounds the whole call and ``block=False`` fails at
        once when the queue is full; see the class documentation for what each outcome
        (``MapBusyError``, ``TimeoutError``, ``MapClosedError``) means.
        """
        return self._call(  # type: ignore[no-any-return]
            _ops.execute, (fn, *args), EXEC, timeout=timeout, block=block
        )

    # ----------------------------------------------------- single-request compounds

    def popitem(self) -> tuple[K, V]:
        item = self._call(_ops.popitem, (), WRITE)
        if item is _ops.ABSENT:
            raise KeyError("popitem(): map is empty")
        return item  # type: ignore[no-any-return]

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        """Store every item of ``other`` (a mapping or pairs) and ``kwargs``, in one
        request: the whole update lands at one instant (stronger than the protocol asks),
        unless a key's ``__eq__`` raises part-way, which leaves the keys before it stored."""
        staged = stage(other, kwargs)
        if staged:
            self._call(_ops.update, (staged,), WRITE)

    def load_or_store(self, key: K, value: V) -> tuple[V, bool]:
        _ops.check_storable(value)
        return self._call(_ops.load_or_store, (key, value), WRITE)  # type: ignore[no-any-return]

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        return self._call(_ops.load_and_delete, (key,), WRITE)  # type: ignore[no-any-return]

    def swap(self, key: K, value: V) -> tuple[V | None, bool]:
        _ops.check_storable(value)
        return self._call(_ops.swap, (key, value), WRITE)  # type: ignore[no-any-return]

    def compare_and_swap(self, key: K, old: V, new: V) -> bool:
        _ops.check_storable(new)
        if _ops.is_sentinel(old):
            return False  # no entry holds a sentinel (whatever a value's __eq__ says)
        return self._call(_ops.compare_and_swap, (key, old, new), WRITE)  # type: ignore[no-any-return]

    def compare_and_delete(self, key: K, old: V) -> bool:
        if _ops.is_sentinel(old):
            return False  # no entry holds a sentinel (whatever a value's __eq__ says)
        return self._call(_ops.compare_and_delete, (key, old), WRITE)  # type: ignore[no-any-return]

    def compute_if_absent(self, key: K, factory: Callable[[K], V | Delete]) -> V | None:
        return self._call(_ops.compute_if_absent, (key, factory), WRITE)  # type: ignore[no-any-return]

    def compute_if_present(self, key: K, fn: Callable[[K, V], V | Delete]) -> V | None:
        return self._call(_ops.compute_if_present, (key, fn), WRITE)  # type: ignore[no-any-return]

    def merge(self, key: K, value: V, fn: Callable[[V, V], V | Delete]) -> V | None:
        _ops.check_storable(value)
        return self._call(_ops.merge, (key, value, fn), WRITE)  # type: ignore[no-any-return]

    def delete_if(self, pred: Callable[[K, V], object]) -> int:
        # pred runs here, on the caller, over one snapshot; the removal pass is one request.
        matches = [(key, value) for key, value in self._iter_items() if pred(key, value)]
        if not matches:
            return 0
        return self._call(_ops.delete_matching, (matches,), WRITE)  # type: ignore[no-any-return]
