"""Helpers for the bench tests: recording and intentionally broken maps."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import safemap
from safemap.bench.peers import LockedDict


class RecordingMap(LockedDict):
    """A correct map that records, per thread, the keys each operation used."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, Any]] = []  # (thread name, op, key)
        self._calls_lock = threading.Lock()

    def _note(self, op: str, key: Any) -> None:
        with self._calls_lock:
            self.calls.append((threading.current_thread().name, op, key))

    def load(self, key: Any) -> tuple[Any, bool]:
        self._note("load", key)
        return super().load(key)

    def load_or_store(self, key: Any, value: Any) -> tuple[Any, bool]:
        self._note("load_or_store", key)
        return super().load_or_store(key, value)

    def store(self, key: Any, value: Any) -> None:
        self._note("store", key)
        super().store(key, value)

    # The single calls the workloads make (Direct), recorded as the operation they are.

    def get(self, key: Any, default: Any) -> Any:
        self._note("load", key)
        return super().get(key, default)

    def setdefault(self, key: Any, value: Any) -> Any:
        self._note("load_or_store", key)
        return super().setdefault(key, value)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._note("store", key)
        super().__setitem__(key, value)


class LosingMerge(safemap.LockedMap[Any, Any]):
    """``merge`` silently drops every 10th update."""

    def __init__(self) -> None:
        super().__init__()
        self._calls = itertools.count()

    def merge(self, key: Any, value: Any, fn: Callable[[Any, Any], Any]) -> Any:
        if next(self._calls) % 10 == 9:
            return self.get(key)
        return super().merge(key, value, fn)


class DroppingStore(safemap.LockedMap[Any, Any]):
    """``store`` drops keys that are multiples of 7."""

    def store(self, key: Any, value: Any) -> None:
        if isinstance(key, int) and key % 7 == 0:
            return
        super().store(key, value)


class RaisingSwap(safemap.LockedMap[Any, Any]):
    """``swap`` raises now and then."""

    def __init__(self) -> None:
        super().__init__()
        self._calls = itertools.count()

    def swap(self, key: Any, value: Any) -> tuple[Any, bool]:
        if next(self._calls) % 50 == 49:
            raise RuntimeError("swap failed")
        return super().swap(key, value)


class DoubleDelete(safemap.LockedMap[Any, Any]):
    """``load_and_delete`` reports a hit for a key it did not remove (a lost race)."""

    def load_and_delete(self, key: Any) -> tuple[Any, bool]:
        value, loaded = super().load_and_delete(key)
        if not loaded and isinstance(key, int) and 0 <= key < 128:
            return key, True
        return value, loaded


# ------------------------------------------------------------------------------------
# Check-then-act maps: each composes ONE compound operation from the map's own atomic
# load/store/delete, as a user who forgot atomicity would. Every other operation is
# LockedMap's (atomic). The atomicity workloads must catch each of them, run after run.


class CheckThenActLoadOrStore(safemap.LockedMap[Any, Any]):
    def load_or_store(self, key: Any, value: Any) -> tuple[Any, bool]:
        current, found = self.load(key)
        if found:
            return current, True
        self.store(key, value)
        return value, False


class CheckThenActLoadAndDelete(safemap.LockedMap[Any, Any]):
    def load_and_delete(self, key: Any) -> tuple[Any, bool]:
        current, found = self.load(key)
        if found:  # (delete and pop are built on load_and_delete: remove via compute)
            self.compute(key, lambda _k, _v: safemap.DELETE)
        return current, found


class CheckThenActSwap(safemap.LockedMap[Any, Any]):
    def swap(self, key: Any, value: Any) -> tuple[Any, bool]:
        previous = self.load(key)
        self.store(key, value)
        return previous


class CheckThenActCompareAndSwap(safemap.LockedMap[Any, Any]):
    def compare_and_swap(self, key: Any, old: Any, new: Any) -> bool:
        current, found = self.load(key)
        if not found or current != old:
            return False
        self.store(key, new)
        return True


class CheckThenActCompareAndDelete(safemap.LockedMap[Any, Any]):
    def compare_and_delete(self, key: Any, old: Any) -> bool:
        current, found = self.load(key)
        if not found or current != old:
            return False
        self.delete(key)
        return True


class CheckThenActComputeIfPresent(safemap.LockedMap[Any, Any]):
    def compute_if_present(self, key: Any, fn: Callable[[Any, Any], Any]) -> Any:
        current, found = self.load(key)
        if not found:
            return None
        new = fn(key, current)
        self.store(key, new)
        return new


class CheckThenActMerge(safemap.LockedMap[Any, Any]):
    def merge(self, key: Any, value: Any, fn: Callable[[Any, Any], Any]) -> Any:
        current, found = self.load(key)
        new = fn(current, value) if found else value
        self.store(key, new)
        return new


CHECK_THEN_ACT: dict[str, type[safemap.LockedMap[Any, Any]]] = {
    "load_or_store": CheckThenActLoadOrStore,
    "load_and_delete": CheckThenActLoadAndDelete,
    "swap": CheckThenActSwap,
    "compare_and_swap": CheckThenActCompareAndSwap,
    "compare_and_delete": CheckThenActCompareAndDelete,
    "compute_if_present": CheckThenActComputeIfPresent,
    "merge": CheckThenActMerge,
}
"""A check-then-act map for every compound operation the bench measures."""
