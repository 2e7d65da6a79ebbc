"""The recommendation: per workload, the fastest implementation that is correct.

Rules, in order:

1. **Eligible** implementations are those that are safe (never the bare ``dict``), that
   can perform every operation the workload uses atomically (an adapter's
   ``non_atomic`` operations disqualify it), and whose every measured cell of the
   workload passed its checks (no exception, no wrong result, no lost update).
2. Each eligible implementation's **score** is the geometric mean of its throughput over
   the thread counts measured (so no single thread count decides alone).
3. The highest score wins. The recommendation says by how much it beats the runner-up
   (``speedup``), how close it comes to the unsynchronized ``dict`` when that was
   measured (``limit_ratio``), and why, in words: the workload's profile and the
   winner's strength. On a GIL build, where calls take turns, the strength named is what
   makes the winner's calls cheap (``cost``); with parallel threads, what lets them
   overlap (``strength``). A winner within 5% of the runner-up is called a tie.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .results import BenchResults, ImplInfo, Measurement, Recommendation, WorkloadInfo

__all__ = ["TIE", "eligible", "recommend", "recommend_workload", "score"]

TIE = 1.05
"""A winner less than this factor ahead of the runner-up is reported as a tie."""


def score(cells: Sequence[Measurement]) -> float:
    """Geometric mean throughput over ``cells`` (0 if any is 0)."""
    rates = [c.throughput for c in cells]
    if not rates or min(rates) <= 0:
        return 0.0
    return math.exp(sum(math.log(r) for r in rates) / len(rates))


def eligible(impl: ImplInfo, workload: WorkloadInfo, cells: Sequence[Measurement]) -> bool:
    """Whether ``impl`` may be recommended for ``workload`` given its measured ``cells``."""
    return (
        impl.safe
        and impl.available
        and not set(workload.ops) & set(impl.non_atomic)
        and bool(cells)
        and all(c.correct for c in cells)
    )


def recommend_workload(
    workload: WorkloadInfo,
    impls: Sequence[ImplInfo],
    cells: Sequence[Measurement],
    *,
    gil: bool = False,
) -> Recommendation:
    """The recommendation for one workload from its measured ``cells``."""
    by_impl = {i.name: [c for c in cells if c.impl == i.name] for i in impls}
    ranked = sorted(
        ((score(by_impl[i.name]), i.name) for i in impls if eligible(i, workload, by_impl[i.name])),
        reverse=True,
    )
    ranked = [(s, name) for s, name in ranked if s > 0]
    limit = next((score(by_impl[i.name]) for i in impls if not i.safe and by_impl[i.name]), 0.0)
    if not ranked:
        return Recommendation(
            workload.name, None, None, None, None, "no implementation measured was correct"
        )
    best_score, best = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else None
    speedup = best_score / ranked[1][0] if len(ranked) > 1 else None
    info = next(i for i in impls if i.name == best)
    why = (info.cost if gil else info.strength) or "the fastest correct map measured"
    reason = f"{workload.profile}; {best}: {why}"
    if speedup is not None and speedup < TIE:
        reason += f" (a tie with {runner_up}: either is fine)"
    return Recommendation(
        workload=workload.name,
        impl=best,
        runner_up=runner_up,
        speedup=speedup,
        limit_ratio=best_score / limit if limit > 0 else None,
        reason=reason,
    )


def recommend(results: BenchResults) -> list[Recommendation]:
    """A recommendation for every workload in ``results``."""
    measured = set(results.measured_impls())
    impls = [i for i in results.implementations if i.name in measured]
    gil = bool(results.environment.get("gil_enabled", False))
    return [
        recommend_workload(w, impls, results.cells(w.name), gil=gil)
        for w in results.workloads
        if results.cells(w.name)
    ]
