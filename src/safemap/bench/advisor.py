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
   overlap (``strength``).
4. A winner is called a **tie** with the runner-up when its lead is under 5%, or within
   the round-to-round spread measured for either of the two (the largest
   ``(max - min) / median`` of a cell's round throughputs): a lead smaller than the
   variation between repetitions of the same cell is noise, and another run could
   reverse it. The reason says which.
5. The bare ``dict`` is a true limit only for the operations it does in one call of its
   own (:data:`~.protocol.DICT_CALLS`); where a workload uses another one (``swap``,
   compare-and-swap, ``merge``, ...), the reason says that the limit is ``dict``'s unsafe
   Python idiom for it, which native code can beat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .protocol import DICT_CALLS
from .results import BenchResults, ImplInfo, Measurement, Recommendation, WorkloadInfo

__all__ = ["RULES", "TIE", "eligible", "recommend", "recommend_workload", "score", "spread"]

TIE = 1.05
"""A winner less than this factor ahead of the runner-up is reported as a tie."""

RULES = (
    "A winner less than 5% ahead of the runner-up, or ahead by less than the "
    "round-to-round spread measured for either (the largest (max - min) / median of a "
    'cell\'s rounds), is called a tie: another run could reverse it. "of dict limit" '
    "compares with the bare dict called through its own single calls (get, d[k] = v, "
    "setdefault, pop, clear); where a workload uses an operation dict has no single call "
    "for, the limit is dict's unsafe Python idiom, as the reason says."
)
"""How to read the recommendations, in words (printed by every output)."""


def score(cells: Sequence[Measurement]) -> float:
    """Geometric mean throughput over ``cells`` (0 if any is 0)."""
    rates = [c.throughput for c in cells]
    if not rates or min(rates) <= 0:
        return 0.0
    return math.exp(sum(math.log(r) for r in rates) / len(rates))


def spread(cells: Sequence[Measurement]) -> float:
    """The largest round-to-round variation of ``cells``: ``(max - min) / median`` of a
    cell's round throughputs (0 when no cell has two rounds)."""
    worst = 0.0
    for cell in cells:
        rates = [r.throughput for r in cell.rounds]
        middle = cell.throughput
        if len(rates) > 1 and middle > 0:
            worst = max(worst, (max(rates) - min(rates)) / middle)
    return worst


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
    if speedup is not None and runner_up is not None:
        noise = max(spread(by_impl[best]), spread(by_impl[runner_up]))
        if speedup < TIE:
            reason += f" (a tie with {runner_up}: under {TIE - 1:.0%} apart, either is fine)"
        elif speedup - 1 <= noise:
            reason += (
                f" (a tie with {runner_up}: {speedup - 1:.0%} apart, within the "
                f"{noise:.0%} round-to-round spread; either is fine)"
            )
    idioms = sorted(set(workload.ops) - DICT_CALLS)
    if limit > 0 and idioms:
        reason += (
            f"; the dict limit runs {', '.join(idioms)} as unsafe Python code (dict has no "
            "single call for it), which native code can beat"
        )
    elif limit > 0 and best_score > limit:
        # Measured through the same single calls, a safe map does more work than dict:
        # a share above 100% is the variation between rounds, not a faster map.
        bare = next(i.name for i in impls if not i.safe and by_impl[i.name])
        noise = max(spread(by_impl[best]), spread(by_impl[bare]))
        reason += f"; {best_score / limit:.0%} of the dict limit is noise: " + (
            f"within the {noise:.0%} round-to-round spread"
            if best_score / limit - 1 <= noise
            else "more than the round-to-round spread: rerun on a quieter machine"
        )
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
