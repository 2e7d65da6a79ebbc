"""Adapters that give the peers the :class:`~safemap.bench.protocol.BenchMap` operations.

Each adapter spells an operation the way a user of that peer writes it by hand, with the
peer's own primitives, so the benchmark measures what a user would get:

- :class:`UnsafeDict`: a bare ``dict`` with no synchronization. It is the *limit* (no
  guard costs less) and it is **unsafe**: compound operations are check-then-act
  sequences that other threads can interleave. It is shown, never recommended.
- :class:`LockedDict`: ``dict`` with every operation under one ``threading.Lock``.
- :class:`RWLockedDict`: ``dict`` under a ``readerwriterlock.rwlock.RWLockFair``: reads
  share the read lock, writes take the write lock.
- :class:`CereggiiDict`: ``cereggii.AtomicDict``; compound operations are
  compare-and-set retry loops where cereggii offers a primitive for it.
- :class:`FtUtilsDict`: ``ft_utils.concurrency.ConcurrentDict``, which offers only
  ``[]``, ``[]=``, ``del``, ``in`` and ``as_dict()``.

Each adapter also gives the single calls of :class:`~.protocol.Direct` (``direct()``): for
the bare ``dict`` its own methods, so that the limit is measured through ``dict``'s own
one-call idioms; for the others the same hand-written idiom under their lock.

An operation an adapter can only compose from several calls, with no atomicity between
them, is listed in its ``NON_ATOMIC`` set; the advisor never recommends an adapter for a
workload that uses one of those operations (see :mod:`.advisor`).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from .protocol import Direct

__all__ = ["CereggiiDict", "FtUtilsDict", "LockedDict", "RWLockedDict", "UnsafeDict"]

_ABSENT: Any = object()

_COMPOUND = frozenset(
    {
        "load_or_store",
        "load_and_delete",
        "swap",
        "compare_and_swap",
        "compare_and_delete",
        "merge",
        "compute_if_present",
        "clear",
    }
)


def _equal(a: object, b: object) -> bool:
    """Value equality as ``dict`` and the map protocol compare values."""
    return a is b or bool(a == b)


class UnsafeDict:
    """A bare ``dict``: the unsynchronized limit. Unsafe: never recommended."""

    NON_ATOMIC: ClassVar[frozenset[str]] = _COMPOUND | {"range", "items"}

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[Any, Any] = {}

    def direct(self) -> Direct:
        """``dict``'s own methods and ``d[k] = v``: nothing between the caller and dict."""
        d = self._d
        return Direct(d.get, d.setdefault, d.pop, d.clear, d)

    def load(self, key: Any) -> tuple[Any, bool]:
        value = self._d.get(key, _ABSENT)
        return (None, False) if value is _ABSENT else (value, True)

    def store(self, key: Any, value: Any) -> None:
        self._d[key] = value

    def load_or_store(self, key: Any, value: Any) -> tuple[Any, bool]:
        d = self._d
        current = d.get(key, _ABSENT)
        if current is _ABSENT:
            d[key] = value
            return value, False
        return current, True

    def load_and_delete(self, key: Any) -> tuple[Any, bool]:
        value = self._d.pop(key, _ABSENT)
        return (None, False) if value is _ABSENT else (value, True)

    def delete(self, key: Any) -> None:
        self._d.pop(key, None)

    def swap(self, key: Any, value: Any) -> tuple[Any, bool]:
        d = self._d
        previous = d.get(key, _ABSENT)
        d[key] = value
        return (None, False) if previous is _ABSENT else (previous, True)

    def compare_and_swap(self, key: Any, old: Any, new: Any) -> bool:
        d = self._d
        current = d.get(key, _ABSENT)
        if current is _ABSENT or not _equal(current, old):
            return False
        d[key] = new
        return True

    def compare_and_delete(self, key: Any, old: Any) -> bool:
        d = self._d
        current = d.get(key, _ABSENT)
        if current is _ABSENT or not _equal(current, old):
            return False
        del d[key]
        return True

    def range(self, fn: Callable[[Any, Any], object]) -> None:
        for key, value in self._d.items():
            if fn(key, value) is False:
                return

    def merge(self, key: Any, value: Any, fn: Callable[[Any, Any], Any]) -> Any:
        d = self._d
        current = d.get(key, _ABSENT)
        new = value if current is _ABSENT else fn(current, value)
        d[key] = new
        return new

    def compute_if_present(self, key: Any, fn: Callable[[Any, Any], Any]) -> Any:
        d = self._d
        current = d.get(key, _ABSENT)
        if current is _ABSENT:
            return None
        new = fn(key, current)
        d[key] = new
        return new

    def clear(self) -> None:
        self._d.clear()

    def items(self) -> Iterable[tuple[Any, Any]]:
        return self._d.items()

    def snapshot(self) -> Mapping[Any, Any]:
        return self._d.copy()

    def __len__(self) -> int:
        return len(self._d)


class LockedDict:
    """``dict`` + ``threading.Lock``: every operation holds the one lock."""

    NON_ATOMIC: ClassVar[frozenset[str]] = frozenset()

    __slots__ = ("_d", "_lock")

    def __init__(self) -> None:
        self._d: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def direct(self) -> Direct:
        return Direct(self.get, self.setdefault, self.pop, self.clear, self)

    def get(self, key: Any, default: Any) -> Any:
        with self._lock:
            return self._d.get(key, default)

    def setdefault(self, key: Any, value: Any) -> Any:
        with self._lock:
            return self._d.setdefault(key, value)

    def pop(self, key: Any, default: Any) -> Any:
        with self._lock:
            return self._d.pop(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._lock:
            self._d[key] = value

    def load(self, key: Any) -> tuple[Any, bool]:
        with self._lock:
            value = self._d.get(key, _ABSENT)
        return (None, False) if value is _ABSENT else (value, True)

    def store(self, key: Any, value: Any) -> None:
        with self._lock:
            self._d[key] = value

    def load_or_store(self, key: Any, value: Any) -> tuple[Any, bool]:
        with self._lock:
            current = self._d.get(key, _ABSENT)
            if current is _ABSENT:
                self._d[key] = value
                return value, False
        return current, True

    def load_and_delete(self, key: Any) -> tuple[Any, bool]:
        with self._lock:
            value = self._d.pop(key, _ABSENT)
        return (None, False) if value is _ABSENT else (value, True)

    def delete(self, key: Any) -> None:
        with self._lock:
            self._d.pop(key, None)

    def swap(self, key: Any, value: Any) -> tuple[Any, bool]:
        with self._lock:
            previous = self._d.get(key, _ABSENT)
            self._d[key] = value
        return (None, False) if previous is _ABSENT else (previous, True)

    def compare_and_swap(self, key: Any, old: Any, new: Any) -> bool:
        with self._lock:
            current = self._d.get(key, _ABSENT)
            if current is _ABSENT or not _equal(current, old):
                return False
            self._d[key] = new
            return True

    def compare_and_delete(self, key: Any, old: Any) -> bool:
        with self._lock:
            current = self._d.get(key, _ABSENT)
            if current is _ABSENT or not _equal(current, old):
                return False
            del self._d[key]
            return True

    def range(self, fn: Callable[[Any, Any], object]) -> None:
        for key, value in self.items():
            if fn(key, value) is False:
                return

    def merge(self, key: Any, value: Any, fn: Callable[[Any, Any], Any]) -> Any:
        with self._lock:
            current = self._d.get(key, _ABSENT)
            new = value if current is _ABSENT else fn(current, value)
            self._d[key] = new
            return new

    def compute_if_present(self, key: Any, fn: Callable[[Any, Any], Any]) -> Any:
        with self._lock:
            current = self._d.get(key, _ABSENT)
            if current is _ABSENT:
                return None
            new = fn(key, current)
            self._d[key] = new
            return new

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def items(self) -> Iterable[tuple[Any, Any]]:
        # The usual idiom: copy under the lock, iterate the copy without it.
        with self._lock:
            return list(self._d.items())

    def snapshot(self) -> Mapping[Any, Any]:
        with self._lock:  # a copy per snapshot, under the lock
            return self._d.copy()

    def __len__(self) -> int:
        return len(self._d)


class RWLockedDict:
    """``dict`` + ``readerwriterlock``'s fair readers-writer lock.

    The lock objects of ``readerwriterlock`` keep per-object state, so each thread gets
    its own reader and writer objects (the library's documented usage).
    """

    NON_ATOMIC: ClassVar[frozenset[str]] = frozenset()

    __slots__ = ("_d", "_local", "_rw")

    def __init__(self) -> None:
        rwlock = importlib.import_module("readerwriterlock.rwlock")
        self._d: dict[Any, Any] = {}
        self._rw: Any = rwlock.RWLockFair()
        self._local = threading.local()

    def direct(self) -> Direct:
        return Direct(self.get, self.setdefault, self.pop, self.clear, self)

    def get(self, key: Any, default: Any) -> Any:
        with self._r():
            return self._d.get(key, default)

    def setdefault(self, key: Any, value: Any) -> Any:
        with self._w():
            return self._d.setdefault(key, value)

    def pop(self, key: Any, default: Any) -> Any:
        with self._w():
            return self._d.pop(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._w():
            self._d[key] = value

    def _r(self) -> Any:
        try:
            return self._local.r
        except AttributeError:
            self._local.r = self._rw.gen_rlock()
            return self._local.r

    def _w(self) -> Any:
        try:
            return self._local.w
        except AttributeError:
            self._local.w = self._rw.gen_wlock()
            return self._local.w

    def load(self, key: Any) -> tuple[Any, bool]:
        with self._r():
            value = self._d.get(key, _ABSENT)
        return (None, False) if value is _ABSENT else (value, True)

    def store(self, key: Any, value: Any) -> None:
        with self._w():
            self._d[key] = value

    def load_or_store(self, key: Any, value: Any) -> tuple[Any, bool]:
        with self._w():
            current = self._d.get(key, _ABSENT)
            if current is _ABSENT:
                self._d[key] = value
                return value, False
        return current, True

    def load_and_delete(self, key: Any) -> tuple[Any, bool]:
        with self._w():
            value = self._d.pop(key, _ABSENT)
        return (None, False) if value is _ABSENT else (value, True)

    def delete(self, key: Any) -> None:
        with self._w():
            self._d.pop(key, None)

    def swap(self, key: Any, value: Any) -> tuple[Any, bool]:
        with self._w():
            previous = self._d.get(key, _ABSENT)
            self._d[key] = value
        return (None, False) if previous is _ABSENT else (previous, True)

    def compare_and_swap(self, key: Any, old: Any, new: Any) -> bool:
        with self._w():
            current = self._d.get(key, _ABSENT)
            if current is _ABSENT or not _equal(current, old):
                return False
            self._d[key] = new
            return True

    def compare_and_delete(self, key: Any, old: Any) -> bool:
        with self._w():
            current = self._d.get(key, _ABSENT)
            if current is _ABSENT or not _equal(current, old):
                return False
            del self._d[key]
            return True

    def range(self, fn: Callable[[Any, Any], object]) -> None:
        for key, value in self.items():
            if fn(key, value) is False:
                return

    def merge(self, key: Any, value: Any, fn: Callable[[Any, Any], Any]) -> Any:
        with self._w():
            current = self._d.get(key, _ABSENT)
            new = value if current is _ABSENT else fn(current, value)
            self._d[key] = new
            return new

    def compute_if_present(self, key: Any, fn: Callable[[Any, Any], Any]) -> Any:
        with self._w():
            current = self._d.get(key, _ABSENT)
            if current is _ABSENT:
                return None
            new = fn(key, current)
            self._d[key] = new
            return new

    def clear(self) -> None:
        with self._w():
            self._d.clear()

    def items(self) -> Iterable[tuple[Any, Any]]:
        with self._r():
            return list(self._d.items())

    def snapshot(self) -> Mapping[Any, Any]:
        with self._r():
            return self._d.copy()

    def __len__(self) -> int:
        return len(self._d)


class CereggiiDict:
    """``cereggii.AtomicDict``: lock-free; compound operations are compare-and-set loops.

    ``AtomicDict`` has no atomic conditional delete, no ``pop`` and no ``clear``:
    ``load_and_delete`` and ``compare_and_delete`` read, then ``del`` (two steps),
    ``clear`` deletes the keys one by one, and ``snapshot`` builds a dict from an
    iteration that writers change meanwhile.
    """

    NON_ATOMIC: ClassVar[frozenset[str]] = frozenset(
        {"load_and_delete", "compare_and_delete", "clear", "snapshot"}
    )

    __slots__ = ("_d", "_failed", "_not_found")

    def __init__(self) -> None:
        cereggii = importlib.import_module("cereggii")
        self._d: Any = cereggii.AtomicDict()
        self._not_found: Any = cereggii.NOT_FOUND
        self._failed: type[Exception] = cereggii.ExpectationFailed

    def direct(self) -> Direct:
        d = self._d
        return Direct(d.get, self._setdefault, self._pop, self.clear, d)

    def _setdefault(self, key: Any, value: Any) -> Any:
        return self.load_or_store(key, value)[0]

    def _pop(self, key: Any, default: Any) -> Any:
        value, found = self.load_and_delete(key)
        return value if found else default

    def _cas(self, key: Any, expected: Any, desired: Any) -> bool:
        try:
            self._d.compare_and_set(key, expected, desired)
        except self._failed:
            return False
        return True

    def load(self, key: Any) -> tuple[Any, bool]:
        value = self._d.get(key, _ABSENT)
        return (None, False) if value is _ABSENT else (value, True)

    def store(self, key: Any, value: Any) -> None:
        self._d[key] = value

    def load_or_store(self, key: Any, value: Any) -> tuple[Any, bool]:
        while True:
            if self._cas(key, self._not_found, value):
                return value, False
            current = self._d.get(key, _ABSENT)
            if current is not _ABSENT:
                return current, True

    def load_and_delete(self, key: Any) -> tuple[Any, bool]:
        value = self._d.get(key, _ABSENT)
        if value is _ABSENT:
            return None, False
        try:
            del self._d[key]
        except KeyError:
            return None, False
        return value, True

    def delete(self, key: Any) -> None:
        try:  # noqa: SIM105 (a hot path: try/except costs less than contextlib.suppress)
            del self._d[key]
        except KeyError:
            pass

    def swap(self, key: Any, value: Any) -> tuple[Any, bool]:
        while True:
            current = self._d.get(key, _ABSENT)
            expected = self._not_found if current is _ABSENT else current
            if self._cas(key, expected, value):
                return (None, False) if current is _ABSENT else (current, True)

    def compare_and_swap(self, key: Any, old: Any, new: Any) -> bool:
        while True:
            current = self._d.get(key, _ABSENT)
            if current is _ABSENT or not _equal(current, old):
                return False
            if self._cas(key, current, new):
                return True

    def compare_and_delete(self, key: Any, old: Any) -> bool:
        current = self._d.get(key, _ABSENT)
        if current is _ABSENT or not _equal(current, old):
            return False
        try:
            del self._d[key]
        except KeyError:
            return False
        return True

    def range(self, fn: Callable[[Any, Any], object]) -> None:
        for key, value in self._d.fast_iter():
            if fn(key, value) is False:
                return

    def merge(self, key: Any, value: Any, fn: Callable[[Any, Any], Any]) -> Any:
        while True:
            current = self._d.get(key, _ABSENT)
            if current is _ABSENT:
                if self._cas(key, self._not_found, value):
                    return value
            else:
                new = fn(current, value)
                if self._cas(key, current, new):
                    return new

    def compute_if_present(self, key: Any, fn: Callable[[Any, Any], Any]) -> Any:
        while True:
            current = self._d.get(key, _ABSENT)
            if current is _ABSENT:
                return None
            new = fn(key, current)
            if self._cas(key, current, new):
                return new

    def clear(self) -> None:
        for key, _ in list(self._d.fast_iter()):
            self.delete(key)

    def items(self) -> Iterable[tuple[Any, Any]]:
        return self._d.fast_iter()  # type: ignore[no-any-return]

    def snapshot(self) -> Mapping[Any, Any]:
        return dict(self._d.fast_iter())  # not one instant: built while writers run

    def __len__(self) -> int:
        return len(self._d)


def _ft_utils_concurrent_dict() -> Any:
    """The ``ConcurrentDict`` class of ``ft_utils`` (its module was renamed once)."""
    for module in ("ft_utils.concurrency", "ft_utils.concurrent"):
        try:
            return importlib.import_module(module).ConcurrentDict
        except (ImportError, AttributeError):
            continue
    raise ImportError("ft_utils.concurrency.ConcurrentDict is not available")


class FtUtilsDict:
    """``ft_utils.concurrency.ConcurrentDict``: scalable get/set/delete on free-threaded
    builds; every compound operation is composed of several calls (not atomic)."""

    NON_ATOMIC: ClassVar[frozenset[str]] = _COMPOUND | {"range", "items", "snapshot"}

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: Any = _ft_utils_concurrent_dict()()

    def direct(self) -> Direct:
        return Direct(self._get, self._setdefault, self._pop, self.clear, self._d)

    def _get(self, key: Any, default: Any) -> Any:
        try:
            return self._d[key]
        except KeyError:
            return default

    def _setdefault(self, key: Any, value: Any) -> Any:
        return self.load_or_store(key, value)[0]

    def _pop(self, key: Any, default: Any) -> Any:
        value, found = self.load_and_delete(key)
        return value if found else default

    def load(self, key: Any) -> tuple[Any, bool]:
        try:
            return self._d[key], True
        except KeyError:
            return None, False

    def store(self, key: Any, value: Any) -> None:
        self._d[key] = value

    def load_or_store(self, key: Any, value: Any) -> tuple[Any, bool]:
        current, loaded = self.load(key)
        if loaded:
            return current, True
        self._d[key] = value
        return value, False

    def load_and_delete(self, key: Any) -> tuple[Any, bool]:
        current, loaded = self.load(key)
        if not loaded:
            return None, False
        try:
            del self._d[key]
        except KeyError:
            return None, False
        return current, True

    def delete(self, key: Any) -> None:
        try:  # noqa: SIM105 (a hot path: try/except costs less than contextlib.suppress)
            del self._d[key]
        except KeyError:
            pass

    def swap(self, key: Any, value: Any) -> tuple[Any, bool]:
        previous = self.load(key)
        self._d[key] = value
        return previous

    def compare_and_swap(self, key: Any, old: Any, new: Any) -> bool:
        current, loaded = self.load(key)
        if not loaded or not _equal(current, old):
            return False
        self._d[key] = new
        return True

    def compare_and_delete(self, key: Any, old: Any) -> bool:
        current, loaded = self.load(key)
        if not loaded or not _equal(current, old):
            return False
        self.delete(key)
        return True

    def range(self, fn: Callable[[Any, Any], object]) -> None:
        for key, value in self.items():
            if fn(key, value) is False:
                return

    def merge(self, key: Any, value: Any, fn: Callable[[Any, Any], Any]) -> Any:
        current, loaded = self.load(key)
        new = fn(current, value) if loaded else value
        self._d[key] = new
        return new

    def compute_if_present(self, key: Any, fn: Callable[[Any, Any], Any]) -> Any:
        current, loaded = self.load(key)
        if not loaded:
            return None
        new = fn(key, current)
        self._d[key] = new
        return new

    def clear(self) -> None:
        for key in list(self._d.as_dict()):
            self.delete(key)

    def items(self) -> Iterable[tuple[Any, Any]]:
        return self._d.as_dict().items()  # type: ignore[no-any-return]

    def snapshot(self) -> Mapping[Any, Any]:
        return self._d.as_dict()  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self._d.as_dict())
