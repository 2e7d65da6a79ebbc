"""Happens-before models of ``queue``: ``Queue``, ``LifoQueue``, ``PriorityQueue`` and
``SimpleQueue``. Installed by :mod:`safemap.race._sync`.

Edges (and only these; the queue's own mutex and conditions are unmodelled originals, so
two ``put`` calls never order each other):

- a ``put`` → the ``get`` that returns *that* item. ``Queue._put``/``_get`` run under the
  queue's mutex on the caller's thread, so the model records, next to each stored item,
  the clock of the thread that put it, in a structure that mirrors the storage: a deque
  used FIFO (``Queue``) or LIFO (``LifoQueue``); for a heap (``PriorityQueue``) and for a
  user subclass with its own ``_put``/``_get``, an association by item identity (a get of
  an object that is in the queue several times joins the clocks of all its puts: the
  copies cannot be told apart).
- for a bounded queue (``maxsize > 0`` at construction), the k-th ``get`` → the
  (k+maxsize)-th ``put`` completing: each get leaves its clock in slot ``k % maxsize`` of a
  ring, which the put that the get made room for joins. So a bounded queue used as a
  mutex or a semaphore orders its critical sections.
- ``task_done`` → ``join`` returning.
- ``SimpleQueue`` (a C type): ``put`` stores the item in an envelope with the putter's
  clock; ``get`` unwraps it and joins the clock.

A user subclass defined in the standard library or in safemap (not a user program) makes
unmodelled queues, like the factories called from there.
"""

from __future__ import annotations

import functools
import queue
from collections import deque
from collections.abc import Callable
from typing import Any

from . import _runtime
from ._runtime import SyncVar
from ._sync_base import FactoryMeta, Patches, caller_is_internal, stand_in

__all__ = ["install"]

_ORIG_QUEUE = queue.Queue
_ORIG_LIFO = queue.LifoQueue
_ORIG_PRIORITY = queue.PriorityQueue
_ORIG_SIMPLE = queue.SimpleQueue

_FIFO, _LIFO, _IDENTITY = "fifo", "lifo", "identity"


def _published() -> SyncVar:
    """A fresh clock holding the caller's past (the caller's clock then advances)."""
    var = SyncVar()
    _runtime.release(var)
    return var


class _QueueClocks:
    """Per-queue bookkeeping; every method runs under the queue's mutex (from ``_put``,
    ``_get``), except ``done``, which is only merged into with ``release_merge``."""

    __slots__ = ("capacity", "depth", "done", "gets", "items", "mode", "puts", "ring")

    def __init__(self, mode: str, capacity: int) -> None:
        self.mode = mode
        self.capacity = capacity
        self.depth = 0  # nesting of _put/_get wrappers (a subclass calling super())
        self.puts = 0
        self.gets = 0
        self.items: deque[SyncVar] | dict[int, deque[SyncVar]] = (
            {} if mode == _IDENTITY else deque()
        )
        self.ring: list[SyncVar | None] = [None] * capacity
        self.done = SyncVar()

    def put(self, item: Any) -> None:
        if self.capacity:
            # This put completes only once get number (puts - capacity) has made room.
            slot = self.ring[self.puts % self.capacity]
            if slot is not None and self.puts >= self.capacity:
                _runtime.acquire(slot)
        self.puts += 1
        var = _published()
        items = self.items
        if isinstance(items, dict):
            items.setdefault(id(item), deque()).append(var)
        else:
            items.append(var)

    def get(self, item: Any, remaining: int | None) -> None:
        items = self.items
        if isinstance(items, dict):
            pending = items.get(id(item))
            if pending:
                for var in pending:
                    _runtime.acquire(var)
                pending.popleft()
                if not pending:
                    del items[id(item)]
        elif items:
            if remaining is not None and len(items) != remaining + 1:
                # The storage was changed behind the queue's back (``q.queue.clear()``):
                # the item cannot be matched, so join every pending put (never too few).
                for var in items:
                    _runtime.acquire(var)
                while len(items) > remaining:
                    items.popleft()
            else:
                _runtime.acquire(items.popleft() if self.mode == _FIFO else items.pop())
        if self.capacity:
            self.ring[self.gets % self.capacity] = _published()
        self.gets += 1


def _wrap_put(put: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    @functools.wraps(put)
    def _put(self: Any, item: Any) -> None:
        clocks: _QueueClocks | None = getattr(self, "_race_clocks", None)
        if clocks is None:
            put(self, item)
            return
        clocks.depth += 1
        try:
            put(self, item)
        finally:
            clocks.depth -= 1
        if not clocks.depth:
            clocks.put(item)

    _put.__safemap_race_wrapper__ = True  # type: ignore[attr-defined]
    return _put


def _wrap_get(get: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(get)
    def _get(self: Any) -> Any:
        clocks: _QueueClocks | None = getattr(self, "_race_clocks", None)
        if clocks is None:
            return get(self)
        clocks.depth += 1
        try:
            item = get(self)
        finally:
            clocks.depth -= 1
        if not clocks.depth:
            remaining = len(self.queue) if clocks.mode != _IDENTITY else None
            clocks.get(item, remaining)
        return item

    _get.__safemap_race_wrapper__ = True  # type: ignore[attr-defined]
    return _get


class _QueueModel(metaclass=FactoryMeta):
    """The model's methods, mixed in front of a ``queue`` class."""

    _safemap_race_mode = _FIFO
    _safemap_race_internal = False
    _race_clocks: _QueueClocks | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._safemap_race_internal = caller_is_internal(1)
        own = vars(cls)
        for name, wrap in (("_put", _wrap_put), ("_get", _wrap_get)):
            method = own.get(name)
            if method is not None and not getattr(method, "__safemap_race_wrapper__", False):
                setattr(cls, name, wrap(method))
                cls._safemap_race_mode = _IDENTITY  # storage of its own: match by identity

    def __init__(self, maxsize: int = 0) -> None:
        internal = type(self)._safemap_race_internal
        capacity = maxsize if isinstance(maxsize, int) and maxsize > 0 else 0
        self._race_clocks = None if internal else _QueueClocks(self._safemap_race_mode, capacity)
        super().__init__(maxsize)  # type: ignore[call-arg]

    def task_done(self) -> None:
        clocks = self._race_clocks
        if clocks is not None:
            _runtime.release_merge(clocks.done)
        super().task_done()  # type: ignore[misc]

    def join(self) -> None:
        super().join()  # type: ignore[misc]
        clocks = self._race_clocks
        if clocks is not None:
            _runtime.acquire(clocks.done)


def _model_new(model: type, original: type) -> Any:
    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        if cls is model and caller_is_internal(1):
            return original(*args, **kwargs)
        return object.__new__(cls)

    return __new__


class Queue(_QueueModel, _ORIG_QUEUE[Any]):
    """``queue.Queue`` (FIFO) while the detector is installed."""

    _put = _wrap_put(_ORIG_QUEUE._put)  # type: ignore[assignment]
    _get = _wrap_get(_ORIG_QUEUE._get)


class LifoQueue(_QueueModel, _ORIG_LIFO[Any]):
    """``queue.LifoQueue`` while the detector is installed."""

    _safemap_race_mode = _LIFO
    _put = _wrap_put(_ORIG_LIFO._put)  # type: ignore[assignment]
    _get = _wrap_get(_ORIG_LIFO._get)


class PriorityQueue(_QueueModel, _ORIG_PRIORITY[Any]):
    """``queue.PriorityQueue`` while the detector is installed."""

    _safemap_race_mode = _IDENTITY
    _put = _wrap_put(_ORIG_PRIORITY._put)  # type: ignore[assignment]
    _get = _wrap_get(_ORIG_PRIORITY._get)


class _Envelope:
    __slots__ = ("item", "var")

    def __init__(self, item: Any, var: SyncVar) -> None:
        self.item = item
        self.var = var


class SimpleQueue(_ORIG_SIMPLE[Any], metaclass=FactoryMeta):
    """``queue.SimpleQueue`` while the detector is installed: each item travels in an
    envelope with its putter's clock."""

    _safemap_race_internal = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._safemap_race_internal = caller_is_internal(1)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is SimpleQueue and caller_is_internal(1):
            return _ORIG_SIMPLE(*args, **kwargs)
        return super().__new__(cls, *args, **kwargs)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not type(self)._safemap_race_internal:
            item = _Envelope(item, _published())
        super().put(item, block, timeout)

    def put_nowait(self, item: Any) -> None:
        self.put(item, False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        item = super().get(block, timeout)
        if type(item) is _Envelope:
            _runtime.acquire(item.var)
            return item.item
        return item

    def get_nowait(self) -> Any:
        return self.get(False)


for _model, _original in (
    (Queue, _ORIG_QUEUE),
    (LifoQueue, _ORIG_LIFO),
    (PriorityQueue, _ORIG_PRIORITY),
):
    _model._safemap_race_internal = False
    _model.__new__ = staticmethod(_model_new(_model, _original))  # type: ignore[method-assign]
    stand_in(_model, _original, "queue", _original.__name__)
SimpleQueue._safemap_race_internal = False
stand_in(SimpleQueue, _ORIG_SIMPLE, "queue", "SimpleQueue")


def install(patches: Patches) -> None:
    """Put the models in ``queue`` (recorded in ``patches``)."""
    for name, model in (
        ("Queue", Queue),
        ("LifoQueue", LifoQueue),
        ("PriorityQueue", PriorityQueue),
        ("SimpleQueue", SimpleQueue),
    ):
        patches.set(queue, name, model)
