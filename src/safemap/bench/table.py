"""The terminal output: rich tables of throughput, recommendations and skipped peers."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .advisor import RULES
from .results import BenchResults
from .view import KINDS, grid, recommendation_cells

__all__ = ["STYLES", "recommendations_table", "render", "results_table"]

STYLES = {
    "best": "bold green",
    "ok": "",
    "failed": "bold red",
    "unsafe": "dim italic",
    "non_atomic": "yellow",
    "missing": "dim",
}


def results_table(results: BenchResults, threads: int) -> Table:
    """Throughput of every implementation on every workload at ``threads`` threads."""
    g = grid(results, threads)
    env = results.environment
    table = Table(
        title=f"Throughput, ops/s of all threads together, at {threads} thread"
        f"{'s' if threads != 1 else ''} (Python {env['python']}, {env['build']}, "
        f"{env['cpu_count']} CPUs)",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("workload", no_wrap=True)
    for name in g.impls:
        label = f"{name} (unsafe)" if not results.impl(name).safe else name
        table.add_column(label, justify="right")
    table.add_column("use", no_wrap=True)
    for workload, cells, rec in g.rows:
        use = Text("")
        if rec is not None:
            impl, margin, _ = recommendation_cells(rec)
            use = Text(impl + (f" ({margin.split(' ')[0]})" if margin else ""), "bold green")
        table.add_row(workload, *(Text(c.text, STYLES[c.kind]) for c in cells), use)
    return table


def recommendations_table(results: BenchResults) -> Table:
    """Per workload: what to use, by how much it wins, and why."""
    table = Table(
        title="Recommendations",
        title_justify="left",
        header_style="bold",
        caption=RULES,
        caption_justify="left",
    )
    table.add_column("workload", no_wrap=True)
    table.add_column("use", style="bold green", no_wrap=True)
    table.add_column("ahead of")
    table.add_column("of dict limit", justify="right")
    table.add_column("why")
    for rec in results.recommendations:
        impl, margin, limit = recommendation_cells(rec)
        table.add_row(rec.workload, impl, margin, limit, rec.reason)
    return table


def _legend() -> Text:
    text = Text("Legend: ")
    for kind in ("best", "failed", "unsafe", "non_atomic"):
        sample = {"best": "fastest correct", "failed": "✗", "unsafe": "(unsafe)"}.get(kind, "*")
        text.append(sample, STYLES[kind])
        text.append(f" {KINDS[kind]}; ")
    return text


def _skipped(results: BenchResults) -> RenderableType | None:
    skipped = [i for i in results.implementations if not i.available]
    if not skipped:
        return None
    table = Table(title="Skipped (not installed here)", title_justify="left", header_style="bold")
    table.add_column("implementation")
    table.add_column("install with")
    table.add_column("reason", style="dim")
    for info in skipped:
        table.add_row(info.name, info.install or "", info.skipped_reason or "")
    return table


def render(results: BenchResults, console: Console) -> None:
    """Print the throughput table at every thread count, the recommendations, the
    legend and the skipped implementations."""
    parts: list[RenderableType] = [results_table(results, t) for t in results.thread_counts()]
    parts += [recommendations_table(results), _legend()]
    skipped = _skipped(results)
    if skipped is not None:
        parts.append(skipped)
    console.print(Group(*parts))
