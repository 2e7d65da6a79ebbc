"""``FrozenMap``: the immutable mapping that ``snapshot()`` returns."""

from __future__ import annotations

import reprlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

__all__ = ["FrozenMap"]

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    """An immutable mapping, built like ``dict`` (a mapping, an iterable of pairs, keywords).

    Guarantees: its contents never change after construction (it holds its own copy of the
    input); it is hashable exactly when all its values are hashable, and equal FrozenMaps
    hash equal; it compares equal to any ``Mapping`` with the same items; it pickles and
    copies as a FrozenMap. Values are shared, not copied (a shallow copy, like
    ``dict.copy()``).
    """

    __slots__ = ("__weakref__", "_data", "_hash")

    _data: dict[K, V]
    _hash: int | None

    def __init__(self, other: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, **kwargs: V) -> None:
        data: dict[Any, Any]
        if isinstance(other, FrozenMap) and not kwargs:
            data = other._data  # already immutable: share, do not copy
        else:
            data = dict(other.items()) if isinstance(other, Mapping) else dict(other)
            data.update(kwargs)
        self._data = data
        self._hash = None

    @classmethod
    def _adopt(cls, data: dict[K, V]) -> FrozenMap[K, V]:
        """Wrap ``data`` without copying it. The caller gives up every reference to ``data``."""
        self = cls.__new__(cls)
        self._data = data
        self._hash = None
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
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

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

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenMap[K, V]:
        import copy

        return type(self)._adopt(copy.deepcopy(self._data, memo))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._data,))
