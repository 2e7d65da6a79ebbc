"""``FrozenMap``: the immutable mapping that ``snapshot()`` returns."""

from __future__ import annotations

import copyreg
import reprlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NoReturn, TypeVar

__all__ = ["FrozenMap"]

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
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

    Subclasses inherit every guarantee: a subclass may add methods and instance
    attributes, and takes its extra constructor arguments in its own ``__init__`` before
    calling ``super().__init__(mapping, **kwargs)`` once; ``|``, ``fromkeys``, pickling and
    ``copy.deepcopy`` return the subclass.
    """

    __slots__ = ("__weakref__", "_data", "_hash")

    # Both slots are sealed after the class is built (see ``_seal`` below): ``_data`` reads
    # as the contents dict (the package's maps read it to avoid a copy) and ``_hash`` as the
    # cached hash, but neither can be set or deleted from outside. This module writes them
    # through the slot descriptors: ``_data`` once, when the instance is built (an unset
    # ``_data`` means "not built yet"); ``_hash`` on the first ``hash()``.
    _data: dict[K, V]

    # ``__class__`` is a data descriptor here, so ``obj.__class__ = X`` and
    # ``object.__setattr__(obj, "__class__", X)`` both stop at it: swapping in a
    # layout-compatible class would let its methods rewrite the contents.
    __class__ = property(type, lambda self, _cls: _refuse(self, "__class__", TypeError))

    def __init__(self, other: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> None:
        _unbuilt(self, "__init__")
        data: dict[Any, Any]
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

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def get(self, key: K, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> Any:
        return self._data.keys()

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


def _seal(name: str) -> Any:
    """Replace slot ``name``'s descriptor on FrozenMap by a read-only one; return the slot's
    own descriptor (its ``__set__`` is this module's private write access)."""
    slot = FrozenMap.__dict__[name]
    sealed = property(
        slot.__get__,
        lambda self, _value: _refuse(self, name),
        lambda self: _refuse(self, name),
    )
    setattr(FrozenMap, name, sealed)
    return slot


_DATA = _seal("_data")
_HASH = _seal("_hash")
_get_data, _set_data = _DATA.__get__, _DATA.__set__  # set once, by the constructors
_get_hash, _set_hash = _HASH.__get__, _HASH.__set__  # unset until the first hash()


def _unbuilt(self: FrozenMap[Any, Any], method: str) -> None:
    """Raise ``TypeError`` unless ``self`` is still empty (fresh from ``__new__``)."""
    try:
        _get_data(self)
    except AttributeError:
        return
    raise TypeError(f"{type(self).__name__} is immutable: {method} cannot rebuild a built instance")
