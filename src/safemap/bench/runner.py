"""Run one measurement cell, and plan the order of all cells.

A cell is one workload on one implementation with ``threads`` threads:

1. a fresh map is built and the workload's ``setup`` fills it (not timed);
2. each thread builds its operation loop, then all wait on one ``threading.Barrier`` so
   they start together; the clock starts when the barrier releases;
3. each thread runs its operations in batches (doubling from 1 up to
   :data:`MAX_BATCH`, or the workload's ``max_batch``, while a batch takes under
   :data:`BATCH_SECONDS`, so the clock is read rarely) until the duration has passed,
   or until its operation budget is spent for op-count-bounded workloads. A thread never
   runs more than :data:`KEY_STRIDE` operations, so its operation numbers
   (``tid * KEY_STRIDE + n``) never reach the next thread's;
4. the clock stops when the last thread has finished; throughput is all threads'
   operations divided by that wall time;
5. the workload verifies the final state; exceptions raised by the map are counted (the
   thread goes on with its next batch) and the first few are kept as messages. The
   workload also says whether the run was conclusive (an atomicity cell: whether its
   threads overlapped enough to expose a composed operation).

:func:`plan` interleaves implementations: for every workload, thread count and round,
each implementation runs once, in an order rotated from one round and workload to the
next, so slow drifts of a shared machine hit every implementation alike.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter

from .environment import gil_enabled
from .protocol import BenchMap
from .registry import Impl, close_map
from .workload import ThreadState, Verdict, Workload

__all__ = [
    "BATCH_SECONDS",
    "HANG_SECONDS",
    "KEY_STRIDE",
    "MAX_BATCH",
    "Cell",
    "CellOutcome",
    "plan",
    "run_cell",
]

KEY_STRIDE = 1_000_000_007
"""Operation numbers of thread ``tid`` start at ``tid * KEY_STRIDE`` in duration-bounded
runs (Go uses ``id * b.N``; a prime stride also staggers the threads' ``i % 1024``)."""

MAX_BATCH = 1024
BATCH_SECONDS = 0.002
HANG_SECONDS = 300.0
"""A cell whose threads have not finished this long after their deadline is reported as
hung (a deadlocked map) and abandoned."""
_SAMPLES = 3


@dataclass(frozen=True)
class Cell:
    """One scheduled measurement."""

    workload: Workload
    impl: Impl
    threads: int
    round: int


@dataclass
class CellOutcome:
    """What one cell measured and found."""

    ops: int
    seconds: float
    exceptions: int = 0
    anomalies: int = 0
    verdict: Verdict = field(default_factory=lambda: Verdict(known_state=False))
    errors: list[str] = field(default_factory=list)
    conclusive: bool = True
    """Whether the run gave the workload's checks a real chance (``Workload.conclusive``;
    for an atomicity check: every thread reached ``OVERLAPS``). A pass that is not
    conclusive proves nothing; a failure is a failure either way, so cells that failed
    before or instead of running (setup raised, threads hung) stay conclusive."""


def _describe(exc: BaseException) -> str:
    return f"raised {type(exc).__name__}: {exc}"


class _Thread:
    """One measuring thread's loop and tallies."""

    def __init__(self, run: Callable[[int, int], None], state: ThreadState) -> None:
        self.run = run
        self.state = state
        self.exceptions = 0
        self.errors: list[str] = []

    def measure(
        self,
        barrier: threading.Barrier,
        duration: float,
        budget: int | None,
        more: Callable[[], bool],
        overtime: float,
        max_batch: int,
    ) -> None:
        run, st = self.run, self.state
        limit = KEY_STRIDE if budget is None else budget
        batch = 1
        done = 0
        barrier.wait()
        deadline = perf_counter() + duration
        cutoff = deadline + overtime
        while done < limit:
            n = min(batch, limit - done)
            started = perf_counter()
            try:
                run(st.first + done, n)
            except Exception as exc:
                self.exceptions += 1
                if len(self.errors) < _SAMPLES:
                    self.errors.append(_describe(exc))
            done += n
            now = perf_counter()
            if budget is None and now >= deadline and (now >= cutoff or not more()):
                break
            if batch < max_batch and now - started < BATCH_SECONDS:
                batch = min(2 * batch, max_batch)
        st.ops = done


def run_cell(
    workload: Workload,
    factory: Callable[[], BenchMap],
    threads: int,
    *,
    duration: float,
    ops_per_thread: int | None = None,
) -> CellOutcome:
    """Measure ``workload`` on a fresh map from ``factory`` with ``threads`` threads.

    Bounded by ``duration`` seconds per thread, unless the workload (or the caller, with
    ``ops_per_thread``) fixes an operation budget per thread.
    """
    budget = workload.ops_per_thread(threads)
    if budget is None:
        budget = ops_per_thread
    stride = KEY_STRIDE if budget is None else budget
    m = factory()
    interval = sys.getswitchinterval()
    if workload.switch_interval is not None and gil_enabled():
        sys.setswitchinterval(workload.switch_interval)
    try:
        try:
            workload.setup(m, threads)
            states = [ThreadState(tid, first=tid * stride) for tid in range(threads)]
            loops = [_Thread(workload.worker(m, st, threads), st) for st in states]
        except Exception as exc:
            return CellOutcome(0, 0.0, exceptions=1, errors=[f"setup {_describe(exc)}"])

        def more() -> bool:
            return workload.more(states)

        barrier = threading.Barrier(threads + 1)
        workers = [
            threading.Thread(
                target=loop.measure,
                args=(
                    barrier,
                    duration,
                    budget,
                    more,
                    workload.overtime,
                    workload.max_batch or MAX_BATCH,
                ),
                name=f"bench-{workload.name}-{tid}",
                daemon=True,
            )
            for tid, loop in enumerate(loops)
        ]
        for w in workers:
            w.start()
        barrier.wait()
        started = perf_counter()
        patience = HANG_SECONDS + (duration + workload.overtime if budget is None else 0.0)
        for w in workers:
            w.join(max(0.0, started + patience - perf_counter()))
        seconds = perf_counter() - started
        if any(w.is_alive() for w in workers):
            # A map that deadlocks: its threads are daemons; report it and move on.
            hung = Verdict(known_state=False, problems=[f"did not finish in {patience:g} s"])
            return CellOutcome(sum(st.ops for st in states), seconds, verdict=hung)
        try:
            verdict = workload.verify(m, states, threads)
        except Exception as exc:
            verdict = Verdict(known_state=False, problems=[f"verification {_describe(exc)}"])
        errors = [e for loop in loops for e in loop.errors][:_SAMPLES]
        return CellOutcome(
            ops=sum(st.ops for st in states),
            seconds=seconds,
            exceptions=sum(loop.exceptions for loop in loops),
            anomalies=sum(st.anomalies for st in states),
            verdict=verdict,
            errors=errors,
            conclusive=workload.conclusive(states),
        )
    finally:
        sys.setswitchinterval(interval)
        close_map(m)


def plan(
    workloads: Sequence[Workload],
    impls: Sequence[Impl],
    thread_counts: Sequence[int],
    rounds: int,
) -> list[Cell]:
    """Every cell, implementations interleaved and rotated (see the module docstring)."""
    cells = []
    turn = 0
    for workload in workloads:
        for threads in thread_counts:
            if threads < workload.min_threads:
                continue
            for r in range(rounds):
                shift = turn % len(impls) if impls else 0
                turn += 1
                for impl in [*impls[shift:], *impls[:shift]]:
                    cells.append(Cell(workload, impl, threads, r))
    return cells
