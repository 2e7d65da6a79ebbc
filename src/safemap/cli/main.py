"""Entry point of the ``safemap`` command: parses arguments and dispatches subcommands."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

from .. import __version__
from . import bench, demo


def _gil_state() -> str:
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    if is_enabled is None:
        return "GIL build"
    return "free-threaded build, GIL " + ("enabled" if is_enabled() else "disabled")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``safemap`` command."""
    parser = argparse.ArgumentParser(
        prog="safemap",
        description=(
            "safemap: shared maps that are safe and fast under concurrency. "
            "Run 'safemap info' to see which map types this installation provides."
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"safemap {__version__} (Python {platform.python_version()}, {_gil_state()})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="show the installed map types and the interpreter")
    bench.add_parser(sub)
    demo.add_parser(sub)
    return parser


def _info() -> int:
    import safemap

    print(f"safemap {__version__}")
    print(f"Python {platform.python_version()}, {_gil_state()}")
    print("map types:")
    for name in safemap.__all__:
        obj = getattr(safemap, name)
        is_map = isinstance(obj, type) and issubclass(obj, safemap.ConcurrentMapping)
        if is_map and obj is not safemap.ConcurrentMapping:
            summary = " ".join((obj.__doc__ or "").split()).split(". ")[0]
            print(f"  {name:<14} {summary}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``safemap`` command with ``argv`` (default: ``sys.argv[1:]``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    if args.command == "bench":
        return bench.run(args)
    if args.command == "demo":
        return demo.run(args)
    parser.print_help()
    return 0
