"""PNG plots with matplotlib (the non-interactive Agg canvas; no window, no pyplot state).

- ``throughput-<family>.png``: one panel per workload, throughput against thread count,
  one line per implementation (log scale: implementations differ by orders of
  magnitude). A cell that failed its checks is marked with a red cross; the unsafe
  ``dict`` is a grey dashed line.
- ``latency.png``: single-thread nanoseconds per call of each operation, one bar per
  implementation (log scale); an implementation that failed a check anywhere in the run
  says so in the legend (its speed is no recommendation).
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .results import BenchResults

__all__ = ["latency_plot", "throughput_plots", "write_plots"]

_DPI = 110


# Matplotlib's default colors without its red (red marks failures) and grey (the unsafe
# dict), plus two more.
_PALETTE = ("C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9", "#1f1f7a", "#b8860b")


def _colors(names: list[str]) -> dict[str, str]:
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(names)}


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=_DPI)


def throughput_plots(results: BenchResults, out: Path) -> list[str]:
    """One PNG per workload family; returns the file names written."""
    impls = results.measured_impls()
    colors = _colors(impls)
    threads = results.thread_counts()
    names = []
    families = list(dict.fromkeys(w.family for w in results.workloads if results.cells(w.name)))
    for family in families:
        workloads = [w for w in results.workloads if w.family == family and results.cells(w.name)]
        ncols = min(4, len(workloads))
        nrows = math.ceil(len(workloads) / ncols)
        width, height = 4.2 * ncols, 3.0 * nrows + 1.7
        fig = Figure(figsize=(width, height))
        # Fixed margins (in inches, converted): much faster than a constrained layout.
        fig.subplots_adjust(
            left=0.75 / width,
            right=1 - 0.2 / width,
            top=1 - 0.9 / height,
            bottom=1.2 / height,
            hspace=0.55,
            wspace=0.3,
        )
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax in axes.flat[len(workloads) :]:
            ax.set_visible(False)
        for ax, w in zip(axes.flat, workloads, strict=False):
            for name in impls:
                cells = [results.cell(w.name, name, t) for t in threads]
                pts = [(t, c) for t, c in zip(threads, cells, strict=True) if c and c.throughput]
                if not pts:
                    continue
                safe = results.impl(name).safe
                ax.plot(
                    [t for t, _ in pts],
                    [c.throughput for _, c in pts],
                    marker="o",
                    markersize=4,
                    color="grey" if not safe else colors[name],
                    linestyle="--" if not safe else "-",
                    label=f"{name} (unsafe)" if not safe else name,
                )
                bad = [(t, c.throughput) for t, c in pts if not c.correct]
                if bad:
                    ax.scatter(*zip(*bad, strict=True), marker="x", s=80, color="red", zorder=5)
            ax.set_title(w.name, fontsize=10)
            ax.set_yscale("log")
            ax.set_xscale("log", base=2)
            ax.set_xticks(threads, [str(t) for t in threads])
            ax.minorticks_off()
            ax.set_xlabel("threads", fontsize=8)
            ax.set_ylabel("ops/s", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(True, alpha=0.3)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncols=min(5, len(labels)), frameon=False)
        fig.suptitle(f"Throughput vs threads: {family} (red x: failed its checks)")
        name = f"throughput-{family}.png"
        _save(fig, out / name)
        names.append(name)
    return names


def latency_plot(results: BenchResults, out: Path) -> str | None:
    """The per-operation latency chart; ``None`` when no latency was measured."""
    if not results.latency:
        return None
    impls = list(dict.fromkeys(r.impl for r in results.latency))
    ops = list(dict.fromkeys(r.op for r in results.latency))
    colors = _colors(results.measured_impls() or impls)
    by = {(r.impl, r.op): r for r in results.latency}
    failed = {m.impl for m in results.measurements if not m.correct}
    height = 0.8 / len(impls)
    fig = Figure(figsize=(10, 0.5 + 0.22 * len(ops) * len(impls)), layout="constrained")
    ax = fig.add_subplot()
    for j, name in enumerate(impls):
        ys, widths, errs = [], [], []
        for i, op in enumerate(ops):
            r = by.get((name, op))
            if r is None:
                continue
            ys.append(i + j * height)
            widths.append(r.median_ns)
            errs.append(max(0.0, r.p90_ns - r.median_ns))
        safe = results.impl(name).safe if name in results.measured_impls() else True
        label = f"{name} (unsafe)" if not safe else name
        if name in failed:
            label += " (failed checks)"
        ax.barh(
            ys,
            widths,
            height=height,
            xerr=[[0.0] * len(errs), errs],
            color="lightgrey" if not safe else colors.get(name, "C0"),
            label=label,
            error_kw={"elinewidth": 0.6, "capsize": 1.5},
        )
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(ops))], ops)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ns per call, one thread (bar: median; whisker: 90th percentile)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Per-operation latency")
    _save(fig, out / "latency.png")
    return "latency.png"


def write_plots(results: BenchResults, out: Path) -> list[str]:
    """Every plot; returns the file names written into ``out``."""
    names = throughput_plots(results, out)
    latency = latency_plot(results, out)
    return names + ([latency] if latency else [])
