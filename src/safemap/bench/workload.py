"""The shape of a workload, and the helpers its correctness checks share.

A workload is three functions around the runner (:mod:`.runner`):

- ``setup(m, threads)`` fills a fresh map before the clock starts;
- ``worker(m, state, threads)`` returns, for one thread, ``run(first, count)`` that performs
  the operations numbered ``first .. first + count - 1``. A thread's numbers start at
  ``state.first = tid * stride`` (Go's ``i := id * b.N``), so per-thread "unique" keys
  never collide. ``run`` counts results that contradict the definition in
  ``state.anomalies`` (Go's benchmarks ``b.Fatal`` on them);
- ``verify(m, states, threads)`` checks the final state after every thread has stopped.
  Workloads whose final state follows from which operations ran compute it from each
  thread's executed range and compare (:func:`compare_state`); the others check what
  invariants they can.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from .protocol import BenchMap
from .results import WorkloadInfo

__all__ = [
    "Run",
    "ThreadState",
    "Verdict",
    "Workload",
    "compare_keys",
    "compare_state",
    "contents",
]

Run = Callable[[int, int], None]
"""``run(first, count)``: perform operations ``first .. first + count - 1``."""

_SHOWN = 3  # how many offending keys a problem message names
_GONE: Any = object()  # an expected value no map holds


@dataclass(eq=False)
class ThreadState:
    """One thread's bookkeeping: where its operation numbers start, how many ran, and
    what its results contradicted. ``data`` holds workload-specific counters."""

    tid: int
    first: int
    ops: int = 0
    anomalies: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    def executed(self) -> range:
        """The operation numbers this thread performed."""
        return range(self.first, self.first + self.ops)


@dataclass
class Verdict:
    """The outcome of a final-state check."""

    known_state: bool
    lost: int = 0
    problems: list[str] = field(default_factory=list)


def contents(m: BenchMap) -> dict[Any, Any]:
    """The map's entries as a dict (call it only when no thread is running)."""
    return dict(m.items())


def compare_state(m: BenchMap, expected: Mapping[Any, Any]) -> Verdict:
    """Compare the map with the exact state the workload must have left.

    A key missing or holding another value counts as a lost update; an unexpected key is
    a problem too (data that should not be there).
    """
    return _compare(contents(m), expected)


def compare_keys(m: BenchMap, expected: Set[Any]) -> Verdict:
    """Like :func:`compare_state` for workloads that determine the keys, not the values."""
    actual = contents(m)
    if actual.keys() == expected:  # the common case, decided in C
        return Verdict(True)
    return _compare(actual, {k: actual.get(k, _GONE) for k in expected})


def _compare(actual: dict[Any, Any], expected: Mapping[Any, Any]) -> Verdict:
    if actual == expected:  # the common case, decided in C; the details only on a mismatch
        return Verdict(True)
    missing = [k for k in expected if k not in actual]
    wrong = [k for k in expected if k in actual and actual[k] != expected[k]]
    extra = [k for k in actual if k not in expected]
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys missing (e.g. {_some(missing)})")
    if wrong:
        problems.append(f"{len(wrong)} keys hold a wrong value (e.g. {_some(wrong)})")
    if extra:
        problems.append(f"{len(extra)} unexpected keys (e.g. {_some(extra)})")
    return Verdict(True, lost=len(missing) + len(wrong), problems=problems)


def _some(keys: Sequence[Any]) -> str:
    return ", ".join(repr(k) for k in keys[:_SHOWN])


class Workload(abc.ABC):
    """A benchmark workload; subclasses define ``info``, ``setup`` and ``worker``."""

    info: WorkloadInfo

    switch_interval: float | None = None
    """On a GIL build, the interpreter's switch interval (s) while this workload's cells
    run (restored after each cell); ``None`` keeps the interpreter's. The atomicity checks
    set a tiny one so that threads are switched inside composed operations."""

    overtime: float = 0.0
    """How long (s) past its duration a cell may go on while :meth:`more` asks for it."""
    max_batch: int | None = None
    """The most operations a thread runs between two looks at the clock (and calls of
    :meth:`more`); ``None``: the runner's ``MAX_BATCH``."""
    min_threads: int = 1
    """The fewest threads the workload means anything with (a race needs two)."""

    @property
    def name(self) -> str:
        return self.info.name

    def ops_per_thread(self, threads: int) -> int | None:
        """The operation budget of each thread, or ``None`` when bounded by duration."""
        return None

    @abc.abstractmethod
    def setup(self, m: BenchMap, threads: int) -> None:
        """Fill a fresh map before the measurement."""

    @abc.abstractmethod
    def worker(self, m: BenchMap, state: ThreadState, threads: int) -> Run:
        """The operation loop of one thread."""

    def more(self, states: Sequence[ThreadState]) -> bool:
        """Called by each thread after the duration has passed: whether the threads must
        go on (for at most :attr:`overtime`). By default they stop."""
        return False

    def conclusive(self, states: Sequence[ThreadState]) -> bool:
        """Called after every thread has stopped: whether the threads did what the
        workload needs for a pass to mean something. A cell that passed without being
        conclusive is no evidence that the map is correct (one that failed still
        failed). By default every cell is conclusive."""
        return True

    def verify(self, m: BenchMap, states: Sequence[ThreadState], threads: int) -> Verdict:
        """Check the final state (default: nothing is known about it)."""
        return Verdict(known_state=False)
