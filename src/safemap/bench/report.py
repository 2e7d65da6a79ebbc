"""``report.html``: one self-contained page (styles inline, plots embedded as base64 PNG).

It holds what the terminal shows and more: the environment, the recommendations, the
throughput tables at every thread count, the failures in detail, the plots, every
workload's definition and the skipped implementations.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

from .advisor import RULES
from .results import BenchResults
from .view import KINDS, grid, recommendation_cells

__all__ = ["report_html"]

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1500px;
       color: #1d1d1f; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d0d0d7; padding: 3px 8px; vertical-align: top; }
th, td.key { background: #f2f2f5; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { color: #0a7d28; font-weight: bold; background: #eaf7ee; }
td.failed { color: #fff; background: #c62828; font-weight: bold; white-space: normal;
            min-width: 7em; }
.wide { overflow-x: auto; max-width: 100%; }
td.unsafe { color: #888; font-style: italic; }
td.non_atomic { color: #9a6700; }
td.missing { color: #aaa; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; }
.muted { color: #666; } code { background: #f2f2f5; padding: 0 3px; }
img { max-width: 100%; border: 1px solid #e0e0e5; margin: 8px 0; }
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]]) -> str:
    """``rows`` of ``(text, css class)``; texts are escaped here. No header if empty."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if header else ""
    body = "".join(
        "<tr>" + "".join(f'<td class="{cls}">{escape(text)}</td>' for text, cls in row) + "</tr>"
        for row in rows
    )
    return f'<div class="wide"><table>{thead}<tbody>{body}</tbody></table></div>'


def _environment(results: BenchResults) -> str:
    env = results.environment
    rows = [
        ("Python", f"{env['python']} ({env['implementation']}, {env['build']})"),
        ("machine", f"{env['processor']}, {env['cpu_count']} CPUs"),
        ("load average before the run", str(env.get("load_average"))),
        ("platform", env["platform"]),
        ("safemap", env["safemap"]),
        ("command", results.command),
        ("created", results.created),
        (
            "config",
            ", ".join(f"{k}={v}" for k, v in results.config.items() if v not in ((), [], None)),
        ),
    ]
    return _table([], [[(k, "key"), (str(v), "")] for k, v in rows])


def _recommendations(results: BenchResults) -> str:
    rows = []
    for rec in results.recommendations:
        impl, margin, limit = recommendation_cells(rec)
        rows.append(
            [(rec.workload, ""), (impl, "best"), (margin, ""), (limit, "num"), (rec.reason, "")]
        )
    return _table(["workload", "use", "ahead of", "of dict limit", "why"], rows)


def _throughput(results: BenchResults, threads: int) -> str:
    g = grid(results, threads)
    header = ["workload"] + [f"{n} (unsafe)" if not results.impl(n).safe else n for n in g.impls]
    rows = [[(name, ""), *((c.text, f"num {c.kind}") for c in cells)] for name, cells, _ in g.rows]
    return _table(header, rows)


def _failures(results: BenchResults) -> str:
    failed = [m for m in results.measurements if not m.correct]
    if not failed:
        return "<p>Every implementation passed every check in this run.</p>"
    rows = [
        [
            (m.workload, ""),
            (m.impl, "failed"),
            (str(m.threads), "num"),
            (m.failure_summary(), ""),
            ("; ".join(m.problems), ""),
        ]
        for m in failed
    ]
    return _table(["workload", "implementation", "threads", "found", "details"], rows)


def _definitions(results: BenchResults) -> str:
    rows = [
        [
            (w.name, ""),
            (w.family, ""),
            (w.description, ""),
            (w.anchor, "muted"),
            ("exact final state" if w.known_state else "invariants", ""),
        ]
        for w in results.workloads
    ]
    return _table(["workload", "family", "per operation", "anchor", "checked"], rows)


def _skipped(results: BenchResults) -> str:
    skipped = [i for i in results.implementations if not i.available]
    if not skipped:
        return ""
    rows = [
        [(i.name, ""), (i.install or "", ""), (i.skipped_reason or "", "muted")] for i in skipped
    ]
    return "<h2>Skipped implementations</h2>" + _table(
        ["implementation", "install with", "reason"], rows
    )


def _plots(out: Path, plots: Sequence[str]) -> str:
    parts = []
    for name in plots:
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        parts.append(f'<img alt="{escape(name)}" src="data:image/png;base64,{data}">')
    return "\n".join(parts)


def report_html(results: BenchResults, out: Path, plots: Sequence[str]) -> str:
    """The page, with the PNGs named in ``plots`` (files in ``out``) embedded."""
    legend = "".join(
        f'<tr><td class="num {k}">{escape(s)}</td><td>{escape(KINDS[k])}</td></tr>'
        for k, s in (("best", "123k"), ("failed", "✗"), ("unsafe", "123k"), ("non_atomic", "123k*"))
    )
    gil = f'<p class="note">{escape(RULES)}</p>'
    if results.environment.get("gil_enabled", True):
        gil += (
            '<p class="note">Measured on a GIL build: Python threads take turns, so more '
            "threads never add throughput; the ranking reflects the cost of each call and of "
            "contention for the GIL.</p>"
        )
    body = [
        "<h1>safemap bench</h1>",
        f'<p class="muted">{escape(results.created)} · schema <code>{escape(results.schema)}'
        "</code> · definitions and schema in <code>docs/bench.md</code></p>",
        _environment(results),
        gil,
        "<h2>Recommendations</h2>",
        "<p>Per workload, the fastest implementation that passed every check, with its lead "
        "over the runner-up and its throughput as a share of the unsynchronized dict.</p>",
        _recommendations(results),
    ]
    for threads in results.thread_counts():
        body += [
            f"<h2>Throughput at {threads} thread{'s' if threads != 1 else ''} (ops/s)</h2>",
            _throughput(results, threads),
        ]
    body += [f"<table>{legend}</table>", "<h2>Correctness</h2>", _failures(results)]
    body += ["<h2>Plots</h2>", _plots(out, plots)]
    body += ["<h2>Workloads</h2>", _definitions(results), _skipped(results)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>safemap bench</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
