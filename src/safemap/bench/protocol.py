"""``BenchMap``: the operations the benchmark workloads call on a map, and ``Direct``:
the single calls they use where ``dict`` has one.

Every safemap map type satisfies ``BenchMap`` as it is (these are protocol methods), so
safemap maps are measured without any wrapper. The peers (``dict``, ``dict`` + a lock,
``cereggii.AtomicDict``, ...) get thin adapters in :mod:`.peers` that spell each
operation the way a user of that peer would write it.

The bare ``dict`` is the limit, and a limit measured through an adapter is no limit: a
Python method that builds a ``(value, found)`` tuple costs more than a native map's whole
call. So for the operations ``dict`` does in one call (``get``, ``d[k] = v``,
``setdefault``, ``pop``, ``clear``) the workloads call :class:`Direct`'s spellings:
``dict``'s own methods for the bare ``dict``, and every other map's own single call for
the same operation (the protocol's ``get``, ``m[k] = v``, ``setdefault``, ``pop``,
``clear``, each atomic). The remaining operations (``swap``, compare-and-swap, ``merge``,
...) have no single ``dict`` call: there the limit is the unsafe Python idiom of
:class:`~.peers.UnsafeDict`, which a native map can beat.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ABSENT", "DICT_CALLS", "OPERATIONS", "BenchMap", "Direct", "Settable", "direct"]

OPERATIONS: tuple[str, ...] = (
    "load",
    "store",
    "load_or_store",
    "load_and_delete",
    "delete",
    "swap",
    "compare_and_swap",
    "compare_and_delete",
    "range",
    "merge",
    "compute_if_present",
    "clear",
    "items",
    "snapshot",
)
"""The names of the operations of :class:`BenchMap` a workload may use."""


class BenchMap(Protocol):
    """The subset of the safemap map protocol the workloads use (same names, same returns)."""

    def load(self, key: Any) -> tuple[Any, bool]: ...

    def store(self, key: Any, value: Any) -> None: ...

    def load_or_store(self, key: Any, value: Any) -> tuple[Any, bool]: ...

    def load_and_delete(self, key: Any) -> tuple[Any, bool]: ...

    def delete(self, key: Any) -> None: ...

    def swap(self, key: Any, value: Any) -> tuple[Any, bool]: ...

    def compare_and_swap(self, key: Any, old: Any, new: Any) -> bool: ...

    def compare_and_delete(self, key: Any, old: Any) -> bool: ...

    def range(self, fn: Callable[[Any, Any], object]) -> None: ...

    def merge(self, key: Any, value: Any, fn: Callable[[Any, Any], Any]) -> Any: ...

    def compute_if_present(self, key: Any, fn: Callable[[Any, Any], Any]) -> Any: ...

    def clear(self) -> None: ...

    def items(self) -> Iterable[tuple[Any, Any]]: ...

    def snapshot(self) -> Mapping[Any, Any]:
        """The contents at one instant (safemap: ``snapshot()``; a peer: its idiom)."""
        ...

    def __len__(self) -> int: ...


class Settable(Protocol):
    """What ``target[k] = v`` needs."""

    def __setitem__(self, key: Any, value: Any, /) -> None: ...


DICT_CALLS: frozenset[str] = frozenset(
    {"load", "store", "load_or_store", "load_and_delete", "delete", "clear", "items"}
)
"""The operations ``dict`` performs in one call of its own (through :class:`Direct`, or
``items()``): where a workload uses only these, the bare ``dict`` is a true limit."""

ABSENT: Any = object()
"""The default passed to :attr:`Direct.get` and :attr:`Direct.pop`: no map holds it."""


@dataclass(frozen=True, slots=True)
class Direct:
    """One map's single-call spellings of the operations ``dict`` has a call for.

    ``get(k, ABSENT)`` reads (``load``), ``target[k] = v`` writes (``store``),
    ``setdefault(k, v)`` returns the value present after inserting ``v`` if absent
    (``load_or_store``), ``pop(k, ABSENT)`` removes and returns (``load_and_delete``;
    ``pop(k, None)`` is ``delete``), ``clear()`` empties the map.
    """

    get: Callable[[Any, Any], Any]
    setdefault: Callable[[Any, Any], Any]
    pop: Callable[[Any, Any], Any]
    clear: Callable[[], None]
    target: Settable


def direct(m: Any) -> Direct:
    """The :class:`Direct` calls of ``m``: an adapter's own (``m.direct()``), else the
    map's dict-compatible methods, which every safemap map has (each call atomic)."""
    own = getattr(m, "direct", None)
    if callable(own):
        result: Direct = own()
        return result
    return Direct(m.get, m.setdefault, m.pop, m.clear, m)
