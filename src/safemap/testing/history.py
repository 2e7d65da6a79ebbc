"""Recording a concurrent history: who called what, with what result, and when.

Each thread appends to its own list (no lock on the recording path, so recording does not
serialize the threads it observes); ``History.operations()`` merges them. Times come from
``time.perf_counter_ns`` (monotonic, the same clock for every thread): ``invoke`` is read
just before the call starts and ``response`` just after it returns, so the interval always
contains the instant at which the call took effect.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History", "Operation", "Recorder", "describe_call"]

_clock = time.perf_counter_ns


@dataclass(frozen=True)
class Operation:
    """One completed call in a history."""

    id: int
    thread: int
    """The recording thread's index (``History.thread_index``), small and stable."""
    method: str
    args: tuple[Any, ...]
    result: Any
    """The returned value (for iterations: the list of items yielded)."""
    error: type[BaseException] | None
    """The exception class the call raised, or ``None``."""
    invoke: int
    response: int

    def describe(self) -> str:
        """``method(args) -> result`` as a one-line string."""
        outcome = f"raised {self.error.__name__}" if self.error else f"-> {_short(self.result)}"
        return f"{describe_call(self.method, self.args)} {outcome}"


def by_time(op: Operation) -> tuple[float, float]:
    """Sort key: invocation time, then response time (so that, within one thread, an
    instantaneous call comes before a call invoked at the same instant); ties keep their
    order."""
    return (op.invoke, op.response)


def describe_call(method: str, args: tuple[Any, ...]) -> str:
    """``method(args)`` as a short one-line string (callbacks by name)."""
    return f"{method}({', '.join(_short(a) for a in args)})"


def _short(value: Any, limit: int = 40) -> str:
    text = getattr(value, "__name__", None) if callable(value) else None
    text = text or repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


ITERATION_METHODS = frozenset({"__iter__", "keys", "values", "items", "range"})
"""Methods recorded as one operation whose result is the full list of what was yielded."""


@dataclass
class History:
    """A concurrent history of calls on one object, recorded from any number of threads.

    Use :meth:`call` (or a :meth:`recorder` proxy) from each thread; then pass the history to
    :func:`safemap.testing.check_linearizable`. Recording is thread-safe and lock-free on
    the hot path.
    """

    _lanes: dict[int, list[Operation]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _local: threading.local = field(default_factory=threading.local)
    _lane_lock: threading.Lock = field(default_factory=threading.Lock)
    initial: dict[Any, Any] = field(default_factory=dict)
    """The object's contents before the first recorded call (empty by default)."""

    def _lane(self) -> tuple[int, list[Operation]]:
        lane = getattr(self._local, "lane", None)
        if lane is None:
            with self._lane_lock:
                index = len(self._lanes)
                lane = (index, self._lanes.setdefault(index, []))
            self._local.lane = lane
        return lane

    def call(self, target: Any, method: str, *args: Any) -> Any:
        """Call ``target.method(*args)``, record it, and return its result (or re-raise).

        Iterations (``__iter__``, ``keys``, ``values``, ``items``, ``range``) are consumed
        completely inside the call and recorded with the list of what they yielded; the
        list is returned.
        """
        thread, lane = self._lane()
        bound: Callable[..., Any] = getattr(target, method)
        result: Any = None
        error: type[BaseException] | None = None
        invoke = _clock()
        try:
            if method == "range":
                seen: list[tuple[Any, Any]] = []
                fn = args[0] if args else None
                bound(lambda k, v: seen.append((k, v)) if fn is None else _tee(seen, fn, k, v))
                result = seen
            elif method in ITERATION_METHODS:
                result = list(bound(*args))
            else:
                result = bound(*args)
        except Exception as exc:
            error = type(exc)
            raise
        finally:
            response = _clock()
            lane.append(
                Operation(next(self._ids), thread, method, args, result, error, invoke, response)
            )
        return result

    def recorder(self, target: Any) -> Recorder:
        """A proxy whose method calls are recorded in this history: ``rec.merge(k, 1, add)``."""
        return Recorder(self, target)

    def operations(self) -> list[Operation]:
        """Every recorded operation, ordered by invocation time."""
        with self._lane_lock:
            lanes = [list(lane) for lane in self._lanes.values()]
        return sorted(itertools.chain.from_iterable(lanes), key=by_time)

    def __len__(self) -> int:
        with self._lane_lock:
            return sum(len(lane) for lane in self._lanes.values())


def _tee(seen: list[tuple[Any, Any]], fn: Callable[[Any, Any], Any], k: Any, v: Any) -> Any:
    seen.append((k, v))
    return fn(k, v)


class Recorder:
    """Proxy returned by :meth:`History.recorder`: every method call is recorded."""

    __slots__ = ("_history", "_target")

    def __init__(self, history: History, target: Any) -> None:
        self._history = history
        self._target = target

    def __getattr__(self, method: str) -> Callable[..., Any]:
        history, target = self._history, self._target
        return lambda *args: history.call(target, method, *args)

    def __getitem__(self, key: Any) -> Any:
        return self._history.call(self._target, "__getitem__", key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._history.call(self._target, "__setitem__", key, value)

    def __delitem__(self, key: Any) -> None:
        self._history.call(self._target, "__delitem__", key)

    def __contains__(self, key: Any) -> bool:
        return bool(self._history.call(self._target, "__contains__", key))

    def __len__(self) -> int:
        return int(self._history.call(self._target, "__len__"))

    def __iter__(self) -> Iterator[Any]:
        return iter(self._history.call(self._target, "__iter__"))
