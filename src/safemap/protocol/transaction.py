"""The view handed to ``transaction(fn)``: a private overlay over the map's contents.

Invariants, while the owning map holds exclusive access:
- ``_base`` is not mutated by anyone (the map is locked), so reading it is safe;
- ``_writes`` and ``_deleted`` are disjoint; a key in ``_deleted`` is present in ``_base``;
- the view's contents are ``(_base - _deleted) | _writes``.
Nothing reaches the map until ``_commit`` applies the overlay, so a ``fn`` that raises leaves
the map untouched, and a commit makes every change visible at once (under the same lock).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Generic, TypeVar

__all__ = ["TransactionView"]

K = TypeVar("K")
V = TypeVar("V")

_ABSENT: Any = object()


class TransactionView(MutableMapping[K, V], Generic[K, V]):
    """A ``MutableMapping`` valid only inside the ``transaction`` callback it was given to.

    Reads see the map as it was when the transaction started plus the view's own changes;
    changes are applied to the map all at once when the callback returns, and dropped if
    it raises. Any use after the callback returned raises ``RuntimeError``.
    """

    __slots__ = ("_base", "_deleted", "_open", "_writes")

    def __init__(self, base: Mapping[K, V]) -> None:
        self._base = base
        self._writes: dict[K, V] = {}
        self._deleted: set[K] = set()
        self._open = True

    def _check(self) -> None:
        if not self._open:
            raise RuntimeError("transaction view used outside its transaction")

    def __getitem__(self, key: K) -> V:
        self._check()
        value = self._writes.get(key, _ABSENT)
        if value is not _ABSENT:
            return value  # type: ignore[no-any-return]
        if key in self._deleted:
            raise KeyError(key)
        return self._base[key]

    def __contains__(self, key: object) -> bool:
        self._check()
        if key in self._writes:
            return True
        return key not in self._deleted and key in self._base

    def __setitem__(self, key: K, value: V) -> None:
        self._check()
        self._writes[key] = value
        self._deleted.discard(key)

    def __delitem__(self, key: K) -> None:
        self._check()
        in_base = key in self._base and key not in self._deleted
        if self._writes.pop(key, _ABSENT) is _ABSENT and not in_base:
            raise KeyError(key)
        if in_base:
            self._deleted.add(key)

    def __iter__(self) -> Iterator[K]:
        self._check()
        for key in self._base:
            if key not in self._deleted and key not in self._writes:
                yield key
        yield from self._writes

    def __len__(self) -> int:
        self._check()
        added = sum(1 for key in self._writes if key not in self._base)
        return len(self._base) - len(self._deleted) + added

    def clear(self) -> None:
        self._check()
        self._writes.clear()
        self._deleted = set(self._base)

    def __repr__(self) -> str:
        if not self._open:
            return f"<{type(self).__name__} (closed)>"
        return f"{type(self).__name__}({dict(self.items())!r})"

    def _commit(self, target: MutableMapping[K, V]) -> None:
        """Apply the overlay to ``target`` (the map's storage) and close the view."""
        self._open = False
        for key in self._deleted:
            del target[key]
        target.update(self._writes)

    def _close(self) -> None:
        self._open = False
