"""Entry point of the ``safemap`` command: parses arguments and dispatches subcommands."""

from __future__ import annotations

import argparse
import platform
import re
import sys
from collections.abc import Sequence

from .. import __version__
from . import bench, demo, top


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
    top.add_parser(sub)
    return parser


# reST markup in docstrings, shown as plain text in a terminal: ``x`` and :role:`~a.b.x`.
_REST_LITERAL = re.compile(r"``([^`]+)``")
_REST_ROLE = re.compile(r":[a-z]+:`~?(?:[\w.]+\.)?([^`]+)`")


def _plain(text: str) -> str:
    """The first sentence of a docstring, without reST markup."""
    first = " ".join(text.split()).split(". ")[0]
    return _REST_ROLE.sub(r"\1", _REST_LITERAL.sub(r"\1", first))


def _info() -> int:
    import safemap

    print(f"safemap {__version__}")
    print(f"Python {platform.python_version()}, {_gil_state()}")
    print("map types:")
    for name in sorted(safemap.__all__):
        obj = getattr(safemap, name)
        if isinstance(obj, type) and name.endswith("Map") and obj is not safemap.ConcurrentMapping:
            print(f"  {name:<14} {_plain(obj.__doc__ or '')}")
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
    if args.command == "top":
        return top.run(args)
    parser.print_help()
    return 0
