"""What every output shows, decided once: the text and the kind of each table cell.

The terminal table (:mod:`.table`), ``SUMMARY.md`` (:mod:`.summary`) and ``report.html``
(:mod:`.report`) render the same :class:`Grid`; each maps a cell's ``kind`` to its own
styling (bold green, red, dim, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from .advisor import eligible
from .results import BenchResults, Recommendation

__all__ = ["KINDS", "Grid", "GridCell", "grid", "rate", "recommendation_cells"]

KINDS = {
    "best": "the recommended implementation",
    "ok": "correct",
    "failed": "lost data, returned a wrong result or raised: never recommended",
    "unsafe": "the bare dict: the unsynchronized limit, never recommended",
    "non_atomic": "needs operations this peer cannot do atomically: never recommended",
    "missing": "not measured",
}


def rate(ops_per_second: float) -> str:
    """A throughput, compact: ``812``, ``45.3k``, ``1.27M``."""
    if ops_per_second >= 1e6:
        return f"{ops_per_second / 1e6:.2f}M"
    if ops_per_second >= 1e4:
        return f"{ops_per_second / 1e3:.0f}k"
    if ops_per_second >= 1e3:
        return f"{ops_per_second / 1e3:.1f}k"
    return f"{ops_per_second:.0f}"


@dataclass(frozen=True)
class GridCell:
    text: str
    kind: str  # a key of KINDS


@dataclass(frozen=True)
class Grid:
    """Throughput per workload (rows) and implementation (columns) at one thread count."""

    threads: int
    impls: list[str]
    rows: list[tuple[str, list[GridCell], Recommendation | None]]


def grid(results: BenchResults, threads: int) -> Grid:
    """The table of ``results`` at ``threads`` threads."""
    impls = results.measured_impls()
    infos = {name: results.impl(name) for name in impls}
    rows = []
    for w in results.workloads:
        if not results.cells(w.name):
            continue
        rec = results.recommendation(w.name)
        cells = []
        for name in impls:
            m = results.cell(w.name, name, threads)
            info = infos[name]
            if m is None:
                cells.append(GridCell("-", "missing"))
            elif not m.correct:
                cells.append(GridCell(f"{rate(m.throughput)} ✗ {m.failure_summary()}", "failed"))
            elif not info.safe:
                cells.append(GridCell(rate(m.throughput), "unsafe"))
            elif not eligible(info, w, [m]):
                cells.append(GridCell(rate(m.throughput) + "*", "non_atomic"))
            elif rec is not None and rec.impl == name:
                cells.append(GridCell(rate(m.throughput), "best"))
            else:
                cells.append(GridCell(rate(m.throughput), "ok"))
        rows.append((w.name, cells, rec))
    return Grid(threads, impls, rows)


def recommendation_cells(rec: Recommendation) -> tuple[str, str, str]:
    """``(implementation, margin, share of the dict limit)`` as short texts."""
    if rec.impl is None:
        return "none", "", ""
    margin = f"{rec.speedup:.2f}x {rec.runner_up}" if rec.speedup and rec.runner_up else ""
    limit = f"{rec.limit_ratio:.0%}" if rec.limit_ratio else ""
    return rec.impl, margin, limit
