"""The atomicity checks: every compound operation the bench measures has a workload that
a check-then-act version of that operation fails in every run that was conclusive (its
threads reached their overlaps), on GIL and free-threaded builds, while the correct maps
never fail it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
from support.bench import CHECK_THEN_ACT

import safemap
from safemap.bench.atomicity import OVERLAPS, SWITCH_INTERVAL, atomicity_workloads
from safemap.bench.catalog import all_workloads
from safemap.bench.runner import CellOutcome, run_cell
from safemap.bench.workload import ThreadState, Workload
from safemap.native import ConcurrentMap, SyncMap

RUNS = 3  # the broken map must fail every one of them
ATTEMPTS = 10  # cells tried per required run, at most, to get a conclusive one
THREADS = 2

RACES = {w.name: w for w in atomicity_workloads()}
BY_OP = {
    "load_or_store": "LoadOrStoreRace",
    "load_and_delete": "LoadAndDeleteRace",
    "swap": "SwapRace",
    "compare_and_swap": "CompareAndSwapRace",
    "compare_and_delete": "CompareAndDeleteRace",
    "compute_if_present": "ComputeIfPresentRace",
    "merge": "MergeRace",
}


def _failed(outcome: CellOutcome) -> bool:
    return bool(
        outcome.exceptions or outcome.anomalies or outcome.verdict.lost or outcome.verdict.problems
    )


def _run(workload: Workload, factory: Callable[[], Any]) -> CellOutcome:
    # The --quick duration: the workload's own minimum for several threads applies.
    return run_cell(workload, factory, THREADS, duration=0.03)


def _conclusive_runs(workload: Workload, factory: Callable[[], Any]) -> list[CellOutcome]:
    """Up to RUNS conclusive outcomes, from at most RUNS * ATTEMPTS cells.

    A cell whose threads ran out of overtime before reaching their overlaps (a machine
    saturated by other work) had no real chance to interleave a composed operation: it is
    run again instead of counted, whether it passed or not.
    """
    outcomes: list[CellOutcome] = []
    for _ in range(RUNS * ATTEMPTS):
        outcome = _run(workload, factory)
        if outcome.conclusive:
            outcomes.append(outcome)
            if len(outcomes) == RUNS:
                break
    return outcomes


def test_every_compound_operation_measured_has_an_atomicity_check() -> None:
    compound = {"load_or_store", "load_and_delete", "swap", "compare_and_swap"}
    compound |= {"compare_and_delete", "compute_if_present", "merge"}
    measured = {op for w in all_workloads(capacity=64) for op in w.info.ops}
    assert compound <= measured
    assert set(BY_OP) == compound == set(CHECK_THEN_ACT)
    for op, name in BY_OP.items():
        assert op in RACES[name].info.ops


@pytest.mark.timeout(300)
@pytest.mark.parametrize("op", sorted(BY_OP))
def test_a_check_then_act_operation_fails_every_run(op: str) -> None:
    workload, broken = RACES[BY_OP[op]], CHECK_THEN_ACT[op]
    outcomes = _conclusive_runs(workload, broken)
    assert outcomes, (
        f"none of {RUNS * ATTEMPTS} cells reached {OVERLAPS} overlaps per thread: "
        "the machine is too busy for the threads to race, nothing was tested"
    )
    assert all(_failed(o) for o in outcomes), [
        (o.anomalies, o.verdict.lost, o.verdict.problems) for o in outcomes
    ]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("factory", [safemap.LockedMap, ConcurrentMap, SyncMap])
def test_correct_maps_pass_every_atomicity_check(factory: Callable[[], Any]) -> None:
    # Conclusive or not: a correct map must never fail, however its threads overlapped.
    for workload in RACES.values():
        outcome = _run(workload, factory)
        assert not _failed(outcome), (workload.name, outcome)
        assert outcome.verdict.known_state


def _states(*overlaps: int) -> list[ThreadState]:
    return [ThreadState(tid, first=0, data={"overlaps": n}) for tid, n in enumerate(overlaps)]


def test_a_race_is_conclusive_once_every_thread_reached_its_overlaps() -> None:
    race = RACES["MergeRace"]
    assert race.conclusive(_states(OVERLAPS, OVERLAPS + 5))
    assert not race.more(_states(OVERLAPS, OVERLAPS + 5))
    # One thread short: the cell goes on, and if overtime ends it there, it proves nothing.
    assert not race.conclusive(_states(OVERLAPS - 1, OVERLAPS + 5))
    assert race.more(_states(OVERLAPS - 1, OVERLAPS + 5))
    # One thread cannot race: never conclusive, and no overtime spent waiting for it.
    assert not race.conclusive(_states(OVERLAPS))
    assert not race.more(_states(OVERLAPS))


def test_the_outcome_says_whether_the_cell_was_conclusive() -> None:
    race = RACES["MergeRace"]
    assert not run_cell(race, safemap.LockedMap, 1, duration=0.0).conclusive
    other = next(w for w in all_workloads(capacity=64) if w.info.family != "atomicity")
    assert run_cell(other, safemap.LockedMap, 1, duration=0.0).conclusive


@pytest.mark.skipif(
    not getattr(sys, "_is_gil_enabled", lambda: True)(),
    reason="the switch interval only exists for the GIL: free-threaded runs leave it alone",
)
def test_the_switch_interval_is_lowered_for_the_cell_and_restored() -> None:
    seen: list[float] = []
    workload = RACES["MergeRace"]

    class Spy(safemap.LockedMap[Any, Any]):
        def merge(self, key: Any, value: Any, fn: Callable[[Any, Any], Any]) -> Any:
            seen.append(sys.getswitchinterval())  # by both threads: list.append is atomic
            return super().merge(key, value, fn)

    before = sys.getswitchinterval()
    _run(workload, Spy)
    assert sys.getswitchinterval() == before
    assert seen and all(v == pytest.approx(SWITCH_INTERVAL) for v in seen)


def test_races_are_planned_only_with_two_threads_or_more() -> None:
    # One thread cannot race: a 1-thread cell of a race workload would only cost time.
    from safemap.bench.registry import discover
    from safemap.bench.runner import plan

    impls = discover()[0][:2]
    races = atomicity_workloads()
    cells = plan(races, impls, (1, 2), rounds=2)
    assert cells and {c.threads for c in cells} == {2}
    assert len(cells) == len(races) * len(impls) * 2
