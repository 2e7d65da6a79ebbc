"""``ConcurrentMapping``: the protocol every mutable safemap map implements.

The contract is ``docs/protocol.md``. A map type implements eight primitives, each
atomic (linearizable) on its own:

    load, store, compute, __len__, _iter_items, clear, snapshot, transaction

and this class derives every other method of the protocol from them, once, for all types.
A type may override a derived method with a faster one (the native maps override most),
provided the override keeps the guarantee documented here.

Why ``compute`` is the one read-modify-write primitive: every conditional or compound
method (``swap``, ``compare_and_swap``, ``merge``, ``setdefault``, ``pop``, ...) is a
``compute`` whose callback decides from the old value, so each is exactly as atomic as
``compute`` is, and a map type gets all of them right by getting one right.
"""

from __future__ import annotations

import _thread
import abc
import itertools
import reprlib
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)

from .._typing import TYPE_CHECKING, Any, TypeVar, overload
from ._locked import FREE_THREADED, locked
from .frozen import FrozenMap
from .sentinels import DELETE, MISSING, Delete, Missing
from .variants import plain_class

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from .scoped import Binding, Scope
    from .stats import MapStats

__all__ = ["ConcurrentMapping", "IterationGauge", "commit_counts"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
M = TypeVar("M", bound="ConcurrentMapping[Any, Any]")

_ABSENT: Any = object()


_SINGLEFLIGHT: Any = None


def _singleflight() -> Any:
    """``safemap.protocol.singleflight``, imported on the first miss of ``get_or_compute``
    (it brings ``threading`` and ``typing``: not at ``import safemap``) and bound here once:
    an import statement in the method would cost every miss about 0.6 us."""
    global _SINGLEFLIGHT
    if _SINGLEFLIGHT is None:
        from . import singleflight

        _SINGLEFLIGHT = singleflight
    return _SINGLEFLIGHT


def _sentinel_stored(value: object) -> TypeError:
    """The error for storing :data:`MISSING` or :data:`DELETE` as a value (no map stores
    them: they would read back as "absent" or "remove" in the compute family)."""
    return TypeError(f"{value!r} is a sentinel and cannot be stored as a value")


def _same_value(a: object, b: object) -> bool:
    """Value equality as ``dict`` compares values: identity first, then ``==``."""
    return a is b or bool(a == b)


def _rebuild(cls: type[M], items: dict[Any, Any], options: dict[str, Any]) -> M:
    """Unpickle helper: a new ``cls`` with ``options`` holding ``items``."""
    new = cls(**options)
    new.update(items)
    return new


class ConcurrentMapping(MutableMapping[K, V], metaclass=abc.ABCMeta):
    """A mutable mapping safe to share between threads.

    Guarantees of every method, on GIL and free-threaded builds alike:

    - **Atomic per call**: each call takes effect at one instant between its invocation and
      its return, also when a key's ``__hash__``/``__eq__`` or a callback runs Python code.
    - **Exceptions leave no trace**: if a key's ``__hash__``/``__eq__`` or a callback raises,
      the exception propagates unchanged and the map is as it was before the call.
    - **No deadlock on re-entry**: re-entering the map from a callback in a way that would
      deadlock or break atomicity raises :class:`~safemap.RecursiveUpdateError`.
    - **Weakly consistent iteration**: iterating while other threads mutate never raises;
      every key present for the whole iteration is yielded exactly once, a key inserted or
      removed meanwhile at most once. ``snapshot()`` gives a consistent point-in-time view.
    - **No lock is held while user code runs**, except inside a compute-family callback and
      inside ``transaction``.
    - Values are compared as ``dict`` compares them (identity first, then ``==``).
    - **Sentinels are not values**: :data:`~safemap.MISSING` and :data:`~safemap.DELETE`
      are never stored. Every method that would store a caller-given value raises
      ``TypeError`` for them before changing anything; a compute-family callback returning
      ``MISSING`` does too (returning ``DELETE`` removes the entry).
    """

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # mutable maps are unhashable, like dict

    # Whether reads return the very object stored (``False`` for a map that stores
    # encoded copies): bound entries are then removed by equality instead of identity.
    _value_identity = True

    # ------------------------------------------------------------------ primitives

    @abc.abstractmethod
    def load(self, key: K) -> tuple[V | None, bool]:
        """Return ``(value, True)`` if ``key`` is present, else ``(None, False)``."""

    @abc.abstractmethod
    def store(self, key: K, value: V) -> None:
        """Set ``key`` to ``value`` (``TypeError`` for a sentinel value)."""

    @abc.abstractmethod
    def compute(self, key: K, fn: Callable[[K, V | Missing], V | Delete]) -> V | None:
        """Atomically replace the entry for ``key`` with ``fn(key, old)``.

        ``old`` is :data:`~safemap.MISSING` when ``key`` is absent. ``fn`` returns the new
        value, or :data:`~safemap.DELETE` to remove the entry (or to leave it absent).
        Returns the new value, or ``None`` when the entry ends absent; ``fn`` returning
        ``MISSING`` raises ``TypeError`` and leaves the map unchanged. The whole
        read-modify-write is atomic with respect to every other operation on ``key``:
        concurrent callers for the same key run their callbacks one after another. ``fn``
        may read the map; writing to it from ``fn`` raises ``RecursiveUpdateError``.
        """

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of entries: exact when no mutation is in flight, otherwise a value
        the map had at some instant during the call."""

    @abc.abstractmethod
    def _iter_items(self) -> Iterator[tuple[K, V]]:
        """Weakly consistent ``(key, value)`` iteration that never raises on concurrent
        mutation and holds no lock while the consumer runs."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Remove every entry, atomically."""

    @abc.abstractmethod
    def snapshot(self) -> FrozenMap[K, V]:
        """A :class:`~safemap.FrozenMap` equal to the map's contents at one instant.

        Shallow: values are shared with the map, as with ``copy()``.
        """

    @abc.abstractmethod
    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        """Run ``fn(view)`` with exclusive access to the whole map and return its result.

        ``view`` is a ``MutableMapping`` of the map's contents, valid only inside ``fn``
        (using it afterwards raises ``RuntimeError``). Every change ``fn`` makes through the
        view lands atomically when ``fn`` returns, or not at all if it raises; the commit is
        all or nothing too: if a key's ``__hash__``/``__eq__`` raises while the changes are
        applied, the exception propagates and the map is exactly as before. Calling the
        map's own methods from ``fn`` raises ``RecursiveUpdateError``; storing a sentinel
        through the view raises ``TypeError``. An interrupt (``KeyboardInterrupt``, or any
        exception a signal handler raises) in ``fn`` or while the call waits for the map
        ends the call like any exception, with nothing of the map left locked.
        """

    def _options(self) -> dict[str, Any]:
        """The keyword options that rebuild a map like this one (for copy and pickle)."""
        return {}

    # ---------------------------------------------------------------- statistics

    def _collect_stats(self) -> MapStats:
        """The map type's own counters as a :class:`~safemap.MapStats` (``hot_keys`` and
        ``latency`` empty: :meth:`stats` adds them)."""
        raise NotImplementedError(f"{type(self).__name__} does not collect statistics yet")

    def stats(self) -> MapStats:
        """A snapshot of the map's statistics (see ``safemap.MapStats``): cumulative,
        exact counters since the map was made (any exception is named in its ``inexact``
        and explained in its ``notes``), the size, lock contention, and the hot keys and
        sampled latency when :meth:`track` turned them on. ``later.minus(earlier)`` gives
        the counts of an interval."""
        collected = self._collect_stats()
        from .tracking import tracked  # only a tracked map has anything to add

        hot_keys, latency = tracked(self)
        if not hot_keys and not latency:
            return collected
        import dataclasses

        return dataclasses.replace(collected, hot_keys=hot_keys, latency=latency)

    def track(self, *, hot_keys: int | None = None, latency_every: int | None = None) -> None:
        """Turn opt-in tracking of this map on or off.

        ``hot_keys=k`` (> 0) keeps a bounded top-``k`` of the keys used by point reads and
        writes (Space-Saving: every key used more than ``N/k`` of ``N`` times is listed,
        its count over-estimated by at most ``N/k``), reported in ``stats().hot_keys``.
        ``latency_every=n`` (> 0) times one in ``n`` calls of each operation kind (``get``,
        ``set``, ``delete``, ``swap``, ``load_or_store``, ``compute``) into log2 buckets from
        64 ns to ~1 ms, reported in ``stats().latency``. ``0`` turns a feature off (and
        drops its data), ``None`` leaves it as it is; turning a feature on again starts it
        afresh. A map with neither on runs exactly as an untracked one; a tracked map's
        ``type()`` is a subclass of its class (``isinstance`` holds)."""
        from .tracking import track

        track(self, hot_keys, latency_every)

    # ------------------------------------------------------------ dict interface

    def __getitem__(self, key: K) -> V:
        value, found = self.load(key)
        if not found:
            raise KeyError(key)
        return value  # type: ignore[return-value]

    def __setitem__(self, key: K, value: V) -> None:
        self.store(key, value)

    def __delitem__(self, key: K) -> None:
        _, found = self.load_and_delete(key)
        if not found:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return self.load(key)[1]  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[K]:
        """Iterate over the keys, weakly consistently (see the class guarantees)."""
        for key, _ in self._iter_items():
            yield key

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | T, /) -> V | T: ...

    def get(self, key: K, default: Any = None, /) -> Any:
        """The value for ``key`` if present, else ``default``."""
        value, found = self.load(key)
        return value if found else default

    def keys(self) -> KeysView[K]:
        """A live, weakly consistent view of the keys."""
        return KeysView(self)

    def values(self) -> ValuesView[V]:
        """A live, weakly consistent view of the values."""
        return _ValuesView(self)

    def items(self) -> ItemsView[K, V]:
        """A live, weakly consistent view of the ``(key, value)`` pairs."""
        return _ItemsView(self)

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, default: V | T, /) -> V | T: ...

    def pop(self, key: K, default: Any = _ABSENT, /) -> Any:
        """Remove ``key`` and return its value; ``default`` (or ``KeyError``) if absent."""
        value, found = self.load_and_delete(key)
        if found:
            return value
        if default is _ABSENT:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[K, V]:
        """Remove and return some ``(key, value)`` pair; ``KeyError`` if the map is empty."""
        while True:
            for key in self._some_keys():
                value, found = self.load_and_delete(key)
                if found:
                    return key, value  # type: ignore[return-value]
            # Every key we saw was removed by others meanwhile: empty only if len says so,
            # which makes the KeyError linearize at the instant len observed no entries.
            if not len(self):
                raise KeyError("popitem(): map is empty")

    def _some_keys(self, batch: int = 8) -> list[K]:
        """Up to ``batch`` keys, taken by an iteration that is closed before this returns, so
        the caller's deletes are not writes during an iteration."""
        iterator = self._iter_items()
        try:
            return [key for key, _ in itertools.islice(iterator, batch)]
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            del iterator

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment]
        """Return the value for ``key``, first storing ``default`` if it is absent."""
        return self.load_or_store(key, default)[0]

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        """Store every item of ``other`` (a mapping or pairs) and ``kwargs``.

        Each key is stored atomically; the update as a whole is not atomic (use
        ``transaction`` for that). A sentinel among the values raises ``TypeError`` before
        anything is stored.
        """
        if isinstance(other, ConcurrentMapping):
            other = other.snapshot()
        if isinstance(other, Mapping):
            pairs: Iterable[tuple[Any, Any]] = other.items()
        elif hasattr(other, "keys"):
            pairs = ((key, other[key]) for key in other.keys())  # noqa: SIM118  # dict's rule
        else:
            pairs = other
        # Materialized and checked first, so a sentinel value changes nothing.
        items = [(key, value) for key, value in pairs]
        items.extend(kwargs.items())
        for _, value in items:
            if value is MISSING or value is DELETE:
                raise _sentinel_stored(value)
        self._store_items(items)

    def _store_items(self, items: list[tuple[K, V]]) -> None:
        """Store ``items`` in order (no sentinel among them): ``update``'s last step. A type
        may store several keys per step (one round trip, say), provided each key's store
        stays atomic and a later item of the same key wins."""
        for key, value in items:
            self.store(key, value)

    def copy(self: M) -> M:
        """A new map of the same type and options, with the contents at one instant (values
        shared) and, for a subclass, its instance attributes (shallow), as ``copy.copy``."""
        new = _rebuild(plain_class(type(self)), self.snapshot()._data, self._options())
        attributes = getattr(self, "__dict__", None)
        if attributes:
            new.__dict__.update(attributes)
        return new

    def __copy__(self: M) -> M:
        return self.copy()

    def __deepcopy__(self: M, memo: dict[int, Any]) -> M:
        import copy  # here, not at module level: most programs never deep-copy a map

        new = plain_class(type(self))(**self._options())
        memo[id(self)] = new  # registered first, so a map that contains itself terminates
        for key, value in self.snapshot().items():
            new.store(copy.deepcopy(key, memo), copy.deepcopy(value, memo))
        attributes = getattr(self, "__dict__", None)
        if attributes:
            new.__dict__.update(copy.deepcopy(attributes, memo))
        return new

    def __reduce__(self) -> tuple[Any, ...]:
        # The items travel as pickle's "dictitems" (set with item assignment after the new
        # map is memoized), so a map that contains itself pickles, as a dict does.
        state = getattr(self, "__dict__", None) or None
        items = iter(self.snapshot().items())
        return (_rebuild, (plain_class(type(self)), {}, self._options()), state, None, items)

    @classmethod
    def fromkeys(cls: type[M], iterable: Iterable[Any], value: Any = None) -> M:
        """A new map (of this class) mapping every key of ``iterable`` to ``value``."""
        if value is MISSING or value is DELETE:
            raise _sentinel_stored(value)
        new = cls()
        for key in iterable:
            new[key] = value  # item assignment, as dict.fromkeys does for a subclass's result
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self.snapshot() == other

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.snapshot()._data!r})"

    def __or__(self: M, other: Mapping[K, V]) -> M:
        if not isinstance(other, Mapping):
            return NotImplemented
        new = self.copy()
        new.update(other)
        return new

    def __ror__(self: M, other: Mapping[K, V]) -> M:
        if not isinstance(other, Mapping):
            return NotImplemented
        new = _rebuild(plain_class(type(self)), dict(other.items()), self._options())
        new.update(self)
        return new

    def __ior__(self: M, other: Any) -> M:  # type: ignore[misc]  # accepts pairs, like dict
        self.update(other)
        return self

    # ------------------------------------------------------- Go sync.Map primitives

    def load_or_store(self, key: K, value: V) -> tuple[V, bool]:
        """``(existing, True)`` if ``key`` is present, else store ``value`` and return
        ``(value, False)``."""
        if value is MISSING or value is DELETE:
            raise _sentinel_stored(value)
        loaded = True

        # Each callback sets every result it reports, from its own ``old``: a map whose
        # compute retries (RedisMap's optimistic commit) runs it more than once, and only
        # the last run's view of the key is what the call did.
        def keep_or_store(_key: K, old: V | Missing) -> V:
            nonlocal loaded
            loaded = old is not MISSING
            return old if loaded else value  # type: ignore[return-value]

        actual = self.compute(key, keep_or_store)
        return actual, loaded  # type: ignore[return-value]

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        """Remove ``key``; return ``(value, True)``, or ``(None, False)`` if absent."""
        removed: Any = _ABSENT

        def take(_key: K, old: V | Missing) -> Delete:
            nonlocal removed
            removed = old
            return DELETE

        self.compute(key, take)
        if removed is _ABSENT or removed is MISSING:
            return None, False
        return removed, True

    def delete(self, key: K) -> None:
        """Remove ``key`` if present; no error if absent."""
        self.load_and_delete(key)

    def swap(self, key: K, value: V) -> tuple[V | None, bool]:
        """Store ``value``; return ``(previous, True)``, or ``(None, False)`` if absent."""
        if value is MISSING or value is DELETE:
            raise _sentinel_stored(value)
        previous: Any = MISSING

        def replace(_key: K, old: V | Missing) -> V:
            nonlocal previous
            previous = old
            return value

        self.compute(key, replace)
        if previous is MISSING:
            return None, False
        return previous, True

    def compare_and_swap(self, key: K, old: V, new: V) -> bool:
        """Store ``new`` only if ``key`` is present with a value equal to ``old``.

        A sentinel ``old`` is never equal to a stored value: the result is ``False``."""
        if new is MISSING or new is DELETE:
            raise _sentinel_stored(new)
        if old is MISSING or old is DELETE:
            return False
        swapped = False

        def swap_if_equal(_key: K, current: V | Missing) -> V | Delete:
            nonlocal swapped
            swapped = current is not MISSING and _same_value(current, old)
            if current is MISSING:
                return DELETE
            return new if swapped else current

        self.compute(key, swap_if_equal)
        return swapped

    def compare_and_delete(self, key: K, old: V) -> bool:
        """Remove ``key`` only if it is present with a value equal to ``old`` (never for a
        sentinel ``old``: the result is then ``False``)."""
        if old is MISSING or old is DELETE:
            return False
        deleted = False

        def delete_if_equal(_key: K, current: V | Missing) -> V | Delete:
            nonlocal deleted
            deleted = current is not MISSING and _same_value(current, old)
            if current is MISSING or deleted:
                return DELETE
            return current

        self.compute(key, delete_if_equal)
        return deleted

    def range(self, fn: Callable[[K, V], object]) -> None:
        """Call ``fn(key, value)`` for each entry, weakly consistently, until it returns
        ``False`` (only ``False``: ``None`` continues). No lock is held while ``fn`` runs,
        so ``fn`` may call any method of the map."""
        for key, value in self._iter_items():
            if fn(key, value) is False:
                return

    # -------------------------------------------- Java ConcurrentHashMap compounds

    def compute_if_absent(self, key: K, factory: Callable[[K], V | Delete]) -> V | None:
        """Return the value for ``key``, first storing ``factory(key)`` if absent.

        ``factory`` runs at most once per absent key even when threads race: racers wait
        and all get the stored object. If it returns ``DELETE`` nothing is stored and the
        result is ``None``.
        """

        def create_if_absent(k: K, old: V | Missing) -> V | Delete:
            return factory(k) if old is MISSING else old

        return self.compute(key, create_if_absent)

    def compute_if_present(self, key: K, fn: Callable[[K, V], V | Delete]) -> V | None:
        """If ``key`` is present, replace its value with ``fn(key, old)`` (``DELETE``
        removes it). Returns the new value, or ``None`` when absent afterwards."""

        def update_if_present(k: K, old: V | Missing) -> V | Delete:
            return DELETE if old is MISSING else fn(k, old)

        return self.compute(key, update_if_present)

    def merge(self, key: K, value: V, fn: Callable[[V, V], V | Delete]) -> V | None:
        """Store ``value`` if ``key`` is absent, else ``fn(old, value)`` (``DELETE``
        removes it). Returns the new value, or ``None`` when removed. The counter idiom
        ``m.merge(k, 1, operator.add)`` never loses an update."""
        if value is MISSING or value is DELETE:
            raise _sentinel_stored(value)

        def combine(_key: K, old: V | Missing) -> V | Delete:
            return value if old is MISSING else fn(old, value)

        return self.compute(key, combine)

    # ---------------------------------------------------------------------- bulk

    def delete_if(self, pred: Callable[[K, V], object]) -> int:
        """Remove the entries for which ``pred(key, value)`` is true; return how many.

        ``pred`` runs over a weakly consistent pass with no lock held; then each match is
        removed only if it still holds the value ``pred`` saw. If ``pred`` raises, nothing
        is removed.
        """
        matches = [(key, value) for key, value in self._iter_items() if pred(key, value)]
        return sum(1 for key, value in matches if self.compare_and_delete(key, value))

    # ------------------------------------------------ scoped entries, loading once

    def scoped(self, key: K, value: V) -> Scope[K, V]:
        """A context manager: ``with m.scoped(key, value) as v:`` stores the entry on entry
        and, on exit, removes it only if ``key`` still holds that very object (a newer
        value stored meanwhile, even an equal one, survives). The removal runs exactly
        once, also when the block ends by an exception, ``KeyboardInterrupt`` or a
        generator's ``close()``; if it fails while the block is already raising, the
        block's exception goes on and the failure is reported to ``sys.unraisablehook``.
        """
        from .scoped import Scope

        return Scope(self, key, value)

    def bind(
        self, key: K, value: V, *, owner: object = None, ttl: float | None = None
    ) -> Binding[K, V]:
        """Store ``key: value`` for as long as its scope lives; return the
        :class:`~safemap.protocol.scoped.Binding` (``release()`` ends it early).

        - ``owner``: a ``threading.Thread`` (removed when the thread ends: before its
          ``join()`` returns when the thread bound the entry to itself, or soon after it
          ends otherwise), an ``asyncio.Task`` (when it is done, cancelled included) or any
          object that supports weak references (when it is collected); ``TypeError`` for
          anything else.
        - ``ttl``: seconds (a positive number; ``ValueError``/``TypeError`` otherwise). From
          its deadline on, no read returns the entry: every read path (``m[k]``, ``get``,
          ``in``, ``len``, iteration and views, ``snapshot``, ``copy``, ``==``, ``repr``,
          ``range``, the compute family, which sees it as absent) treats it as absent.
          It is reclaimed by the next read that meets it and by one shared background
          thread. The map becomes an instance of a subclass of its class (``isinstance``
          holds, ``type(m) is`` its class no longer does).

        Whatever ends the binding first removes the entry, once, and only if the key still
        holds exactly the bound object; if someone else overwrote or deleted the key the
        binding is just dropped. Removal never runs under a map lock; where there is no
        caller to raise into (owner ends, deadline) a failure is reported to
        ``sys.unraisablehook``. See ``docs/scoped.md``.
        """
        from .scoped import bind

        return bind(self, key, value, owner, ttl)

    def get_or_compute(
        self, key: K, loader: Callable[[K], V], *, timeout: float | None = None
    ) -> V:
        """The value of ``key``; if absent, ``loader(key)`` is stored and returned.

        The loader runs with no lock held and once per key at a time: other callers for the
        same key wait for its result (up to ``timeout`` seconds each, then
        ``TimeoutError``; the load goes on for the others), while callers for other keys
        and writers are never held up by it. If the loader raises, every caller waiting
        for that load gets the exception and nothing is stored (the next call loads again).
        If someone stores the key while the loader runs, the stored value wins: it is what
        the loading caller and every waiter return. A loader that asks for its own key in
        the same thread gets ``RecursiveUpdateError``. A present key costs one ``get``.
        """
        value = self.get(key, _ABSENT)  # no value is ever _ABSENT: it is private
        if value is not _ABSENT:
            return value
        return _singleflight().get_or_compute(self, key, loader, timeout)  # type: ignore[no-any-return]

    async def aget_or_compute(
        self, key: K, loader: Callable[[K], Awaitable[V]], *, timeout: float | None = None
    ) -> V:
        """``get_or_compute`` for asyncio: ``await loader(key)`` loads a missing key.

        The load runs in a task of its own: a waiter that is cancelled or times out
        (``TimeoutError``), the first one included, leaves it running for the others.
        Waiters on other event loops and ``get_or_compute`` callers in other threads get
        its result too; a ``get_or_compute`` call for that key on the thread of the loop
        running the load raises ``RuntimeError`` instead of blocking that loop.
        """
        value = self.get(key, _ABSENT)
        if value is not _ABSENT:
            return value
        return await _singleflight().aget_or_compute(self, key, loader, timeout)  # type: ignore[no-any-return]


class IterationGauge:
    """A map's iterations, for its statistics: how many were started (``started``) and how
    many are in progress (``active``), so that a write can tell it lands while the map is
    being iterated (``MapStats.writes_during_iteration``).

    An iteration is in progress from :meth:`iterate` until its iterator is exhausted,
    closed or collected. Writers read ``active`` without synchronization, and see a value
    it had at some instant of their call.

    On free-threaded builds both counts change under one lock (iterations are rare next to
    point operations, and each copies the map anyway), taken by
    :func:`~safemap.protocol._locked.locked` and never by a ``with`` statement, so that a
    signal handler's exception cannot leave it held (on CPython 3.14 one can land right
    after ``__enter__`` took a lock and before the block protects it,
    python/cpython#148874). The lock is re-entrant: a collection that runs while this thread
    holds it may end another iteration of the same map (its iterator's ``finally``). With
    the GIL they change in one call that makes no call (``_begin``, ``_end``): the
    interpreter switches threads and runs signal handlers only at a call's return, a
    function's entry or a backward jump, so that is atomic, and no thread can be switched
    out while holding a lock that other iterations then queue on. An iteration that an
    exception ends before it was counted is not uncounted either."""

    __slots__ = ("_lock", "active", "started")

    def __init__(self) -> None:
        self._lock = _thread.RLock()
        self.active = 0
        self.started = 0

    def after_fork_in_child(self) -> None:
        self._lock = _thread.RLock()

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """``items`` as an iteration in progress, counted as started now."""
        walk = self._walk(items)
        next(walk)  # runs to the first yield: counted, and its finally armed
        return walk

    def _walk(self, items: Iterable[T]) -> Iterator[T]:
        counted = [False]
        try:
            if FREE_THREADED:
                locked(self._lock, self._begin, counted)
            else:
                self._begin(counted)
            yield None  # type: ignore[misc]
            yield from items
        finally:
            if counted[0]:
                if FREE_THREADED:
                    locked(self._lock, self._end)
                else:
                    self._end()

    def _begin(self, counted: list[bool]) -> None:
        self.started += 1
        self.active += 1
        counted[0] = True

    def _end(self) -> None:
        self.active -= 1


def commit_counts(view: Any) -> tuple[int, int, int]:
    """``(inserts, updates, deletes)`` of a committed :class:`TransactionView`, from its undo
    log: the removals first, then one entry per written key in the order of the view's
    writes, whose old value is the log's marker for a key the commit added. A key written
    with the very object it held is no update (no key is compared: no user code runs)."""
    from .transaction import _ABSENT as new_key

    undo = view._undo
    deletes = len(view._deleted)
    inserts = updates = 0
    for (_, old), new in zip(undo[deletes:], view._writes.values(), strict=True):
        if old is new_key:
            inserts += 1
        elif old is not new:
            updates += 1
    return inserts, updates, deletes


class _ItemsView(ItemsView[K, V]):
    """``items()`` of a concurrent map: weakly consistent, never raises on mutation."""

    __slots__ = ()
    _mapping: ConcurrentMapping[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return self._mapping._iter_items()

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        value, found = self._mapping.load(item[0])
        return found and _same_value(value, item[1])


class _ValuesView(ValuesView[V]):
    """``values()`` of a concurrent map: weakly consistent, never raises on mutation."""

    __slots__ = ()
    _mapping: ConcurrentMapping[Any, V]

    def __iter__(self) -> Iterator[V]:
        for _, value in self._mapping._iter_items():
            yield value
