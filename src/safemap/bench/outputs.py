"""Write a run's files into ``--out DIR``: ``results.json``, the PNG plots,
``report.html`` (plots embedded) and ``SUMMARY.md`` (plots linked)."""

from __future__ import annotations

from pathlib import Path

from .plots import write_plots
from .report import report_html
from .results import BenchResults
from .summary import summary_markdown

__all__ = ["write_outputs"]


def write_outputs(results: BenchResults, out: Path) -> list[Path]:
    """Write every output file into ``out`` (created if needed); return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json"]
    written[0].write_text(results.to_json(), encoding="utf-8")
    plots = write_plots(results, out)
    written += [out / p for p in plots]
    (out / "report.html").write_text(report_html(results, out, plots), encoding="utf-8")
    (out / "SUMMARY.md").write_text(summary_markdown(results, plots), encoding="utf-8")
    written += [out / "report.html", out / "SUMMARY.md"]
    return written
