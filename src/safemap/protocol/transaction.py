"""The view handed to ``transaction(fn)``: a private overlay over the map's contents.

Invariants, while the owning map holds exclusive access:
- ``_base`` is not mutated by anyone (the map is locked), so reading it is safe;
- ``_writes`` and ``_deleted`` are disjoint; a key in ``_deleted`` is present in ``_base``;
- the view's contents are ``(_base - _deleted) | _writes``.
Nothing reaches the map until ``_commit`` applies the overlay, so a ``fn`` that raises leaves
the map untouched, and a commit makes every change visible at once (under the same lock).

The commit is all or nothing. It first looks up every key it will touch, which is where a
key's ``__hash__``/``__eq__`` runs against the map's keys, so a key that raises there stops
it before the first change. If a change still fails (a non-deterministic ``__eq__``, an
interrupt, memory), the changes already applied are undone in reverse order from the undo
log, and the exception propagates. The undo log holds every value the commit replaced or
removed: it lives as long as the view, which the map releases after unlocking, so their
``__del__`` never runs under the map's lock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping

from .._typing import Any, Generic, TypeVar
from .sentinels import DELETE, MISSING

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

    __slots__ = ("_base", "_deleted", "_open", "_undo", "_writes")

    def __init__(self, base: Mapping[K, V]) -> None:
        self._base = base
        self._writes: dict[K, V] = {}
        self._deleted: set[K] = set()
        self._undo: list[tuple[K, Any]] = []
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
        if value is MISSING or value is DELETE:
            raise TypeError(f"{value!r} is a sentinel and cannot be stored as a value")
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

    def _take_changes(self) -> tuple[list[K], dict[K, V]]:
        """Close the view and return its overlay, ``(keys it deletes, values it writes)``,
        for a map that applies them by other means (e.g. one server-side script)."""
        self._open = False
        return list(self._deleted), dict(self._writes)

    def _commit(self, target: MutableMapping[K, V]) -> None:
        """Apply the overlay to ``target`` (the map's storage: ``in``, ``[]``, ``[]=`` and
        ``del`` suffice) all or nothing, and close the view.

        Raises what a key raised, with ``target`` exactly as before."""
        self._open = False
        # Every lookup that can run user code, before the first change: the value each
        # touched key holds now (``_ABSENT`` for a key the commit adds).
        removals = [(key, target[key]) for key in self._deleted]
        writes = [
            (key, value, target[key] if key in target else _ABSENT)  # noqa: SIM401  # no get()
            for key, value in self._writes.items()
        ]
        # Each entry is logged before its change is made, so an interrupt between the two
        # leaves an entry whose undo is a no-op, never a change without an entry.
        undo = self._undo
        try:
            for key, old in removals:
                undo.append((key, old))
                del target[key]
            for key, value, old in writes:
                undo.append((key, old))
                target[key] = value
        except BaseException as exc:
            self._roll_back(target, exc)
            raise

    def _roll_back(self, target: MutableMapping[K, V], error: BaseException) -> None:
        """Undo the logged changes, newest first. Each step is a single-key write of a key
        the map held a moment ago; one that still fails is skipped and noted on ``error``."""
        for key, old in reversed(self._undo):
            try:
                if old is _ABSENT:
                    if key in target:
                        del target[key]
                else:
                    target[key] = old
            except BaseException as undo_error:  # the commit's error wins
                error.add_note(f"safemap: could not undo the commit for {key!r}: {undo_error!r}")

    def _close(self) -> None:
        self._open = False
