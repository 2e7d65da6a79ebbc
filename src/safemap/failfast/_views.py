"""The views ``CheckedDict.keys()``, ``.values()`` and ``.items()`` return.

Small Python classes over the ``collections.abc`` views: ``len``, ``in``, set operations
(keys and items), ``reversed`` and ``mapping`` behave as on ``dict``'s views, and
iterating one is the C checked iterator (``_core._iter``), so it runs at C speed and an
iteration is tracked exactly like ``iter(d)``.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from types import MappingProxyType
from typing import Any, TypeVar

from . import _core

K = TypeVar("K")
V = TypeVar("V")

_KEYS, _VALUES, _ITEMS, _REVERSED = 0, 1, 2, 4


class CheckedKeysView(KeysView[K]):
    """``CheckedDict.keys()``: a set-like view whose iteration is checked."""

    __slots__ = ()
    _mapping: Mapping[K, Any]

    def __iter__(self) -> Iterator[K]:
        it: Iterator[K] = _core._iter(self._mapping, _KEYS)
        return it

    def __reversed__(self) -> Iterator[K]:
        it: Iterator[K] = _core._iter(self._mapping, _KEYS | _REVERSED)
        return it

    @property
    def mapping(self) -> MappingProxyType[K, Any]:
        """A read-only proxy of the underlying CheckedDict (as ``dict_keys.mapping``)."""
        return MappingProxyType(self._mapping)

    def __repr__(self) -> str:
        return f"checked_keys({list(self)!r})"


class CheckedValuesView(ValuesView[V]):
    """``CheckedDict.values()``: a view whose iteration is checked."""

    __slots__ = ()
    _mapping: Mapping[Any, V]

    def __iter__(self) -> Iterator[V]:
        it: Iterator[V] = _core._iter(self._mapping, _VALUES)
        return it

    def __reversed__(self) -> Iterator[V]:
        it: Iterator[V] = _core._iter(self._mapping, _VALUES | _REVERSED)
        return it

    def __contains__(self, value: object) -> bool:
        return any(v is value or v == value for v in self)

    @property
    def mapping(self) -> MappingProxyType[Any, V]:
        """A read-only proxy of the underlying CheckedDict (as ``dict_values.mapping``)."""
        return MappingProxyType(self._mapping)

    def __repr__(self) -> str:
        return f"checked_values({list(self)!r})"


class CheckedItemsView(ItemsView[K, V]):
    """``CheckedDict.items()``: a set-like view whose iteration is checked."""

    __slots__ = ()
    _mapping: Mapping[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        it: Iterator[tuple[K, V]] = _core._iter(self._mapping, _ITEMS)
        return it

    def __reversed__(self) -> Iterator[tuple[K, V]]:
        it: Iterator[tuple[K, V]] = _core._iter(self._mapping, _ITEMS | _REVERSED)
        return it

    @property
    def mapping(self) -> MappingProxyType[K, V]:
        """A read-only proxy of the underlying CheckedDict (as ``dict_items.mapping``)."""
        return MappingProxyType(self._mapping)

    def __repr__(self) -> str:
        return f"checked_items({list(self)!r})"
