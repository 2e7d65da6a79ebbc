"""Happens-before models of safemap's own synchronization: its maps and ``RWLock``.
Installed by :mod:`safemap.race._sync`.

**Maps** (every :class:`~safemap.ConcurrentMapping` subclass: ``ConcurrentMap``,
``SyncMap``, ``LockedMap``, ``RWLockMap``, ``ActorMap``, an ``AsyncActorMap``'s
``threadsafe`` view, and user subclasses, also ones defined after install). Each map has
one clock per key (created on the key's first operation while installed) plus one for
the whole map:

- A **key operation** (``m[k]``, ``m[k] = v``, ``del m[k]``, ``k in m``, ``get``, ``pop``,
  ``setdefault``, ``load``, ``store``, ``delete``, ``swap``, ``compare_and_*``,
  ``load_or_store``, ``load_and_delete``, the ``compute`` family, ``merge``) is a release
  and an acquire on its key: the caller's past is merged into the key's clock *before* the
  operation and the key's clock is joined into the caller *after* it (also when it
  raises, e.g. ``KeyError``: an absent key was observed). A compute-family callback joins
  the key's clock when it starts and merges into it when it ends, so it sees everything
  published through the key and what it does is published to later operations on the key.
  So publishing an object through a map orders the publisher's past before the future of
  every thread that reads it back. Overlapping operations on one key may be ordered both
  ways (the clock is not updated inside the map's lock): never too few edges.
- A **whole-map operation** (``len``, ``clear``, ``snapshot`` and what derives from it:
  ``copy``, ``==``, ``repr``, pickling; ``popitem``, ``delete_if``, ``transaction``,
  ``execute``, and an ``update`` that is not made of per-key stores) is a release and an
  acquire on *every key of the map, present or not* (at O(1) cost: see ``_MapClocks``).
  The callback of ``transaction``/``execute`` joins every key when it starts and
  releases into every key when it ends.
- **Iteration** (``iter(m)``, ``keys()``, ``values()``, ``items()``, ``range``) is a
  release and an acquire on each key as it is yielded.
- ``update`` made of per-key stores (the protocol's default) is those stores.
- An ``ActorMap`` runs callbacks (``compute`` functions, ``execute``/``transaction``
  functions) on its owner thread: each such request runs there as a new logical thread
  forked from the caller, whose end the caller joins when the call returns. So a callback
  is ordered after the caller's past and before its future, and the owner thread's own
  clock never links two callers. The map's internal locks, queue and owner thread create
  no edges.

Memory: a map keeps a clock for at most ``KEY_CLOCKS`` keys (keys are held strongly);
beyond that the older half is dropped, and a key's clock created after a drop starts from
the join of every key release so far (``any_key``): a dropped clock can only add edges
(hide a race), never lose one (invent a race). Maps that cannot be weakly referenced are
not modelled.

**RWLock** (created by user code after install; safemap's own, e.g. ``RWLockMap``'s, are
not modelled), as Go's ``sync.RWMutex``: a write release → every later acquire (read or
write); a read release → every later write acquire; readers are not ordered among
themselves.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from ..locks import rwlock as _rwlock
from ..protocol import ConcurrentMapping
from . import _runtime
from ._runtime import SyncVar
from ._sync_base import Patches, caller_is_internal

__all__ = ["install"]

_ORIG = "__safemap_race_orig__"

# name -> index (in *args after self) of the callback argument, or None.
_KEY_OPS: dict[str, int | None] = {
    "load": None,
    "store": None,
    "compute": 1,
    "__getitem__": None,
    "__setitem__": None,
    "__delitem__": None,
    "__contains__": None,
    "get": None,
    "pop": None,
    "setdefault": None,
    "load_or_store": None,
    "load_and_delete": None,
    "delete": None,
    "swap": None,
    "compare_and_swap": None,
    "compare_and_delete": None,
    "compute_if_absent": 1,
    "compute_if_present": 1,
    "merge": 2,
}
_WHOLE_OPS = ("__len__", "clear", "snapshot", "popitem", "delete_if", "transaction", "execute")
_CALLBACK_WHOLE_OPS = ("transaction", "execute")
_ITER_OPS = {"_iter_items": True, "__iter__": False}  # name -> yields (key, value) pairs


class _MapClocks:
    """The clocks of one map.

    ``keys[k]`` holds the releases of operations on key ``k``; ``any_key`` the releases of
    every key operation (the join of all ``keys``); ``whole`` the releases of whole-map
    operations. A whole-map operation is a release and an acquire on every key, present
    or not: rather than visiting every key clock, it releases into ``whole`` (which every
    key operation joins) and joins ``any_key``. So both kinds cost O(1) clock operations.
    ``keys`` grows by ``setdefault`` (atomic, so no lock) up to ``KEY_CLOCKS`` entries;
    ``_trim`` then drops the older half and sets ``trimmed``, after which a new key clock
    starts as a copy of ``any_key``, which every dropped clock is part of.
    """

    __slots__ = ("any_key", "keys", "trimmed", "whole")

    def __init__(self) -> None:
        self.keys: dict[Any, SyncVar] = {}
        self.any_key = SyncVar()
        self.whole = SyncVar()
        self.trimmed = False

    def key(self, key: Any) -> SyncVar | None:
        """The clock of ``key`` (``None`` if the key cannot be a dict key)."""
        try:
            var = self.keys.get(key)
            if var is None:
                fresh = SyncVar()
                if self.trimmed:
                    fresh.vc = self.any_key.vc  # replaced, never mutated: safe to share
                var = self.keys.setdefault(key, fresh)
                if var is fresh and len(self.keys) > KEY_CLOCKS:
                    self._trim()
        except Exception:  # unhashable, or a raising __eq__: the map reports it itself
            return None
        return var

    def _trim(self) -> None:
        # Set the flag first: a key whose clock is dropped from here on is re-created from
        # any_key. list() copies the keys atomically (other threads may insert meanwhile).
        self.trimmed = True
        with _trim_lock:
            for old in list(self.keys)[: KEY_CLOCKS // 2]:
                self.keys.pop(old, None)

    def release_key(self, var: SyncVar) -> None:
        _runtime.release_merge(var)
        _runtime.release_merge(self.any_key)

    def acquire_key(self, var: SyncVar) -> None:
        _runtime.acquire(var)
        _runtime.acquire(self.whole)

    def release_all(self) -> None:
        _runtime.release_merge(self.whole)

    def acquire_all(self) -> None:
        _runtime.acquire(self.any_key)
        _runtime.acquire(self.whole)


#: Key clocks kept per map (see ``_MapClocks``).
KEY_CLOCKS = 8192
_trim_lock = _thread.allocate_lock()

# id(map) -> its clocks; entries leave when the map is collected.
_maps: dict[int, _MapClocks] = {}
_maps_lock = _thread.allocate_lock()


def _clocks(mapping: Any) -> _MapClocks | None:
    clocks = _maps.get(id(mapping))
    if clocks is not None:
        return clocks
    with _maps_lock:
        clocks = _maps.get(id(mapping))
        if clocks is None:
            try:
                weakref.finalize(mapping, _maps.pop, id(mapping), None)
            except TypeError:
                return None
            clocks = _maps[id(mapping)] = _MapClocks()
    return clocks


def _key_callback(clocks: _MapClocks, var: SyncVar, fn: Callable[..., Any]) -> Callable[..., Any]:
    def callback(*args: Any) -> Any:
        clocks.acquire_key(var)
        try:
            return fn(*args)
        finally:
            clocks.release_key(var)

    return callback


def _key_op(orig: Any, callback_at: int | None) -> Callable[..., Any]:
    def op(self: Any, *args: Any, **kwargs: Any) -> Any:
        clocks = _clocks(self) if args else None
        var = clocks.key(args[0]) if clocks is not None else None
        if clocks is None or var is None:
            return orig(self, *args, **kwargs)
        if callback_at is not None and len(args) > callback_at and callable(args[callback_at]):
            fn = _key_callback(clocks, var, args[callback_at])
            args = (*args[:callback_at], fn, *args[callback_at + 1 :])
        clocks.release_key(var)
        try:
            return orig(self, *args, **kwargs)
        finally:
            clocks.acquire_key(var)

    return op


def _whole_callback(clocks: _MapClocks, fn: Callable[..., Any]) -> Callable[..., Any]:
    def callback(view: Any, *args: Any, **kwargs: Any) -> Any:
        clocks.acquire_all()
        try:
            return fn(view, *args, **kwargs)
        finally:
            clocks.release_all()

    return callback


def _whole_op(orig: Any, name: str) -> Callable[..., Any]:
    takes_callback = name in _CALLBACK_WHOLE_OPS

    def op(self: Any, *args: Any, **kwargs: Any) -> Any:
        clocks = _clocks(self)
        if clocks is None:
            return orig(self, *args, **kwargs)
        if takes_callback and args and callable(args[0]):
            args = (_whole_callback(clocks, args[0]), *args[1:])
        clocks.release_all()
        try:
            return orig(self, *args, **kwargs)
        finally:
            clocks.acquire_all()

    return op


def _update_op(orig: Any) -> Callable[..., Any]:
    def update(self: Any, other: Any = (), /, **kwargs: Any) -> Any:
        clocks = _clocks(self)
        if clocks is None:
            return orig(self, other, **kwargs)
        from ..actor._owned import OwnedMap, stage

        if not isinstance(self, OwnedMap):
            clocks.release_all()
            try:
                return orig(self, other, **kwargs)
            finally:
                clocks.acquire_all()
        staged = stage(other, kwargs)  # what the map's update does first, once
        touched = [var for var in map(clocks.key, staged) if var is not None]
        for var in touched:
            clocks.release_key(var)
        try:
            return orig(self, staged)
        finally:
            for var in touched:
                clocks.acquire_key(var)

    return update


class _SyncIterator:
    """Iterates ``inner``; each yielded key is a release and an acquire on that key."""

    __slots__ = ("_clocks", "_inner", "_pairs")

    def __init__(self, inner: Iterator[Any], clocks: _MapClocks, pairs: bool) -> None:
        self._inner = inner
        self._clocks = clocks
        self._pairs = pairs

    def __iter__(self) -> _SyncIterator:
        return self

    def __next__(self) -> Any:
        item = next(self._inner)
        key = item
        if self._pairs:
            try:
                key = item[0]
            except Exception:
                return item
        clocks = self._clocks
        var = clocks.key(key)
        if var is not None:
            clocks.release_key(var)
            clocks.acquire_key(var)
        return item


def _iter_op(orig: Any, pairs: bool) -> Callable[..., Any]:
    def op(self: Any, *args: Any, **kwargs: Any) -> Any:
        inner = orig(self, *args, **kwargs)
        clocks = _clocks(self)
        if clocks is None:
            return inner
        return _SyncIterator(iter(inner), clocks, pairs)

    return op


def _owner_call(orig: Any) -> Callable[..., Any]:
    """``OwnedMap._call``: a request carrying a callable runs on the owner as a logical
    thread forked from the caller and joined back when the call returns."""

    def _call(self: Any, op: Any, args: tuple[Any, ...], kind: int, **kwargs: Any) -> Any:
        if not any(callable(arg) for arg in args):
            return orig(self, op, args, kind, **kwargs)
        child = _runtime.fork(f"{type(self).__name__} callback", _runtime.capture_stack(0))
        end = SyncVar()

        def run(*op_args: Any) -> Any:
            with _runtime.activate(child):
                try:
                    return op(*op_args)
                finally:
                    _runtime.finish(child, end)

        try:
            return orig(self, run, args, kind, **kwargs)
        finally:
            _runtime.acquire(end)

    return _call


def _wrap(orig: Any, name: str) -> Callable[..., Any]:
    if name in _KEY_OPS:
        wrapper = _key_op(orig, _KEY_OPS[name])
    elif name in _ITER_OPS:
        wrapper = _iter_op(orig, _ITER_OPS[name])
    elif name == "update":
        wrapper = _update_op(orig)
    elif name == "_call":
        wrapper = _owner_call(orig)
    else:
        wrapper = _whole_op(orig, name)
    with contextlib.suppress(AttributeError, TypeError):
        functools.update_wrapper(wrapper, orig)
    setattr(wrapper, _ORIG, orig)
    return wrapper


_NAMES = (*_KEY_OPS, *_WHOLE_OPS, *_ITER_OPS, "update", "_call")


def _instrument(cls: type, patches: Patches) -> None:
    """Wrap the operations ``cls`` defines itself, and the ones it inherits from a base
    that is not a ConcurrentMapping (the C bases of the native maps)."""
    from ..actor._owned import OwnedMap

    own = vars(cls)
    for name in _NAMES:
        if name == "_call" and not issubclass(cls, OwnedMap):
            continue
        if name == "update" and (cls is ConcurrentMapping or name not in own):
            continue  # the default update is per-key stores, each modelled itself
        if name in own:
            value = own[name]
        else:
            definer = next((base for base in cls.__mro__[1:] if name in vars(base)), None)
            if definer is None or issubclass(definer, ConcurrentMapping):
                continue
            value = vars(definer)[name]
        if isinstance(value, (staticmethod, classmethod)) or hasattr(value, _ORIG):
            continue
        if getattr(value, "__isabstractmethod__", False):
            continue
        patches.set(cls, name, _wrap(value, name))


def _subclasses(root: type) -> list[type]:
    seen: list[type] = []
    stack = [root]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.append(cls)
        stack.extend(type.__subclasses__(cls))
    return seen


# ---------------------------------------------------------------------------- RWLock

_RW = _rwlock.RWLock


def _rw_clocks(lock: Any) -> tuple[SyncVar, SyncVar] | None:
    """The lock's (reader clock, writer clock), or None for a lock the model ignores."""
    return lock._race  # type: ignore[no-any-return]


def _rw_patches() -> dict[str, Callable[..., Any]]:
    orig_init = _RW.__init__
    orig_acquire_read = _RW.acquire_read
    orig_acquire_write = _RW.acquire_write
    orig_release_read = _RW.release_read
    orig_release_write = _RW.release_write

    def __init__(self: Any) -> None:
        orig_init(self)
        if not caller_is_internal(1):
            self._race = (SyncVar(), SyncVar())

    def acquire_read(self: Any, timeout: float | None = None) -> bool:
        got = orig_acquire_read(self, timeout)
        clocks = _rw_clocks(self)
        if got and clocks is not None:
            _runtime.acquire(clocks[0])
        return got

    def acquire_write(self: Any, timeout: float | None = None) -> bool:
        got = orig_acquire_write(self, timeout)
        clocks = _rw_clocks(self)
        if got and clocks is not None:
            _runtime.acquire(clocks[0])
            _runtime.acquire(clocks[1])
        return got

    def release_read(self: Any) -> None:
        clocks = _rw_clocks(self)
        if clocks is not None and self._read_holds_by_current_thread():
            _runtime.release_merge(clocks[1])
        orig_release_read(self)

    def release_write(self: Any) -> None:
        clocks = _rw_clocks(self)
        if clocks is not None and self.write_held_by_current_thread():
            _runtime.release_merge(clocks[0])
        orig_release_write(self)

    methods: dict[str, Callable[..., Any]] = {
        "__init__": __init__,
        "acquire_read": acquire_read,
        "acquire_write": acquire_write,
        "release_read": release_read,
        "release_write": release_write,
    }
    for name, method in methods.items():
        functools.update_wrapper(method, getattr(_RW, name))
    return methods


_RW_METHODS = _rw_patches()

_active: Patches | None = None


def _on_subclass(cls: Any, /, **kwargs: Any) -> None:
    super(ConcurrentMapping, cls).__init_subclass__(**kwargs)
    patches = _active
    if patches is not None:
        _instrument(cls, patches)


def install(patches: Patches) -> None:
    """Wrap the operations of every ConcurrentMapping class (and of the ones defined
    later, until uninstall), and patch ``RWLock`` (recorded in ``patches``)."""
    global _active
    _active = patches
    for cls in _subclasses(ConcurrentMapping):
        _instrument(cls, patches)
    patches.set(ConcurrentMapping, "__init_subclass__", classmethod(_on_subclass))
    for name, method in _RW_METHODS.items():
        patches.set(_RW, name, method)


def uninstall() -> None:
    """Stop instrumenting new subclasses (the patches themselves are undone by the
    caller)."""
    global _active
    _active = None
