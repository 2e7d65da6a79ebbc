"""The advisor's choice on synthetic results: the fastest correct, safe, atomic map."""

from __future__ import annotations

import pytest

from safemap.bench.advisor import TIE, recommend, score
from safemap.bench.results import (
    BenchResults,
    ImplInfo,
    Measurement,
    RoundResult,
    WorkloadInfo,
)

IMPLS = [
    ImplInfo("Fast", "safemap", True, True, strength="it is fast", cost="it is cheap"),
    ImplInfo("Slow", "safemap", True, True, strength="it is slow"),
    ImplInfo("dict", "peer", False, True, strength="no guard"),
    ImplInfo(
        "Partial", "peer", True, True, strength="lock-free", non_atomic=("compare_and_delete",)
    ),
]


def _workload(name: str, ops: tuple[str, ...] = ("load",)) -> WorkloadInfo:
    return WorkloadInfo(name, "test", "anchor", "desc", "reads dominate", ops, True, "duration")


def _cell(workload: str, impl: str, threads: int, rate: float, **checks: int) -> Measurement:
    return Measurement(workload, impl, threads, [RoundResult(int(rate), 1.0)], **checks)


def _results(
    cells: list[Measurement], workloads: list[WorkloadInfo], gil: bool = False
) -> BenchResults:
    return BenchResults("now", "test", {"gil_enabled": gil}, {}, IMPLS, workloads, cells)


def _rates(**rates: float) -> list[Measurement]:
    return [_cell("W", impl, t, rate) for impl, rate in rates.items() for t in (1, 2)]


def test_the_unsafe_dict_is_never_recommended_even_when_fastest() -> None:
    results = _results(_rates(Fast=200, Slow=100, dict=1000, Partial=50), [_workload("W")])
    (rec,) = recommend(results)
    assert rec.impl == "Fast"
    assert rec.runner_up == "Slow"
    assert rec.speedup == pytest.approx(2.0)
    assert rec.limit_ratio == pytest.approx(0.2)
    assert rec.reason == "reads dominate; Fast: it is fast"


def test_a_broken_implementation_is_never_recommended() -> None:
    cells = _rates(Slow=100, dict=50, Partial=10)
    cells += [_cell("W", "Fast", 1, 500), _cell("W", "Fast", 2, 500, lost=3)]
    (rec,) = recommend(_results(cells, [_workload("W")]))
    assert rec.impl == "Slow"


@pytest.mark.parametrize("check", ["exceptions", "anomalies", "lost"])
def test_every_kind_of_failure_disqualifies(check: str) -> None:
    cells = _rates(Slow=100)
    cells += [_cell("W", "Fast", 1, 500), _cell("W", "Fast", 2, 500, **{check: 1})]
    (rec,) = recommend(_results(cells, [_workload("W")]))
    assert rec.impl == "Slow"


def test_non_atomic_operations_disqualify_only_where_used() -> None:
    workloads = [_workload("W"), _workload("CAD", ("compare_and_delete",))]
    cells = _rates(Fast=100, Partial=300)
    cells += [
        _cell("CAD", impl, t, rate)
        for impl, rate in (("Fast", 100), ("Partial", 300))
        for t in (1, 2)
    ]
    recs = {r.workload: r.impl for r in recommend(_results(cells, workloads))}
    assert recs == {"W": "Partial", "CAD": "Fast"}


def test_no_correct_implementation() -> None:
    cells = [_cell("W", "Fast", 1, 100, exceptions=2), _cell("W", "dict", 1, 500)]
    (rec,) = recommend(_results(cells, [_workload("W")]))
    assert rec.impl is None and rec.speedup is None
    assert "no implementation" in rec.reason


def test_a_near_tie_says_so() -> None:
    (rec,) = recommend(_results(_rates(Fast=102, Slow=100), [_workload("W")]))
    assert rec.impl == "Fast" and rec.speedup is not None and rec.speedup < TIE
    assert "a tie with Slow" in rec.reason


def test_score_is_the_geometric_mean_over_thread_counts() -> None:
    # Fast wins at 1 thread, Slow scales better: the geometric mean decides.
    cells = [
        _cell("W", "Fast", 1, 400),
        _cell("W", "Fast", 2, 100),
        _cell("W", "Slow", 1, 150),
        _cell("W", "Slow", 2, 300),
    ]
    assert score(cells[:2]) == pytest.approx(200)
    (rec,) = recommend(_results(cells, [_workload("W")]))
    assert rec.impl == "Slow"


def test_the_reason_names_call_cost_on_a_gil_build() -> None:
    cells = _rates(Fast=200, Slow=100)
    (rec,) = recommend(_results(cells, [_workload("W")], gil=True))
    assert rec.reason == "reads dominate; Fast: it is cheap"


def _rounds(workload: str, impl: str, *rates: float) -> list[Measurement]:
    rounds = [RoundResult(int(r), 1.0) for r in rates]
    return [Measurement(workload, impl, t, list(rounds)) for t in (1, 2)]


def test_a_lead_within_the_round_to_round_spread_is_a_tie() -> None:
    # Fast's median is 10% ahead, but its own rounds vary by 50%: a run could reverse it.
    cells = _rounds("W", "Fast", 110, 85, 140) + _rounds("W", "Slow", 100, 100, 100)
    (rec,) = recommend(_results(cells, [_workload("W")]))
    assert rec.impl == "Fast" and rec.speedup == pytest.approx(1.1)
    assert "a tie with Slow: 10% apart, within the 50% round-to-round spread" in rec.reason


def test_a_lead_beyond_the_round_to_round_spread_is_not_a_tie() -> None:
    cells = _rounds("W", "Fast", 200, 205, 210) + _rounds("W", "Slow", 100, 101, 102)
    (rec,) = recommend(_results(cells, [_workload("W")]))
    assert rec.impl == "Fast" and "tie" not in rec.reason


@pytest.mark.parametrize(
    ("ops", "note"),
    [
        (("load", "store", "delete", "load_or_store", "load_and_delete", "clear"), None),
        (("swap", "delete"), "the dict limit runs swap as unsafe Python code"),
        (("compare_and_swap", "range"), "runs compare_and_swap, range as unsafe Python code"),
    ],
)
def test_the_reason_says_where_the_dict_limit_is_a_python_idiom(
    ops: tuple[str, ...], note: str | None
) -> None:
    (rec,) = recommend(_results(_rates(Fast=200, Slow=100, dict=300), [_workload("W", ops)]))
    if note is None:
        assert "dict limit" not in rec.reason
    else:
        assert note in rec.reason


def test_a_share_above_the_dict_limit_is_called_noise() -> None:
    # Through the same single calls a safe map cannot beat dict: above 100% is variation.
    cells = _rounds("W", "Fast", 120, 80, 150) + _rounds("W", "dict", 100, 100, 100)
    cells += _rounds("W", "Slow", 50, 50, 50)
    (rec,) = recommend(_results(cells, [_workload("W")]))
    assert rec.limit_ratio == pytest.approx(1.2)
    assert "120% of the dict limit is noise: within the 58% round-to-round spread" in rec.reason
