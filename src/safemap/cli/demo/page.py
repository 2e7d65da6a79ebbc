"""The text of ``safemap demo``: a page per scenario, with what varies between runs and
machines normalised away (paths, addresses, thread idents, the detector's thread ids)."""

from __future__ import annotations

import contextlib
import inspect
import io
import re
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import safemap

from .scheduling import DemoThread

WIDTH = 78


class Page:
    """Collects a scenario's text; normalises what varies between runs and machines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str = "", indent: int = 0) -> None:
        for line in textwrap.dedent(text).strip("\n").splitlines() or [""]:
            self.lines.append(" " * indent + line if line else "")

    def wrap(self, text: str, indent: int = 0) -> None:
        prefix = " " * indent
        self.lines += textwrap.wrap(
            " ".join(text.split()), WIDTH, initial_indent=prefix, subsequent_indent=prefix
        )

    def heading(self, title: str) -> None:
        self.lines += ["", f"--- {title} ".ljust(WIDTH, "-"), ""]

    def code(self, *objs: Any) -> None:
        for obj in objs:
            try:
                source = inspect.getsource(obj)
            except (OSError, TypeError):
                source = f"{obj.__qualname__}: (source not available)\n"
            self.say(textwrap.dedent(source), indent=4)
            self.lines.append("")
        if self.lines and not self.lines[-1]:
            self.lines.pop()

    def error(self, who: str, exc: BaseException) -> None:
        name = type(exc).__name__
        module = type(exc).__module__
        qual = name if module == "builtins" else f"{module.split('.')[0]}.{name}"
        self.say(f"{who} raised {qual}:", indent=2)
        self.say(_without_scaffolding(str(exc)), indent=4)

    def errors(self, threads: tuple[DemoThread, ...]) -> None:
        """Show what each of ``threads`` raised, or that none raised."""
        failed = [t for t in threads if t.error is not None]
        for t in failed:
            self.error(t.name, t.error)  # type: ignore[arg-type]
        if not failed:
            self.say("(no error raised)", indent=2)

    def text(self) -> str:
        return _normalise("\n".join(self.lines))


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line \d+, in (?P<function>\S+)\s*$')
#: The demo's own functions that schedule threads: not part of the code being shown.
_SCAFFOLDING = frozenset(
    {
        "run",
        "body",
        "finish",
        "run_to_end",
        "wait",
        "switch_point",
        "step",
        "after_read1",
        "after_read2",
        "storing",
        "<lambda>",
        "__eq__",
        "__hash__",
        "__format__",
        "__lt__",
        "__add__",
    }
)


def _without_scaffolding(message: str) -> str:
    """``message`` without the stack frames of the demo's scheduling (and of
    ``threading``): where exactly a paused thread waits varies from run to run, and it is
    not the code being shown. Frames are ``File "...", line N, in f`` lines, each followed
    by its more indented source line."""
    here = Path(__file__).parent
    out: list[str] = []
    dropped = skip_source = False
    for line in message.splitlines():
        frame = _FRAME.match(line)
        if frame:
            drop = Path(frame["file"]).parent != here or frame["function"] in _SCAFFOLDING
            dropped |= drop
            skip_source = drop
            if not drop:
                out.append(line)
            continue
        if skip_source and line.startswith("    ") and out is not None:
            skip_source = False
            continue
        skip_source = False
        out.append(line)
    if dropped:
        out.append("  (frames of the demo's thread scheduling left out)")
    return "\n".join(out)


_REPORT_FRAME = re.compile(r"^  (?P<path>\S.*?):\d+ in \S+$")


def _report_text(report: object) -> str:
    """A race report's text with paths made relative and, in its stacks, only the frames of
    the demo and of ``threading``: the frames below ``safemap demo`` (the console script,
    ``python -m``, a test runner) depend on how it was started. Elided frames show as
    ``...``."""
    text = str(report)
    for prefix in _prefixes():
        text = text.replace(prefix, "")
    out: list[str] = []
    for line in text.splitlines():
        frame = _REPORT_FRAME.match(line)
        if frame and not frame["path"].startswith(("safemap/cli/", "threading.py")):
            if out[-1] != "  ...":
                out.append("  ...")
            continue
        out.append(line)
    return "\n".join(out)


def _prefixes() -> list[str]:
    roots = {str(Path(safemap.__file__).resolve().parent.parent)}
    roots.add(str(Path(safemap.__file__).parent.parent))
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(KeyError):
            roots.add(sysconfig.get_path(name))
    return sorted((r.rstrip("/\\") + ("\\" if "\\" in r else "/") for r in roots), key=len)[::-1]


def _normalise(text: str) -> str:
    for prefix in _prefixes():
        text = text.replace(prefix, "")
    text = re.sub(r"0x[0-9a-fA-F]+", "0x...", text)
    text = re.sub(r"(?i)(ident(?:ifier)?[ =:]*)\d+", r"\1...", text)
    # The detector numbers threads in creation order: keep the order, start at T1.
    ids = sorted({int(n) for n in re.findall(r"\bT(\d+)\b", text)})
    numbers = {str(old): f"T{new}" for new, old in enumerate(ids, 1)}
    return re.sub(r"\bT(\d+)\b", lambda m: numbers[m.group(1)], text)


def reports_section(page: Page, reports: list[Any], *, expect: bool) -> None:
    if not reports:
        page.say("no race reported" if not expect else "(no race reported)", indent=2)
        return
    page.say(f"{len(reports)} report(s):", indent=2)
    page.lines.append("")
    for i, report in enumerate(reports):
        if i:
            page.lines.append("")
        page.say(_report_text(report), indent=2)


@contextlib.contextmanager
def detector() -> Iterator[tuple[Any, list[Any]]]:
    """``race.detect()`` for one demo step. The detector's own copy of each report (to
    stderr, or to a ``log_path`` from ``SAFEMAP_RACE``) is kept out of the output, which
    prints the reports itself, and ``halt_on_error`` is off: these races are the point."""
    from safemap import race

    found: list[Any] = []
    quiet = contextlib.redirect_stderr(io.StringIO())
    with quiet, race.detect(halt_on_error=False, log_path="stderr") as session:
        yield race, found
    found += list(session.reports)
