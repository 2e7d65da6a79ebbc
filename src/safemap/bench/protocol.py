"""``BenchMap``: the operations the benchmark workloads call on a map.

Every safemap map type satisfies it as it is (these are protocol methods, see
``shared/spec/map-protocol.md``), so safemap maps are measured without any wrapper. The
peers (``dict``, ``dict`` + a lock, ``cereggii.AtomicDict``, ...) get thin adapters in
:mod:`.peers` that spell each operation the way a user of that peer would write it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

__all__ = ["OPERATIONS", "BenchMap"]

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

    def __len__(self) -> int: ...
