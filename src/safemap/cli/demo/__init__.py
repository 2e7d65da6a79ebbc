"""``safemap demo``: a guided tour of the concurrent map failures Go is known for, in Python.

Each scenario (:mod:`.scenarios`) shows, in order: the unsafe code (its real source, from
:mod:`.programs`), what plain Python does with it, what :mod:`safemap.race` reports, what
:func:`safemap.checked` raises, and the same logic on a safemap map, running clean.

**Deterministic output.** Everything printed is identical on every run of the same command
on the same installation: thread switches are scripted at fixed points
(:mod:`.scheduling`), and what varies between runs or machines — file paths, ``0x...``
addresses, thread idents, the detector's thread ids — is normalised (:mod:`.page`).

Nothing here needs an extra: the output is plain text.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .scenarios import SCENARIOS, Scenario, render

__all__ = ["SCENARIOS", "Scenario", "add_parser", "render", "run"]

_INTRO = """\
safemap demo: the concurrent map failures Go is known for, reproduced in Python.
For each: the unsafe code, what plain Python does, what safemap.race reports, what
safemap.checked() raises, and the fix on a safemap map. Thread switches are scripted
at fixed points, so every run prints the same text. Docs: docs/race.md, docs/checked.md."""


def add_parser(sub: Any) -> None:
    """Register ``demo`` on the ``safemap`` command's subparsers."""
    p = sub.add_parser(
        "demo",
        help="a guided tour of concurrent map failures and their fixes",
        description="Reproduce, deterministically, the concurrent map failures Go is known "
        "for, and show what plain Python, safemap.race and safemap.checked() make of each, "
        "and the fix.",
    )
    p.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="only these scenarios (repeat or comma-separate; see --list)",
    )
    p.add_argument("--list", action="store_true", help="list the scenarios, then exit")


def run(args: argparse.Namespace) -> int:
    """Run ``safemap demo`` with parsed ``args``; return the exit status."""
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:<22} {s.title}")
        return 0
    wanted = [n.strip() for v in args.scenario or () for n in v.split(",") if n.strip()]
    known = {s.name: s for s in SCENARIOS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        print(
            f"safemap demo: unknown scenario {', '.join(unknown)} (choose from {', '.join(known)})",
            file=sys.stderr,
        )
        return 2
    print(_INTRO)
    for number, s in enumerate(SCENARIOS, 1):
        if not wanted or s.name in wanted:
            print()
            print(render(s, number), flush=True)
    return 0
