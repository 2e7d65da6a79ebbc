"""``safemap bench``: the subcommand's arguments, and the glue that runs
:mod:`safemap.bench` with a progress bar and prints or writes its outputs.

Nothing heavy is imported until the subcommand runs, so the rest of the command works
without the ``bench`` extra (rich, matplotlib).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

_EXTRA = "safemap bench needs the 'bench' extra: pip install 'safemap[bench]'"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):  # nan and inf are floats too
        raise argparse.ArgumentTypeError(f"must be a finite positive number, not {text}")
    return value


def _thread_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(_positive_int(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad thread counts {text!r}: {exc}") from None
    if not counts:
        raise argparse.ArgumentTypeError("give at least one thread count, e.g. 1,2,4")
    return tuple(sorted(set(counts)))


def _names(values: list[str] | None) -> tuple[str, ...]:
    return tuple(n.strip() for v in values or () for n in v.split(",") if n.strip())


def add_parser(sub: Any) -> None:
    """Register ``bench`` on the ``safemap`` command's subparsers."""
    p = sub.add_parser(
        "bench",
        help="measure workloads on every map type and recommend one",
        description="Run workloads (Go sync.Map's benchmark set, xsync's and "
        "conc-map-bench's mixes, contention cases, your own mix) on every installed map "
        "implementation and thread count, check each result for lost updates and errors, "
        "and recommend the fastest correct implementation per workload. "
        "Definitions: docs/bench.md.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a fast run (under a minute): 3 rounds of 0.006 s cells, 1 and 2 threads",
    )
    p.add_argument(
        "--impl",
        action="append",
        metavar="NAME",
        help="only these implementations (repeat or comma-separate; see --list)",
    )
    p.add_argument(
        "--workload",
        action="append",
        metavar="NAME",
        help="only these workloads: names, globs like 'LoadOrStore*', or a family "
        "(go-sync-map, xsync, conc-map-bench, contention, atomicity, custom)",
    )
    p.add_argument("--threads", type=_thread_counts, metavar="N,N,...", help="thread counts")
    p.add_argument("--keys", type=_positive_int, metavar="N", help="key count of the mixes")
    p.add_argument(
        "--duration", type=_positive_float, metavar="SECONDS", help="time per cell and round"
    )
    p.add_argument(
        "--ops",
        type=_positive_int,
        metavar="N",
        help="bound each thread by N operations instead of by --duration",
    )
    p.add_argument(
        "--rounds", type=_positive_int, metavar="N", help="interleaved repetitions per cell"
    )
    p.add_argument(
        "--mix",
        metavar="OP=PCT,...",
        help="your own mix, e.g. load=90,store=5,delete=5 (operations: load, store, "
        "delete, load_or_store, load_and_delete, swap, compare_and_swap, "
        "compare_and_delete, range)",
    )
    p.add_argument("--dist", choices=("uniform", "zipf"), help="key distribution of your mix")
    p.add_argument(
        "--value-size", type=_non_negative_int, metavar="BYTES", help="value size of your mix"
    )
    p.add_argument("--config", type=Path, metavar="FILE.toml", help="your mix from a TOML file")
    p.add_argument("--no-latency", action="store_true", help="skip the per-operation latency pass")
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write results.json, PNG plots, report.html and SUMMARY.md into DIR",
    )
    p.add_argument(
        "--list", action="store_true", help="list the implementations and workloads, then exit"
    )


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (recorded in the outputs)."""
    parts = ["safemap", "bench"]
    if args.quick:
        parts.append("--quick")
    for flag, value in (
        ("--impl", ",".join(_names(args.impl))),
        ("--workload", ",".join(_names(args.workload))),
        ("--threads", ",".join(map(str, args.threads or ()))),
        ("--keys", args.keys),
        ("--duration", args.duration),
        ("--ops", args.ops),
        ("--rounds", args.rounds),
        ("--mix", args.mix),
        ("--dist", args.dist),
        ("--value-size", args.value_size),
        ("--config", args.config),
        ("--out", args.out),
    ):
        if value not in (None, ""):
            parts += [flag, str(value)]
    if args.no_latency:
        parts.append("--no-latency")
    return " ".join(parts)


def _config(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from safemap.bench.config import load_mix_file, parse_mix, preset, with_overrides
    from safemap.bench.mixes import MixSpec

    config = preset(args.quick)
    custom = load_mix_file(args.config) if args.config else None
    if args.mix:
        mix = parse_mix(args.mix)
        custom = replace(custom, mix=mix) if custom else MixSpec(mix)
    if custom is not None:
        custom = with_overrides(
            custom, keys=args.keys, distribution=args.dist, value_size=args.value_size
        )
    threads = args.threads or (custom.threads if custom and custom.threads else config.threads)
    return replace(
        config,
        duration=args.duration or config.duration,
        threads=threads,
        rounds=args.rounds or config.rounds,
        keys=args.keys or config.keys,
        ops=args.ops,
        latency_rounds=0 if args.no_latency else config.latency_rounds,
        workloads=_names(args.workload),
        impls=_names(args.impl),
        custom=custom,
    )


def _os_error(exc: OSError) -> str:
    """An ``OSError`` in one line: its message and the path it concerns."""
    text = exc.strerror or str(exc)
    return f"{text}: {exc.filename}" if exc.filename else text


def _list(plan: Any, console: Any) -> int:
    from rich.table import Table

    impls = Table(title="Implementations", title_justify="left")
    for column in ("name", "kind", "what it is"):
        impls.add_column(column)
    for i in plan.impls:
        impls.add_row(i.name, i.kind + ("" if i.safe else ", unsafe"), i.summary)
    for s in plan.skipped:
        impls.add_row(s.name, f"{s.kind}, skipped", f"{s.reason} — {s.install}", style="dim")
    workloads = Table(title="Workloads", title_justify="left")
    for column in ("name", "family", "per operation"):
        workloads.add_column(column)
    for w in plan.workloads:
        workloads.add_row(w.name, w.info.family, w.info.description)
    console.print(impls, workloads)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``safemap bench`` with parsed ``args``; return the exit status."""
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from safemap.bench.session import Reporter, make_plan, run_plan
        from safemap.bench.table import render

        if args.out is not None:  # matplotlib: checked before a long run, not after
            from safemap.bench.outputs import prepare_out, write_outputs
    except ImportError as exc:
        print(f"{_EXTRA} ({exc})", file=sys.stderr)
        return 2

    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        plan = make_plan(_config(args))
    except (ValueError, OSError) as exc:
        print(f"safemap bench: {exc}", file=sys.stderr)
        return 2
    if args.list:
        return _list(plan, console)
    if not plan.impls:
        print("safemap bench: no implementation to measure", file=sys.stderr)
        return 2
    if args.out is not None:
        # Before measuring: a path that cannot hold the outputs must not cost a whole run.
        try:
            prepare_out(args.out)
        except OSError as exc:
            print(f"safemap bench: --out {args.out}: {_os_error(exc)}", file=sys.stderr)
            return 2

    progress = Progress(
        TextColumn("[bold]bench"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
        transient=True,
    )

    class Bar(Reporter):
        """Drives the progress bar."""

        def start(self, total: int) -> None:
            self.task = progress.add_task("", total=total)

        def step(self, label: str) -> None:
            progress.update(self.task, advance=1, description=label)

    with progress:
        results = run_plan(plan, command=_command(args), reporter=Bar())
    render(results, console)
    if args.out is not None:
        try:
            written = write_outputs(results, args.out)
        except OSError as exc:  # e.g. the disk filled up or the directory was removed meanwhile
            print(f"safemap bench: --out {args.out}: {_os_error(exc)}", file=sys.stderr)
            return 1
        console.print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
