"""The correctness checks: an intentionally broken map is flagged, whatever its speed."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support.bench import DoubleDelete, DroppingStore, LosingMerge, RaisingSwap

import safemap
from safemap.bench.config import preset
from safemap.bench.contention import Counter
from safemap.bench.gosync import GO_WORKLOADS
from safemap.bench.registry import Impl
from safemap.bench.runner import run_cell
from safemap.bench.session import Plan, run_plan
from safemap.bench.view import grid


def _go(name: str) -> object:
    return next(w for w in GO_WORKLOADS if w.name == name)


def test_lost_updates_of_a_merge_are_counted() -> None:
    outcome = run_cell(Counter(), LosingMerge, 2, duration=1, ops_per_thread=500)
    assert outcome.verdict.lost == 100  # every 10th of 1,000 increments
    assert outcome.verdict.problems == ["the counter reads 900 after 1000 increments"]


def test_a_store_that_drops_keys_is_caught_by_the_final_state() -> None:
    outcome = run_cell(_go("Range"), DroppingStore, 1, duration=1, ops_per_thread=10)
    assert outcome.verdict.lost == len(range(0, 1024, 7))
    assert any("missing" in p for p in outcome.verdict.problems)


def test_exceptions_are_counted_and_the_run_goes_on() -> None:
    outcome = run_cell(_go("SwapCollision"), RaisingSwap, 2, duration=1, ops_per_thread=1000)
    assert outcome.exceptions > 0
    assert outcome.errors and "RuntimeError: swap failed" in outcome.errors[0]
    assert outcome.ops == 2000


def test_a_key_deleted_twice_is_caught() -> None:
    outcome = run_cell(
        _go("LoadAndDeleteBalanced"), DoubleDelete, 2, duration=1, ops_per_thread=1024
    )
    assert any("deleted twice" in p for p in outcome.verdict.problems)


def test_wrong_results_are_anomalies() -> None:
    class AlwaysMiss(safemap.LockedMap):  # type: ignore[type-arg]
        def get(self, key: object, default: object = None, /) -> object:
            return default  # Load is called as get (the map's single call for it)

    outcome = run_cell(_go("LoadMostlyHits"), AlwaysMiss, 1, duration=1, ops_per_thread=2048)
    assert outcome.anomalies == 2046  # every hit became a miss (2 of 2048 are real misses)


def _impl(name: str, factory: object) -> Impl:
    return Impl(name, factory, "safemap", name, "it is fast")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("broken", "workload"),
    [(LosingMerge, "Counter"), (RaisingSwap, "SwapCollision"), (DroppingStore, "Range")],
)
def test_a_broken_map_is_flagged_and_never_recommended(broken: type, workload: str) -> None:
    from safemap.bench.catalog import all_workloads, select_workloads

    plan = Plan(
        config=replace(preset(quick=True), latency_rounds=0, ops=300),
        impls=[_impl("Broken", broken), _impl("LockedMap", safemap.LockedMap)],
        skipped=[],
        workloads=select_workloads(all_workloads(capacity=1024), [workload]),
    )
    results = run_plan(plan, command="test")
    assert all(not m.correct for m in results.cells(workload) if m.impl == "Broken")
    assert results.recommendations[0].impl == "LockedMap"
    for threads in results.thread_counts():
        cells = dict(
            zip(grid(results, threads).impls, grid(results, threads).rows[0][1], strict=True)
        )
        assert cells["Broken"].kind == "failed"
        assert "✗" in cells["Broken"].text


def test_an_insert_that_is_dropped_is_caught_by_conc_map_bench() -> None:
    from safemap.bench.bustle import BustleWorkload

    class DropsInserts(safemap.LockedMap):  # type: ignore[type-arg]
        def swap(self, key: object, value: object) -> tuple[object, bool]:
            if isinstance(key, int) and key % 5 == 0:
                return None, False  # claims to have inserted; stored nothing
            return super().swap(key, value)  # type: ignore[no-any-return]

    outcome = run_cell(BustleWorkload("RapidGrow", 2048), DropsInserts, 2, duration=1)
    assert outcome.verdict.lost > 0
    assert any("keys missing" in p for p in outcome.verdict.problems)
