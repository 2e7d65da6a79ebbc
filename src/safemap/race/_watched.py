"""Watched maps: dict subclasses that record every operation as accesses in the shadow.

``watched_class(base)`` makes (once per flavor, cached) a subclass of ``base`` (``dict``,
``defaultdict``, ``OrderedDict``, ``Counter`` or any other dict subclass) that overrides
every operation; each override records its accesses (the spec's table, see the module
docstring of :mod:`safemap.race`) *before* running the plain operation of ``base``, so the
recorded access and the behaviour are the ones of the original flavor. The subclass keeps
the flavor's name, so ``repr`` reads ``defaultdict(<class 'list'>, {...})`` as before, and
``isinstance(x, dict)`` / ``isinstance(x, OrderedDict)`` keep working.

Invariants:
- **As safe as the flavor, whatever the detector's state.** Every override runs the user's
  operation as the *one* call of ``base`` that the unwatched map would make (``dict.pop``,
  ``OrderedDict.popitem``, ``dict.setdefault``, ``dict.update`` ...), never as two calls
  (a look-up then a store), so an operation that is atomic on the flavor stays atomic on
  the watched map: concurrent ``popitem()`` calls never fail on a non-empty map, a
  ``setdefault`` never overwrites a concurrent store. What is recorded may depend on a
  separate look-up (was the key there?), what is done never does. Accesses whose key is
  known are recorded before the call; those that depend on its result (which key
  ``popitem`` removed, whether ``pop`` found its key) right after it, on the same
  thread and epoch, which orders them exactly the same.
- ``OrderedDict`` has no C-level insert-if-absent that skips the subclass's own
  ``__contains__``/``__setitem__``, so a watched ``OrderedDict`` serialises the writes that
  can insert a key (``d[k] = v``, ``setdefault``, ``update``) on a per-map raw lock, which
  the detector never models (no happens-before edge). Its ``pop``/``popitem`` are the C
  ones, which do not call back into the subclass.
- Every override calls ``base``'s C-level primitives (never ``self[...]``), so one user
  operation is recorded once, with the right access kind.
- While the detector is disabled, an override costs one module-attribute check (plus the
  lock above for a watched ``OrderedDict``'s inserting writes).
- ``copy()``, ``copy.copy``, ``copy.deepcopy`` and pickling produce a plain, unwatched map
  of the base flavor (``__reduce_ex__`` is that of the plain copy, so unpickling never
  needs ``safemap``).
"""

from __future__ import annotations

import _thread
import copy as _copy
import copyreg
from collections import Counter, OrderedDict, defaultdict
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from types import MappingProxyType
from typing import Any

from . import _shadow as _sh
from ._shadow import OBS, MapShadow

__all__ = ["is_watched", "watch", "watched_class"]

_classes: dict[type, type] = {}
_NOKEY = object()
_NEWOBJ = copyreg.__dict__["__newobj__"]


def is_watched(obj: object) -> bool:
    """Whether ``obj`` is a watched map."""
    return type(obj) in _WATCHED


_WATCHED: set[type] = set()


def _observe_all(m: Any, op: str) -> None:
    """A shape observation of watched map ``m`` and a read of every key (a whole-map read
    such as ``==``, ``repr``, ``copy``)."""
    ms: MapShadow = m._race
    ref: list[Any] = [-1, None]
    _sh.observe(m, ms, op, OBS, ref)
    _sh.read_all(m, ms, op, list(dict.keys(m)), ref)


class _View:
    # Mixed into the collections.abc views, which hold the map in their ``_mapping`` slot.
    __slots__ = ()
    _mapping: Any

    @property
    def mapping(self) -> MappingProxyType[Any, Any]:
        return MappingProxyType(self._mapping)

    def __repr__(self) -> str:
        items = list(iter(self))  # type: ignore[call-overload]
        return f"{type(self).__name__.lstrip('_')}({items!r})"


class _KeysView(_View, KeysView[Any]):
    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return self._mapping._race_iter("keys", 0, False)  # type: ignore[no-any-return]

    def __reversed__(self) -> Iterator[Any]:
        return self._mapping._race_iter("keys", 0, True)  # type: ignore[no-any-return]


class _ValuesView(_View, ValuesView[Any]):
    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return self._mapping._race_iter("values", 2, False)  # type: ignore[no-any-return]

    def __reversed__(self) -> Iterator[Any]:
        return self._mapping._race_iter("values", 2, True)  # type: ignore[no-any-return]

    def __contains__(self, value: object) -> bool:
        # Recorded as a whole-map read, then a search of one atomic read of the values
        # (the abc version looks each key up again: a concurrent del between the two
        # raised KeyError; ``list`` takes a dict view in one step, see _contents).
        m = self._mapping
        if _sh.on:
            _observe_all(m, "in values()")
        return value in list(dict.values(m))


class _ItemsView(_View, ItemsView[Any, Any]):
    __slots__ = ()

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping._race_iter("items", 1, False)  # type: ignore[no-any-return]

    def __reversed__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping._race_iter("items", 1, True)  # type: ignore[no-any-return]

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        key, value = item
        m = self._mapping
        if _sh.on:
            _sh.read(m, m._race, key, "in items()")
        v = dict.get(m, key, _NOKEY)  # one look-up: a concurrent del cannot fall between
        if v is _NOKEY:
            return False
        return v is value or bool(v == value)


def _contents(m: Any) -> dict[Any, Any]:
    """A plain dict of ``m``'s items, read with the C-level view (``dict.copy`` of a dict
    subclass that overrides ``__iter__`` would go through the recorded ``keys()``). One
    atomic read, as ``dict.copy`` is: ``list`` takes the items of a dict view in one step
    (under the dict's critical section on free-threaded builds), iterating would not."""
    return dict(list(dict.items(m)))


def _plain_factory(base: Any) -> Any:
    """A function making a plain (unwatched) copy of a watched map of flavor ``base``."""
    if base is dict:
        return _contents
    if issubclass(base, defaultdict):
        return lambda m: base(m.default_factory, _contents(m))
    if issubclass(base, OrderedDict):
        items = OrderedDict.items
        return lambda m: base(list(items(m)))
    return lambda m: base(_contents(m))


def _plain_reduce(plain: Any, protocol: Any) -> Any:
    """``plain.__reduce_ex__(protocol)``, without ``copyreg.__newobj__`` (the pickler
    insists that its class argument is the pickled object's own class, the watched one):
    ``cls.__new__(cls, *args)`` becomes ``cls(*args)``, the same for dict flavors, whose
    contents come from the ``dictitems`` part."""
    # Protocol 2's reduction also serves protocols 0 and 1 once rewritten (for those, a
    # plain dict's own reduction refuses: the pickler handles exact dicts itself).
    reduced = plain.__reduce_ex__(max(protocol, 2))
    if isinstance(reduced, tuple) and reduced and reduced[0] is _NEWOBJ:
        cls, *args = reduced[1]
        return (cls, tuple(args), *reduced[2:])
    return reduced


def watched_class(base: type) -> type:
    """The watched subclass of dict flavor ``base`` (created once, then cached)."""
    cls = _classes.get(base)
    if cls is None:
        cls = _make(base)
        _classes[base] = cls
        _WATCHED.add(cls)
    return cls


def _make(base: Any) -> type:
    if not issubclass(base, dict):
        raise TypeError(f"can only watch dict flavors, not {base.__name__}")
    is_od = issubclass(base, OrderedDict)
    is_counter = issubclass(base, Counter)
    _get = base.__getitem__
    _set = base.__setitem__
    _del = base.__delitem__
    _contains = dict.__contains__
    _dget = dict.__getitem__
    _iter = base.__iter__
    _reversed = base.__reversed__
    _items = base.items
    _len = base.__len__
    _getm = base.get
    _dget_or = dict.get
    _clear = base.clear
    _init = base.__init__
    _eq = base.__eq__
    _ne = base.__ne__
    _repr = base.__repr__
    _update = base.update
    _plain = _plain_factory(base)
    read, write, atomic, observe, change = _sh.read, _sh.write, _sh.atomic, _sh.observe, _sh.change
    sh = _sh

    _pop = base.pop
    _setdefault = base.setdefault
    _popitem_base = base.popitem

    slots = ("_race", "_race_mx") if is_od else ("_race",)
    ns: dict[str, Any] = {"__slots__": slots, "__module__": base.__module__}

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if not hasattr(self, "_race"):
            _attach(self, f"{base.__name__}@{id(self):#x}")
        _init(self, *args, **kwargs)

    def __getitem__(self: Any, key: Any) -> Any:
        if sh.on:
            read(self, self._race, key, "d[k]")
        return _get(self, key)

    def __setitem__(self: Any, key: Any, value: Any) -> None:
        if sh.on:
            ms = self._race
            write(self, ms, key, "d[k] = v")
            if not _contains(self, key):
                change(self, ms, "d[k] = v")
        if is_od:
            with self._race_mx:
                _set(self, key, value)
        else:
            _set(self, key, value)

    def __delitem__(self: Any, key: Any) -> None:
        if sh.on:
            ms = self._race
            write(self, ms, key, "del d[k]")
            if _contains(self, key):
                change(self, ms, "del d[k]")
        _del(self, key)

    def __contains__(self: Any, key: Any) -> bool:
        if sh.on:
            read(self, self._race, key, "in")
        return _contains(self, key)

    def get(self: Any, key: Any, default: Any = None) -> Any:
        if sh.on:
            read(self, self._race, key, "get")
        return _getm(self, key, default)

    def __len__(self: Any) -> int:
        if sh.on:
            observe(self, self._race, "len")
        return _len(self)  # type: ignore[no-any-return]

    if is_od:

        def _setdefault_od(self: Any, key: Any, default: Any) -> Any:
            # OrderedDict.setdefault calls the subclass's __contains__ and __setitem__:
            # made atomic against every other inserting write by the map's lock.
            with self._race_mx:
                value = _dget_or(self, key, _NOKEY)
                if value is _NOKEY:
                    _set(self, key, default)
                    return default
                return value

        _setdefault = _setdefault_od

    def setdefault(self: Any, key: Any, default: Any = None) -> Any:
        if sh.on:
            ms = self._race
            atomic(self, ms, key, "setdefault")
            if not _contains(self, key):
                change(self, ms, "setdefault")
        return _setdefault(self, key, default)

    def pop(self: Any, key: Any, *default: Any) -> Any:
        if not sh.on:
            return _pop(self, key, *default)
        ms = self._race
        atomic(self, ms, key, "pop")
        value = _pop(self, key, _NOKEY)
        if value is _NOKEY:  # the key was absent: no shape change
            if default:
                return default[0]
            raise KeyError(key)
        change(self, ms, "pop")
        return value

    def _popitem(self: Any, args: tuple[Any, ...]) -> Any:
        # One call of the flavor's own popitem (atomic): the key it removed is known only
        # afterwards, so the accesses are recorded right after it.
        try:
            pair = _popitem_base(self, *args)
        except KeyError:
            if sh.on:
                observe(self, self._race, "popitem")  # popitem on an empty map observes it
            raise
        if sh.on:
            ms = self._race
            atomic(self, ms, pair[0], "popitem")
            change(self, ms, "popitem")
        return pair

    if is_od:

        def popitem(self: Any, last: bool = True) -> Any:
            return _popitem(self, (last,))

        ns["popitem"] = popitem

        def move_to_end(self: Any, key: Any, last: bool = True) -> None:
            # Reorders without changing the key set: a write of the key (its position)
            # and a shape change (iteration order is part of what an iteration observes).
            if sh.on:
                ms = self._race
                write(self, ms, key, "move_to_end")
                if _contains(self, key):
                    change(self, ms, "move_to_end")
            base.move_to_end(self, key, last)

        ns["move_to_end"] = move_to_end
    else:

        def dict_popitem(self: Any) -> Any:
            return _popitem(self, ())

        dict_popitem.__name__ = dict_popitem.__qualname__ = "popitem"
        ns["popitem"] = dict_popitem

    def _race_iter(self: Any, op: str, item: int, rev: bool) -> Iterator[Any]:
        if item == 0:
            it = _reversed(self) if rev else _iter(self)
        else:
            view = _items(self)
            it = reversed(view) if rev else iter(view)
        if not sh.on:
            return it if item != 2 else (v for _, v in it)
        return _sh.iterate(self, self._race, op, it, item)

    def __iter__(self: Any) -> Iterator[Any]:
        if not sh.on:
            return _iter(self)  # type: ignore[no-any-return]
        return _sh.iterate(self, self._race, "iter", _iter(self), 0)

    def __reversed__(self: Any) -> Iterator[Any]:
        return _race_iter(self, "reversed", 0, True)

    def keys(self: Any) -> _KeysView:
        return _KeysView(self)

    def values(self: Any) -> _ValuesView:
        return _ValuesView(self)

    def items(self: Any) -> _ItemsView:
        return _ItemsView(self)

    def update(self: Any, other: Any = (), /, **kwargs: Any) -> None:
        if not sh.on:
            _locked_update(self, other, kwargs)
            return
        if type(other) is dict:
            pairs = list(dict.items(other))  # one atomic read, as dict.update makes
        elif isinstance(other, Mapping) or hasattr(other, "keys"):
            pairs = [(k, other[k]) for k in other.keys()]  # noqa: SIM118 - keys() protocol
        else:
            pairs = []
            for pair in other:
                k, v = pair
                pairs.append((k, v))
        pairs.extend(kwargs.items())
        ms = self._race
        ref: list[Any] = [-1, None]
        for k, _ in pairs:
            write(self, ms, k, "update", ref)
            if not _contains(self, k):
                change(self, ms, "update", ref)
        # Then one call of the flavor's update, as the unwatched map makes.
        _locked_update(self, pairs, {})

    def _locked_update(self: Any, other: Any, kwargs: dict[str, Any]) -> None:
        if is_od:
            with self._race_mx:
                _update(self, other, **kwargs)
        else:
            _update(self, other, **kwargs)

    def clear(self: Any) -> None:
        if sh.on:
            _sh.clear_all(self, self._race, "clear")
        _clear(self)

    def __eq__(self: Any, other: object) -> Any:
        if sh.on:
            _observe_all(self, "==")
            if type(other) in _WATCHED:
                _observe_all(other, "==")
        return _eq(self, other)

    def __ne__(self: Any, other: object) -> Any:
        if sh.on:
            _observe_all(self, "!=")
            if type(other) in _WATCHED:
                _observe_all(other, "!=")
        return _ne(self, other)

    def __repr__(self: Any) -> str:
        if sh.on:
            _observe_all(self, "repr")
        return _repr(self)  # type: ignore[no-any-return]

    def copy(self: Any) -> Any:
        """A plain (unwatched) copy of the same flavor."""
        if sh.on:
            _observe_all(self, "copy")
        return _plain(self)

    def __copy__(self: Any) -> Any:
        if sh.on:
            _observe_all(self, "copy.copy")
        return _plain(self)

    def __deepcopy__(self: Any, memo: dict[int, Any]) -> Any:
        if sh.on:
            _observe_all(self, "copy.deepcopy")
        return _copy.deepcopy(_plain(self), memo)

    def __reduce_ex__(self: Any, protocol: Any) -> Any:
        if sh.on:
            _observe_all(self, "pickle")
        return _plain_reduce(_plain(self), protocol)

    def __or__(self: Any, other: Any) -> Any:
        if not isinstance(other, dict):
            return NotImplemented
        if sh.on:
            _observe_all(self, "|")
        new = _plain(self)
        new.update(other)
        return new

    def __ror__(self: Any, other: Any) -> Any:
        if not isinstance(other, dict):
            return NotImplemented
        if sh.on:
            _observe_all(self, "|")
        new = dict(other) if type(other) in _WATCHED else _copy.copy(other)
        new.update(_plain(self))
        return new

    def __ior__(self: Any, other: Any) -> Any:
        update(self, other)
        return self

    if issubclass(base, defaultdict):

        def __missing__(self: Any, key: Any) -> Any:
            # dict.__getitem__ (already recorded as a read) calls this on a miss: the
            # default_factory result is stored, a write of the key and a shape change.
            factory = self.default_factory
            if factory is None:
                raise KeyError(key)
            value = factory()
            if sh.on:
                ms = self._race
                write(self, ms, key, "d[k] (default_factory)")
                if not _contains(self, key):
                    change(self, ms, "d[k] (default_factory)")
            # Insert-if-absent, as CPython 3.13+'s own __missing__ does: a value another
            # thread stored while the factory ran is kept and returned, not overwritten.
            return _setdefault(self, key, value)

        ns["__missing__"] = __missing__

    if is_counter:

        def counter_update(self: Any, iterable: Any = None, /, **kwds: Any) -> None:
            # Counter.update adds counts through the (recorded) get and __setitem__,
            # except into an empty counter, where it is one dict.update: the keys of a
            # mapping are recorded as writes first, then Counter's own update runs.
            if sh.on and isinstance(iterable, Mapping):
                ms = self._race
                ref: list[Any] = [-1, None]
                for elem in list(iterable):
                    write(self, ms, elem, "update", ref)
                    if not _contains(self, elem):
                        change(self, ms, "update", ref)
            _update(self, iterable, **kwds)

        ns["update"] = counter_update
    else:
        ns["update"] = update

    # Counter's |, |= are multiset unions, written in Python over the recorded
    # primitives: keep them (a dict merge would change their meaning).
    merges = () if is_counter else (("__or__", __or__), ("__ror__", __ror__), ("__ior__", __ior__))
    for name, fn in (
        ("__init__", __init__),
        ("__getitem__", __getitem__),
        ("__setitem__", __setitem__),
        ("__delitem__", __delitem__),
        ("__contains__", __contains__),
        ("get", get),
        ("__len__", __len__),
        ("setdefault", setdefault),
        ("pop", pop),
        ("_race_iter", _race_iter),
        ("__iter__", __iter__),
        ("__reversed__", __reversed__),
        ("keys", keys),
        ("values", values),
        ("items", items),
        ("clear", clear),
        ("__eq__", __eq__),
        ("__ne__", __ne__),
        ("__repr__", __repr__),
        ("copy", copy),
        ("__copy__", __copy__),
        ("__deepcopy__", __deepcopy__),
        ("__reduce_ex__", __reduce_ex__),
        *merges,
    ):
        ns[name] = fn
    ns["__hash__"] = None
    ns["__doc__"] = (
        f"A watched {base.__name__} (see safemap.race.watch): every operation is "
        "recorded for the race detector."
    )
    cls = type(base.__name__, (base,), ns)
    cls.__qualname__ = base.__qualname__
    return cls


def _attach(obj: Any, name: str) -> None:
    """Give a new watched map its shadow (and, for an ``OrderedDict`` flavor, the raw lock
    of its inserting writes: see the module docstring)."""
    obj._race = MapShadow(name)
    if isinstance(obj, OrderedDict):
        obj._race_mx = _thread.RLock()  # type: ignore[attr-defined]


def watch(mapping: Any = None, name: str | None = None) -> Any:
    """The watched map for ``mapping`` (see :func:`safemap.race.watch`)."""
    if mapping is not None and type(mapping) in _WATCHED:
        if name is not None:
            mapping._race.name = name
        return mapping
    if mapping is None:
        base: Any = dict
        source: Iterable[Any] = ()
    elif isinstance(mapping, dict):
        base = type(mapping)
        source = mapping
    elif isinstance(mapping, Mapping):
        base = dict
        source = dict(mapping)
    else:
        raise TypeError(f"race.watch() needs a dict or mapping, not {type(mapping).__name__}")
    cls: Any = watched_class(base)
    obj = cls.__new__(cls)
    _attach(obj, name if name is not None else f"{base.__name__}@{id(obj):#x}")
    # Fill without recording: taking over the contents is not an access of the new map.
    base.__init__(obj)
    if isinstance(mapping, defaultdict):
        obj.default_factory = mapping.default_factory
    if isinstance(mapping, OrderedDict):
        setitem = base.__setitem__
        for k, v in OrderedDict.items(mapping):
            setitem(obj, k, v)
    elif source:
        dict.update(obj, dict.items(source) if isinstance(source, dict) else source)
    attrs = getattr(mapping, "__dict__", None)
    if attrs:
        obj.__dict__.update(attrs)
    return obj
