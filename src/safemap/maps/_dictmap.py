"""``DictBackedMap``: the protocol over one plain ``dict`` and a set of guards.

Invariant: ``_data`` is read only inside ``_read`` and written only inside ``_write`` or
``_exclusive`` (see ``_guards``), so each primitive below is atomic exactly because its
guard excludes every conflicting operation for its whole duration, including while a key's
``__hash__``/``__eq__`` or a compute callback runs Python code or blocks. Iteration copies
under the read guard and yields with no lock held, so the consumer may do anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, TypeVar

from ..protocol import DELETE, MISSING, ConcurrentMapping, FrozenMap, TransactionView
from ..protocol.sentinels import Delete, Missing
from ._guards import Guards

__all__ = ["DictBackedMap"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_ABSENT: Any = object()


class DictBackedMap(ConcurrentMapping[K, V]):
    """Shared implementation of the pure-Python maps; subclasses choose the lock."""

    __slots__ = ("__weakref__", "_data", "_exclusive", "_read", "_write")

    def __init__(self, other: Any = (), /, **kwargs: V) -> None:
        self._data: dict[K, V] = {}
        self._read, self._write, self._exclusive = self._make_guards()
        self.update(other, **kwargs)

    @staticmethod
    def _make_guards() -> Guards:
        raise NotImplementedError

    # ---------------------------------------------------------------- primitives

    def load(self, key: K) -> tuple[V | None, bool]:
        with self._read:
            value = self._data.get(key, _ABSENT)
        return (None, False) if value is _ABSENT else (value, True)

    def store(self, key: K, value: V) -> None:
        with self._write:
            self._data[key] = value

    def compute(self, key: K, fn: Callable[[K, V | Missing], V | Delete]) -> V | None:
        with self._write:
            data = self._data
            old = data.get(key, _ABSENT)
            new = fn(key, MISSING if old is _ABSENT else old)
            if new is DELETE:
                if old is not _ABSENT:
                    del data[key]
                return None
            data[key] = new
            return new

    def load_and_delete(self, key: K) -> tuple[V | None, bool]:
        with self._write:
            value = self._data.pop(key, _ABSENT)
        return (None, False) if value is _ABSENT else (value, True)

    def __len__(self) -> int:
        with self._read:
            return len(self._data)

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        with self._read:
            items = list(self._data.items())
        yield from items

    def __iter__(self) -> Iterator[K]:
        with self._read:
            keys = list(self._data)
        return iter(keys)

    def clear(self) -> None:
        with self._write:
            old, self._data = self._data, {}
        del old  # values are released outside the lock: their __del__ may use the map

    def snapshot(self) -> FrozenMap[K, V]:
        with self._read:
            data = self._data.copy()
        return FrozenMap._adopt(data)

    def transaction(self, fn: Callable[[MutableMapping[K, V]], T]) -> T:
        with self._exclusive:
            view = TransactionView(self._data)
            try:
                result = fn(view)
            except BaseException:
                view._close()
                raise
            view._commit(self._data)
            return result

    # ---------------------------------- hot dict methods, shortened (same guarantees)

    def __getitem__(self, key: K) -> V:
        with self._read:
            return self._data[key]

    def __setitem__(self, key: K, value: V) -> None:
        with self._write:
            self._data[key] = value

    def __delitem__(self, key: K) -> None:
        with self._write:
            value = self._data.pop(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        with self._read:
            return key in self._data

    def get(self, key: K, default: Any = None, /) -> Any:
        with self._read:
            return self._data.get(key, default)
