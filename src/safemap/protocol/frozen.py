"""``FrozenMap``: the immutable mapping that ``snapshot()`` returns."""

from __future__ import annotations

import copyreg
import reprlib
from collections.abc import Iterable, Mapping

from .._typing import Any, Generic, NoReturn, TypeVar
from ._frozen import FrozenBase, _get, _set

__all__ = ["FrozenMap", "FrozenMapMutation"]

K = TypeVar("K")
V = TypeVar("V")

_MISSING_DEFAULT: Any = object()  # FrozenMapMutation.pop's "no default"


class FrozenMap(FrozenBase, Mapping[K, V]):
    """An immutable mapping, built like ``dict`` (a mapping, an iterable of pairs, keywords).

    Guarantees:

    - Its contents and its hash never change once it is built: it holds its own copy of the
      input, and every way to rebuild or rewire a built FrozenMap refuses — calling
      ``__init__`` or ``__setstate__`` again raises ``TypeError``, setting or deleting its
      internal attributes (``object.__setattr__`` included) raises ``AttributeError``,
      assigning ``__class__`` raises ``TypeError``. (Like any Python object, it is not
      protected against ``gc.get_referents`` or ``ctypes``.)
    - It is hashable exactly when all its values are hashable, and equal FrozenMaps hash
      equal; it compares equal to any ``Mapping`` with the same items.
    - It pickles (every protocol) and deep-copies as a FrozenMap of the same class, with a
      subclass's instance ``__dict__``; a FrozenMap reachable from its own values comes back
      containing itself. If such a FrozenMap is hashed while it is being rebuilt (it is a
      dict key or set element inside its own values, reached first), that raises
      ``TypeError`` instead of caching a wrong hash.
    - ``copy.copy`` and ``copy()`` return the FrozenMap itself. Values are shared, not
      copied (a shallow copy, like ``dict.copy()``).
    - It is persistent: ``set(k, v)``, ``delete(k)`` and ``update(...)`` return a new
      FrozenMap (of the same class) in O(log n) per changed key, sharing everything else
      with this one, which never changes; ``mutate()`` gives a short-lived builder for a
      batch of changes. A ``PersistentMap``'s ``snapshot()`` is O(1): it shares the map's
      current version.
    - Reads (``m[k]``, ``get``, ``in``, ``len``, iteration) run in C and take no lock,
      whichever representation it holds; its internal dict, trie and hash are each made at
      most once, so threads racing to make one all use the same object.

    Subclasses inherit every guarantee: a subclass may add methods and instance
    attributes, and takes its extra constructor arguments in its own ``__init__`` before
    calling ``super().__init__(mapping, **kwargs)`` once; ``|``, ``fromkeys``, pickling and
    ``copy.deepcopy`` return the subclass.
    """

    __slots__ = ()

    # Storage and reads are the C base's (``_frozen.FrozenBase``): it holds the contents
    # (``_data``: a dict, or None while a trie-backed map has not made one), the trie
    # version (``_trie``) and the cached hash (``_hash``), and answers ``m[k]``, ``get``,
    # ``in``, ``len`` and iteration from whichever backing is there. Each field is written
    # once (``_data``: unset -> None -> dict at most) through this module's private
    # ``_set_*`` functions, which never replace a set field, so threads racing to build
    # the same dict or trie all end up using the first one published. The names are
    # sealed by read-only properties below: nothing outside this module can set them.
    _data: dict[K, V]

    # Persistence: a FrozenMap made by ``set``/``delete``/``update``/``mutate`` or by a
    # ``PersistentMap``'s ``snapshot()`` holds a version of a persistent hash trie
    # (``safemap.persistent._hamt.Trie``) and no dict until something asks for one
    # (``_data`` then builds it once from the trie). A FrozenMap built from a dict builds
    # its trie on its first ``set``/``delete``/``update``/``mutate`` (once, O(n)). Both
    # representations hold the same contents, which never change; reads use the dict when
    # there is one.

    # ``__class__`` is a data descriptor here, so ``obj.__class__ = X`` and
    # ``object.__setattr__(obj, "__class__", X)`` both stop at it: swapping in a
    # layout-compatible class would let its methods rewrite the contents.
    __class__ = property(type, lambda self, _cls: _refuse(self, "__class__", TypeError))

    def __init__(self, other: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> None:
        _unbuilt(self, "__init__")
        data: dict[Any, Any]
        if isinstance(other, FrozenMap) and not kwargs and _get_data(other) is None:
            _set_trie(self, _get_trie(other))  # trie-backed and immutable: share it
            _set_data(self, None)
            return
        if isinstance(other, FrozenMap) and not kwargs:
            data = other._data  # already immutable: share, do not copy
        else:
            data = dict(other.items()) if isinstance(other, Mapping) else dict(other)
            data.update(kwargs)
        _set_data(self, data)

    @classmethod
    def _adopt(cls, data: dict[K, V]) -> FrozenMap[K, V]:
        """Wrap ``data`` without copying it (O(1)). The caller gives up every reference to
        ``data``."""
        self = cls.__new__(cls)
        _set_data(self, data)
        return self

    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None) -> FrozenMap[Any, Any]:
        """A FrozenMap mapping every key of ``iterable`` to ``value``."""
        return cls._adopt(dict.fromkeys(iterable, value))

    # ------------------------------------------------------------------ persistence

    @classmethod
    def _from_trie(cls, trie: Any) -> FrozenMap[K, V]:
        """Wrap a trie version (immutable) without copying it: O(1)."""
        self = cls.__new__(cls)
        _set_trie(self, trie)
        _set_data(self, None)  # built; the dict is made from the trie on demand
        return self

    def set(self, key: K, value: V) -> FrozenMap[K, V]:
        """A new FrozenMap with ``key`` set to ``value`` (of this class); this one is
        unchanged. O(log n): the new map shares all but the changed path with this one."""
        return type(self)._from_trie(_as_trie(self).set(key, value))

    def delete(self, key: K) -> FrozenMap[K, V]:
        """A new FrozenMap without ``key`` (``KeyError`` if absent); this one is unchanged.
        O(log n)."""
        return type(self)._from_trie(_as_trie(self).delete(key))

    def update(self, other: Any = (), /, **kwargs: V) -> FrozenMap[K, V]:
        """A new FrozenMap with the items of ``other`` (a mapping or pairs) and ``kwargs``
        set; this one is unchanged. O(log n) per item."""
        builder = self.mutate()
        builder.update(other, **kwargs)
        return builder.finish()

    def mutate(self) -> FrozenMapMutation[K, V]:
        """A short-lived builder starting from this map's contents: change it like a dict,
        then ``finish()`` it to get the new FrozenMap (as a context manager, leaving the
        ``with`` block closes it). This map is never changed."""
        return FrozenMapMutation(self)

    def keys(self) -> Any:
        return self._data.keys()  # (a trie-backed map builds its dict once, here)

    def values(self) -> Any:
        return self._data.values()

    def items(self) -> Any:
        return self._data.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._data == other._data
        if isinstance(other, dict):
            return self._data == other
        if isinstance(other, Mapping):
            snapshot = getattr(other, "snapshot", None)
            # A concurrent map: compare with one consistent view of it.
            view: Mapping[Any, Any] = snapshot() if callable(snapshot) else other
            return self._data == dict(view.items())
        return NotImplemented

    def __hash__(self) -> int:
        try:
            known: int = _get_hash(self)  # the slot stays unset until the first hash()
            return known
        except AttributeError:
            pass
        try:
            data = _get_data(self)
        except AttributeError:
            raise TypeError(
                f"unhashable: this {type(self).__name__} is not built yet (it was reached "
                "through its own values while being unpickled or deep-copied)"
            ) from None
        if data is None:
            data = self._data  # trie-backed: build the dict once
        cached = hash(frozenset(data.items()))
        _set_hash(self, cached)  # racing threads store the same int: benign
        return cached

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    def __or__(self, other: Mapping[K, V]) -> FrozenMap[K, V]:
        if not isinstance(other, Mapping):
            return NotImplemented
        data = self._data.copy()
        data.update(other.items())
        return type(self)._adopt(data)

    def __ror__(self, other: Mapping[K, V]) -> FrozenMap[K, V]:
        if not isinstance(other, Mapping):
            return NotImplemented
        data = dict(other.items())
        data.update(self._data)
        return type(self)._adopt(data)

    def copy(self) -> FrozenMap[K, V]:
        """Return ``self``: a FrozenMap never changes, so a copy is the same value."""
        return self

    def __copy__(self) -> FrozenMap[K, V]:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # An empty instance first, its contents as state: pickle and copy.deepcopy memoize
        # the instance before they rebuild the state, so a value that leads back to it finds
        # it (a FrozenMap that contains itself round-trips, as a tuple does).
        newobj = copyreg.__newobj__  # type: ignore[attr-defined]  # (not in typeshed)
        return (newobj, (type(self),), self.__getstate__())

    def __getstate__(self) -> tuple[dict[K, V], dict[str, Any] | None]:
        """``(contents, instance attributes or None)``: a new dict each time, never the
        internal one."""
        return (dict(self._data), getattr(self, "__dict__", None) or None)

    def __setstate__(self, state: tuple[dict[K, V], dict[str, Any] | None]) -> None:
        """Build an instance that pickle or ``copy`` just created empty; ``TypeError`` on a
        built FrozenMap (its contents never change)."""
        _unbuilt(self, "__setstate__")
        if not (isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict)):
            raise TypeError(f"{type(self).__name__} state must be (dict, dict or None)")
        contents, attributes = state
        if attributes:
            self.__dict__.update(attributes)  # only a subclass with a __dict__ has any
        _set_data(self, dict(contents))  # our own copy: the caller may keep ``contents``


def _refuse(self: object, name: str, error: type[Exception] = AttributeError) -> NoReturn:
    raise error(f"{type(self).__name__} is immutable: {name!r} cannot be changed")


_F_DATA, _F_TRIE, _F_HASH = 0, 1, 2  # the C base's fields (see _frozen.c)


def _get_data(self: FrozenMap[Any, Any]) -> dict[Any, Any] | None:
    """The raw contents: a dict, or None (trie-backed, no dict yet); ``AttributeError``
    while the instance is not built."""
    return _get(self, _F_DATA)  # type: ignore[no-any-return]


def _set_data(self: FrozenMap[Any, Any], data: dict[Any, Any] | None) -> Any:
    return _set(self, _F_DATA, data)


def _get_trie(self: FrozenMap[Any, Any]) -> Any:
    return _get(self, _F_TRIE)


def _set_trie(self: FrozenMap[Any, Any], trie: Any) -> Any:
    return _set(self, _F_TRIE, trie)


def _get_hash(self: FrozenMap[Any, Any]) -> int:
    return _get(self, _F_HASH)  # type: ignore[no-any-return]


def _set_hash(self: FrozenMap[Any, Any], value: int) -> Any:
    return _set(self, _F_HASH, value)


def _data_dict(self: FrozenMap[Any, Any]) -> dict[Any, Any]:
    """The contents as a dict: the raw field, or (trie-backed) a dict built once from the
    trie and kept (threads racing here each build an equal dict; the first one published
    is the one every thread returns)."""
    data: dict[Any, Any] | None = _get_data(self)
    if data is None:
        data = _set_data(self, _get_trie(self).to_dict())
    return data


def _sealed(name: str, getter: Any) -> property:
    return property(getter, lambda self, _v: _refuse(self, name), lambda self: _refuse(self, name))


# (declared as a dict for mypy)
setattr(FrozenMap, "_data", _sealed("_data", _data_dict))  # noqa: B010
FrozenMap._hash = _sealed("_hash", _get_hash)  # type: ignore[attr-defined]
FrozenMap._trie = _sealed("_trie", _get_trie)  # type: ignore[attr-defined]

_Trie: Any = None  # safemap.persistent._hamt.Trie, imported on first use (import cycle)


def _as_trie(self: FrozenMap[Any, Any]) -> Any:
    """The contents as a trie version: the ``_trie`` slot, or one built once (O(n)) from
    the dict and kept."""
    try:
        return _get_trie(self)
    except AttributeError:
        pass
    global _Trie
    if _Trie is None:
        from ..persistent._hamt import Trie

        _Trie = Trie
    # Threads racing here each build an equal version; all use the first one published.
    return _set_trie(self, _Trie.from_dict(self._data))


class FrozenMapMutation(Generic[K, V]):
    """The builder ``FrozenMap.mutate()`` returns: a private batch of changes to this
    map's trie, turned into a new FrozenMap by ``finish()``. The batch is built in place
    (as ``immutables`` does, with a mutation id): a node the batch made is updated in
    place, any other node is copied once, so a batch of n changes costs far less than n
    ``set`` calls. Short-lived and not shared between threads; using it after
    ``finish()`` raises ``RuntimeError``."""

    __slots__ = ("_batch", "_cls", "_open")

    def __init__(self, base: FrozenMap[K, V]) -> None:
        self._cls = type(base)
        self._batch = _as_trie(base).mutate()
        self._open = True

    def _check(self) -> Any:
        if not self._open:
            raise RuntimeError("FrozenMap mutation used after finish()")
        return self._batch

    def __setitem__(self, key: K, value: V) -> None:
        self._check().set(key, value)

    def set(self, key: K, value: V) -> None:
        self[key] = value

    def __delitem__(self, key: K) -> None:
        self._check().pop(key)

    def delete(self, key: K) -> None:
        del self[key]

    def pop(self, key: K, default: Any = _MISSING_DEFAULT) -> Any:
        if default is _MISSING_DEFAULT:
            return self._check().pop(key)
        return self._check().pop(key, default)

    def __getitem__(self, key: K) -> V:
        return self._check()[key]  # type: ignore[no-any-return]

    def get(self, key: K, default: Any = None) -> Any:
        return self._check().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._check()

    def __len__(self) -> int:
        return len(self._check())

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        batch = self._check()
        if isinstance(other, Mapping):
            pairs: Iterable[tuple[Any, Any]] = other.items()
        elif hasattr(other, "keys"):
            pairs = ((key, other[key]) for key in other.keys())  # noqa: SIM118  # dict's rule
        else:
            pairs = other
        for key, value in pairs:
            batch.set(key, value)
        for key, value in kwargs.items():
            batch.set(key, value)

    def finish(self) -> FrozenMap[K, V]:
        """The new FrozenMap (O(1)); the builder cannot be used afterwards."""
        trie = self._check().finish()
        self._open = False
        return self._cls._from_trie(trie)

    def __enter__(self) -> FrozenMapMutation[K, V]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._open = False


def _unbuilt(self: FrozenMap[Any, Any], method: str) -> None:
    """Raise ``TypeError`` unless ``self`` is still empty (fresh from ``__new__``)."""
    try:
        _get_data(self)
    except AttributeError:
        return
    raise TypeError(f"{type(self).__name__} is immutable: {method} cannot rebuild a built instance")
