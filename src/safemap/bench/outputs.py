"""Write a run's files into ``--out DIR``: ``results.json``, the PNG plots,
``report.html`` (plots embedded) and ``SUMMARY.md`` (plots linked).

:func:`prepare_out` is called before anything is measured, so a path that cannot hold
the outputs (an existing file, a path under a file, a directory that cannot be written)
ends the command at once instead of after the whole run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .plots import write_plots
from .report import report_html
from .results import BenchResults
from .summary import summary_markdown

__all__ = ["FIXED_FILES", "prepare_out", "write_outputs"]

FIXED_FILES: tuple[str, ...] = ("results.json", "report.html", "SUMMARY.md")
"""The output files whose names do not depend on the run (the PNGs' names do)."""


def prepare_out(out: Path) -> None:
    """Create ``out`` (and its parents) if needed and check that the outputs can be
    written into it; raise ``OSError`` saying why not."""
    out.mkdir(parents=True, exist_ok=True)
    for name in FIXED_FILES:
        if (out / name).is_dir():
            raise IsADirectoryError(f"{out / name} is a directory, not a file")
    # Creating (and removing) a file is the one check that covers permissions, read-only
    # file systems and every other reason a later write would fail.
    with tempfile.NamedTemporaryFile(dir=out, prefix=".safemap-bench-", suffix=".tmp"):
        pass


def write_outputs(results: BenchResults, out: Path) -> list[Path]:
    """Write every output file into ``out`` (created if needed); return their paths."""
    prepare_out(out)
    written = [out / "results.json"]
    written[0].write_text(results.to_json(), encoding="utf-8")
    plots = write_plots(results, out)
    written += [out / p for p in plots]
    (out / "report.html").write_text(report_html(results, out, plots), encoding="utf-8")
    (out / "SUMMARY.md").write_text(summary_markdown(results, plots), encoding="utf-8")
    written += [out / "report.html", out / "SUMMARY.md"]
    return written
