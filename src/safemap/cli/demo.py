"""``safemap demo``: a guided tour of the concurrent map failures Go is known for, in Python.

Each scenario shows, in order: the unsafe code (its real source), what plain Python does
with it, what :mod:`safemap.race` reports, what :func:`safemap.checked` raises, and the same
logic on a safemap map, running clean.

**Deterministic output.** Everything printed is identical on every run of the same command
on the same installation:

- *Plain Python and* ``checked()``: the threads are not left to the scheduler. The demo's
  data carry *switch points* — a value whose ``+`` or comparison, or a key whose
  ``__hash__``, runs the current thread's next scripted step — and each step hands control
  to the other thread with :class:`threading.Event` (or runs it to completion). So "worker-1
  has read the count and is about to store it when worker-2 runs" happens at exactly that
  point every time, and an overlap that ``checked()`` must see (a write still in progress in
  one thread while another writes) is forced, not hoped for.
- ``safemap.race``: the unsafe code runs in threads that take turns, passed from one to the
  next by a plain flag polled with ``time.sleep`` (a :class:`_Baton`), which the detector
  does not model as synchronization. The threads never overlap — plain Python shows no
  failure there — and the race is reported anyway, because a happens-before detector does
  not need the race to manifest.
- Text that varies between runs or machines is normalised: file paths are printed relative
  to the directory holding the ``safemap`` package or the standard library, the detector's
  thread ids are renumbered ``T1, T2, ...`` in order of appearance within each scenario
  (ids are never reused within a process, so they depend on what ran before), and
  ``0x...`` addresses and thread idents are masked.

Nothing here needs an extra: the output is plain text.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import operator
import re
import sys
import sysconfig
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safemap
from safemap import ConcurrentMap, FrozenMap, checked

__all__ = ["SCENARIOS", "Scenario", "add_parser", "run"]

#: How long a scripted hand-off may wait before the demo gives up (it never should).
_STEP_TIMEOUT = 30.0
_WIDTH = 78


# --------------------------------------------------------------------------------------
# The unsafe code, and its fixes. These functions are printed with inspect.getsource, so
# they are written as an application would write them.
# --------------------------------------------------------------------------------------


def record_hit(hits: dict[str, int]) -> None:
    hits["page"] += 1  # read, add, store: three steps, not one


def record_hit_fixed(hits: ConcurrentMap[str, int]) -> None:
    hits.merge("page", 1, operator.add)  # one atomic read-modify-write


def count_active(sessions: Mapping[str, str]) -> int:
    active = 0
    for state in sessions.values():
        if state == "active":
            active += 1
    return active


def login(sessions: dict[str, str], sid: str) -> None:
    sessions[sid] = "active"


def logout(sessions: dict[str, str], sid: str) -> None:
    del sessions[sid]


def sweep(sessions: dict[str, int], now: int) -> None:
    for sid, expires in sessions.items():  # Go allows delete inside range
        if expires < now:
            del sessions[sid]


def sweep_copy(sessions: dict[str, int], now: int) -> None:
    for sid, expires in list(sessions.items()):  # the usual patch: iterate a copy
        if expires < now:
            del sessions[sid]


def refresh(sessions: dict[str, int], sid: str, now: int) -> None:
    sessions[sid] = now + 30


def sweep_fixed(sessions: ConcurrentMap[str, int], now: int) -> None:
    for sid, expires in sessions.items():  # weakly consistent: deleting is fine
        if expires < now:
            sessions.compare_and_delete(sid, expires)  # not if refreshed meanwhile


class Registry:
    def __init__(self) -> None:
        self._services: dict[str, str] = {}

    def register(self, name: str, address: str) -> None:
        self._services[name] = address

    def services(self) -> dict[str, str]:
        return self._services  # hands out the internal dict


def describe(registry: Registry | SafeRegistry) -> list[str]:
    return [f"{name} at {address}" for name, address in registry.services().items()]


class SafeRegistry:
    def __init__(self) -> None:
        self._services: ConcurrentMap[str, str] = ConcurrentMap()

    def register(self, name: str, address: str) -> None:
        self._services[name] = address

    def services(self) -> FrozenMap[str, str]:
        return self._services.snapshot()  # immutable, one instant, safe to keep


def run_job(
    job_id: str, active: dict[str, str], stats: dict[str, int], work: Callable[[], None]
) -> None:
    active[job_id] = "running"
    try:
        work()
    finally:  # Go: defer func() { delete(active, id); stats["done"]++ }()
        del active[job_id]
        stats["done"] += 1


def run_job_fixed(
    job_id: str,
    active: ConcurrentMap[str, str],
    stats: ConcurrentMap[str, int],
    work: Callable[[], None],
) -> None:
    active[job_id] = "running"
    try:
        work()
    finally:
        active.pop(job_id, None)
        stats.merge("done", 1, operator.add)


def _no_work() -> None:
    """A job's work (the demo's jobs do none)."""


def _churn(sessions: dict[str, str]) -> None:
    """web-1 logs s4 in and s2 out (the key set changes, its size does not)."""
    login(sessions, "s4")
    logout(sessions, "s2")


# --------------------------------------------------------------------------------------
# Switch points: data whose dunder methods run the calling thread's next scripted step.
# --------------------------------------------------------------------------------------

_script = threading.local()

Step = tuple[str, Callable[[], object]]


def _switch_point(kind: str) -> None:
    """Run the calling thread's next scripted step if it is for ``kind``; else nothing."""
    steps: list[Step] | None = getattr(_script, "steps", None)
    if steps and steps[0][0] == kind:
        _, action = steps.pop(0)
        action()


class _Count(int):
    """An ``int`` whose ``+`` is a switch point (``"add"``): between the read and the store
    of ``d[k] += 1``. The sum is a plain ``int``."""

    def __add__(self, other: int) -> int:
        _switch_point("add")
        return int(self) + other


class _Text(str):
    """A ``str`` whose ``==`` and formatting are a switch point (``"use"``): a loop body
    using the value it was given."""

    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        _switch_point("use")
        return str.__eq__(self, other)

    def __format__(self, spec: str) -> str:
        _switch_point("use")
        return format(str(self), spec)


class _Time(int):
    """An ``int`` whose ``<`` is a switch point (``"use"``)."""

    def __lt__(self, other: int) -> bool:
        _switch_point("use")
        return int(self) < other


class _Key(str):
    """A ``str`` key whose hashing and comparison are a switch point (``"lookup"``): the
    dict calls them inside the operation (``__hash__`` when this object is the key given,
    ``__eq__`` when it is the stored key and an equal one is given), so a step taken there
    happens while that operation is in progress."""

    def __hash__(self) -> int:
        _switch_point("lookup")
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        _switch_point("lookup")
        return str.__eq__(self, other)


def _wait(event: threading.Event) -> None:
    if not event.wait(_STEP_TIMEOUT):
        raise RuntimeError("safemap demo: a scripted thread hand-off timed out")


class _Thread(threading.Thread):
    """A demo thread: runs ``fn(*args)`` with a script of steps, keeps the result or the
    exception, and runs ``on_exit`` however it ends."""

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        script: tuple[Step, ...] = (),
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.fn, self.fn_args, self.script, self.on_exit = fn, args, script, on_exit
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        _script.steps = list(self.script)
        try:
            self.result = self.fn(*self.fn_args)
        except BaseException as exc:
            self.error = exc
        finally:
            _script.steps = []
            if self.on_exit is not None:
                self.on_exit()

    def finish(self) -> _Thread:
        self.join(_STEP_TIMEOUT * 2)
        if self.is_alive():
            raise RuntimeError(f"safemap demo: thread {self.name} did not finish")
        return self


def _run(name: str, fn: Callable[..., Any], *args: Any, script: tuple[Step, ...] = ()) -> _Thread:
    """Run ``fn(*args)`` in a new thread to completion."""
    thread = _Thread(name, fn, *args, script=script)
    thread.start()
    return thread.finish()


def _other(
    kind: str, name: str, fn: Callable[..., Any], *args: Any, into: list[_Thread] | None = None
) -> Step:
    """A step: at the next ``kind`` switch point, run ``fn(*args)`` in a new thread called
    ``name`` to completion (appended to ``into``, if given)."""

    def step() -> None:
        thread = _run(name, fn, *args)
        if into is not None:
            into.append(thread)

    return kind, step


class _Baton:
    """Passes the turn between threads with a plain attribute polled with ``time.sleep``:
    no lock, event or queue, so the race detector sees no synchronization in it."""

    def __init__(self) -> None:
        self.passed = False

    def give(self) -> None:
        self.passed = True

    def take(self) -> None:
        deadline = time.monotonic() + _STEP_TIMEOUT
        while not self.passed:
            if time.monotonic() > deadline:
                raise RuntimeError("safemap demo: a baton was never passed")
            time.sleep(0.001)


def _in_turns(*turns: tuple[str, Callable[..., Any], tuple[Any, ...]]) -> list[_Thread]:
    """Run each ``(name, fn, args)`` in its own thread, one after the other: thread i+1
    starts its work when thread i has finished its, ordered only by batons. All threads are
    started first and joined last, so neither ``start`` nor ``join`` orders them, and every
    thread stays alive until the last turn is over, so reports always say ``running``."""
    batons = [_Baton() for _ in turns]
    all_done = _Baton()
    threads = []
    for i, (name, fn, args) in enumerate(turns):

        def body(i: int = i, fn: Callable[..., Any] = fn, args: tuple[Any, ...] = args) -> Any:
            if i:
                batons[i - 1].take()
            try:
                return fn(*args)
            finally:
                batons[i].give()
                all_done.take()

        threads.append(_Thread(name, body))
    for t in threads:
        t.start()
    batons[-1].take()
    all_done.give()
    return [t.finish() for t in threads]


# --------------------------------------------------------------------------------------
# Output.
# --------------------------------------------------------------------------------------


class _Page:
    """Collects a scenario's text; normalises what varies between runs and machines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str = "", indent: int = 0) -> None:
        for line in textwrap.dedent(text).strip("\n").splitlines() or [""]:
            self.lines.append(" " * indent + line if line else "")

    def wrap(self, text: str, indent: int = 0) -> None:
        prefix = " " * indent
        self.lines += textwrap.wrap(
            " ".join(text.split()), _WIDTH, initial_indent=prefix, subsequent_indent=prefix
        )

    def heading(self, title: str) -> None:
        self.lines += ["", f"--- {title} ".ljust(_WIDTH, "-"), ""]

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

    def errors(self, threads: tuple[_Thread, ...]) -> None:
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
        "_run",
        "_wait",
        "_switch_point",
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
    here = __file__
    out: list[str] = []
    dropped = skip_source = False
    for line in message.splitlines():
        frame = _FRAME.match(line)
        if frame:
            drop = frame["file"] != here or frame["function"] in _SCAFFOLDING
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


def _reports_section(page: _Page, reports: list[Any], *, expect: bool) -> None:
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
def _detector() -> Iterator[tuple[Any, list[Any]]]:
    """``race.detect()`` for one demo step. The detector's own copy of each report (to
    stderr, or to a ``log_path`` from ``SAFEMAP_RACE``) is kept out of the output, which
    prints the reports itself, and ``halt_on_error`` is off: these races are the point."""
    from safemap import race

    found: list[Any] = []
    quiet = contextlib.redirect_stderr(io.StringIO())
    with quiet, race.detect(halt_on_error=False, log_path="stderr") as session:
        yield race, found
    found += list(session.reports)


# --------------------------------------------------------------------------------------
# The scenarios.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One stop of the tour: ``name`` (for ``--scenario``), ``title``, the Go failure it
    corresponds to, and ``show``, which writes its text."""

    name: str
    title: str
    go: str
    show: Callable[[_Page], None]


def _overlapping_increments(
    name1: str,
    fn1: Callable[..., Any],
    args1: tuple[Any, ...],
    name2: str,
    fn2: Callable[..., Any],
    args2: tuple[Any, ...],
) -> tuple[_Thread, _Thread]:
    """Two threads each run code doing ``d[key] += 1`` (``d[_Key] = _Count``), scripted so
    both read, then the first one's store is in progress (paused in the key's lookup) while
    the second one stores."""
    read1, read2, storing1, tried2 = (threading.Event() for _ in range(4))

    def after_read2() -> None:
        read2.set()
        _wait(storing1)

    second = _Thread(name2, fn2, *args2, script=(("add", after_read2),), on_exit=tried2.set)

    def after_read1() -> None:
        read1.set()
        second.start()
        _wait(read2)

    def storing() -> None:
        storing1.set()
        _wait(tried2)

    first = _Thread(name1, fn1, *args1, script=(("add", after_read1), ("lookup", storing)))
    first.start()
    first.finish()
    second.finish()
    return first, second


def _lost_update(page: _Page) -> None:
    page.say("The unsafe code: two threads count hits in a shared dict.")
    page.lines.append("")
    page.code(record_hit)

    page.heading("plain Python")
    hits: dict[str, int] = {"page": _Count(0)}
    _run(
        "worker-1",
        record_hit,
        hits,
        script=(_other("add", "worker-2", record_hit, hits),),
    )
    page.wrap(
        "worker-1 reads hits['page'] (0) and is switched out before it stores 0 + 1; "
        "worker-2 runs record_hit from start to end; worker-1 stores its 1.",
        indent=2,
    )
    page.lines.append("")
    page.say(f"hits == {hits!r}    two increments, expected 2: one update lost, no error", indent=2)

    def race_part(page: _Page) -> None:
        with _detector() as (race, reports):
            hits = race.watch({"page": 0}, name="hits")
            _in_turns(("worker-1", record_hit, (hits,)), ("worker-2", record_hit, (hits,)))
        page.wrap(
            "Under race.detect(), worker-1 runs record_hit, then worker-2 does. They never "
            f"overlap: hits == {dict(hits)!r}, correct this time. The detector reports the "
            "race anyway: nothing orders the two threads' accesses.",
            indent=2,
        )
        page.lines.append("")
        _reports_section(page, reports, expect=True)

    page.heading("safemap.race")
    race_part(page)

    def checked_part(page: _Page) -> None:
        hits = checked({_Key("page"): _Count(0)}, name="hits")
        first, second = _overlapping_increments(
            "worker-1", record_hit, (hits,), "worker-2", record_hit, (hits,)
        )
        page.wrap(
            "hits = safemap.checked(name='hits'). Both threads read hits['page']; "
            "worker-2 stores while worker-1's store is still in progress:",
            indent=2,
        )
        page.lines.append("")
        for t in (first, second):
            if t.error is not None:
                page.error(t.name, t.error)
        if first.error is None and second.error is None:
            page.say("(no error raised)", indent=2)

    page.heading("safemap.checked()")
    checked_part(page)

    page.heading("the fix: ConcurrentMap.merge")
    page.code(record_hit_fixed)
    page.lines.append("")
    fixed: ConcurrentMap[str, int] = ConcurrentMap({"page": 0})
    threads, per_thread = 4, 10_000

    def hammer() -> None:
        for _ in range(per_thread):
            record_hit_fixed(fixed)

    workers = [_Thread(f"worker-{i + 1}", hammer) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.finish()
    page.say(
        f"{threads} threads x {per_thread:,} hits: fixed == {dict(fixed)!r}, exact on every run",
        indent=2,
    )


def _iteration(page: _Page) -> None:
    page.say("The unsafe code: one thread counts sessions while web threads log in and out.")
    page.lines.append("")
    page.code(count_active, login, logout)

    def sessions() -> dict[str, str]:
        return {"s1": _Text("active"), "s2": "idle", "s3": "active"}  # s1: switch point

    page.heading("plain Python")
    page.wrap(
        "sessions = {'s1': 'active', 's2': 'idle', 's3': 'active'}. The reporter thread "
        "runs count_active; after the first session, web-1 runs and finishes:",
        indent=2,
    )
    page.lines.append("")

    def overwrite(d: dict[str, str], sid: str) -> None:
        d[sid] = "idle"

    cases: list[tuple[str, Callable[[dict[str, str]], None]]] = [
        ("login(sessions, 's4')", lambda d: login(d, "s4")),
        ("logout(sessions, 's2')", lambda d: logout(d, "s2")),
        ("logout 's2' + login 's4'", _churn),
        ("sessions['s3'] = 'idle'", lambda d: overwrite(d, "s3")),
    ]
    for label, write in cases:
        d = sessions()
        reporter = _run(
            "reporter",
            count_active,
            d,
            script=(_other("use", "web-1", write, d),),
        )
        outcome = (
            f"{type(reporter.error).__name__}: {reporter.error}"
            if reporter.error is not None
            else f"no error; count_active returned {reporter.result}"
        )
        page.say(f"web-1 {label + ':':<28} {outcome}", indent=2)
    page.lines.append("")
    page.wrap(
        "Writes that keep the size (the last two lines) go unnoticed: the loop silently "
        "counts a mix of the map before and after them.",
        indent=2,
    )

    def race_part(page: _Page) -> None:
        with _detector() as (race, reports):
            d = race.watch({"s1": "active", "s2": "idle", "s3": "active"}, name="sessions")
            reporter, _ = _in_turns(
                ("reporter", count_active, (d,)),
                ("web-1", _churn, (d,)),
            )
        page.wrap(
            "The reporter counts (it finds "
            f"{reporter.result}, without error), then web-1 logs s4 in and s2 out. No "
            "overlap, no error; the detector reports:",
            indent=2,
        )
        page.lines.append("")
        _reports_section(page, reports, expect=True)

    page.heading("safemap.race")
    race_part(page)

    def checked_part(page: _Page) -> None:
        page.wrap(
            "sessions = safemap.checked(..., name='sessions'); the same schedule as above:",
            indent=2,
        )
        for label, write in (cases[0], cases[3]):
            d = checked(sessions(), name="sessions")
            web: list[_Thread] = []
            reporter = _run(
                "reporter",
                count_active,
                d,
                script=(_other("use", "web-1", write, d, into=web),),
            )
            page.lines.append("")
            page.say(f"web-1 {label}:", indent=2)
            page.errors((reporter, *web))

    page.heading("safemap.checked()")
    checked_part(page)

    page.heading("the fix: iterate a ConcurrentMap, or a snapshot() of it")
    views: list[tuple[str, Callable[[ConcurrentMap[str, str]], Mapping[str, str]]]] = [
        ("count_active(sessions)", lambda m: m),
        ("count_active(sessions.snapshot())", lambda m: m.snapshot()),
    ]
    for label, view in views:
        m: ConcurrentMap[str, str] = ConcurrentMap(sessions())
        reporter = _run(
            "reporter", count_active, view(m), script=(_other("use", "web-1", _churn, m),)
        )
        if reporter.error is not None:
            outcome = f"{type(reporter.error).__name__}: {reporter.error}"
        elif view is views[1][1]:
            outcome = f"no error, count {reporter.result} (the sessions of one instant)"
        elif reporter.result in (2, 3):  # s4's count depends on where it lands: not shown
            outcome = "no error, s1 and s3 (present throughout) counted"
        else:
            outcome = f"no error, but count {reporter.result}: s1 or s3 missed"
        page.say(f"{label}: {outcome}", indent=2)
    page.lines.append("")
    page.wrap(
        "Iterating a ConcurrentMap never raises and never yields a key twice; every session "
        "present throughout is counted (weakly consistent). A snapshot() counts exactly the "
        "sessions of one instant.",
        indent=2,
    )


def _delete_in_loop(page: _Page) -> None:
    page.say("The unsafe code: a janitor deletes expired sessions, ported from Go.")
    page.lines.append("")
    page.code(sweep)

    def sessions() -> dict[str, int]:
        return {"s1": _Time(5), "s2": 20, "s3": 7}  # s1: switch point

    page.heading("plain Python")
    d = sessions()
    janitor = _run("janitor", sweep, d, 10)
    page.say(
        "sessions = {'s1': 5, 's2': 20, 's3': 7}; sweep(sessions, now=10) in one thread:", indent=2
    )
    page.say(f"{type(janitor.error).__name__}: {janitor.error}", indent=4)
    page.lines.append("")
    page.say("The usual patch iterates a copy, and the janitor runs in its own thread:", indent=2)
    page.lines.append("")
    page.code(sweep_copy, refresh)
    page.lines.append("")
    d = sessions()
    _run(
        "janitor",
        sweep_copy,
        d,
        10,
        script=(_other("use", "web-1", refresh, d, "s1", 10),),
    )
    page.wrap(
        "The janitor reads s1's expiry (5 < 10) and is switched out; web-1 refreshes s1 "
        f"(expires 40); the janitor deletes it anyway: sessions == {d!r}. No error, and the "
        "user of s1 was just logged out.",
        indent=2,
    )

    def race_part(page: _Page) -> None:
        with _detector() as (race, reports):
            d = race.watch({"s1": 5, "s2": 20, "s3": 7}, name="sessions")
            _in_turns(("janitor", sweep_copy, (d, 10)), ("web-1", refresh, (d, "s2", 10)))
        page.wrap(
            "The janitor sweeps (s1 and s3 expire), then web-1 refreshes s2: no overlap, "
            f"sessions == {dict(d)!r}. The detector reports the unordered read and write "
            "of s2:",
            indent=2,
        )
        page.lines.append("")
        _reports_section(page, reports, expect=True)

    page.heading("safemap.race")
    race_part(page)

    def checked_part(page: _Page) -> None:
        plain_keys = checked({"s1": 5, "s2": 20, "s3": 7}, name="sessions")
        janitor = _run("janitor", sweep, plain_keys, 10)
        page.wrap(
            "sweep on a checked() map in one thread: not a concurrency bug, so checked() "
            "stays silent and dict's own error comes through:",
            indent=2,
        )
        page.lines.append("")
        if janitor.error is not None:
            page.error("janitor", janitor.error)
        page.lines.append("")
        d: Any = checked({_Key("s1"): 5, _Key("s2"): 20, _Key("s3"): 7}, name="sessions")
        web: list[_Thread] = []
        janitor = _run(
            "janitor",
            sweep_copy,
            d,
            10,
            script=(_other("lookup", "web-1", refresh, d, "s1", 10, into=web),),
        )
        page.wrap(
            "sweep_copy on a checked() map: web-1 refreshes s1 while the janitor's "
            "del sessions['s1'] is in progress:",
            indent=2,
        )
        page.lines.append("")
        for t in (janitor, *web):
            if t.error is not None:
                page.error(t.name, t.error)

    page.heading("safemap.checked()")
    checked_part(page)

    page.heading("the fix: ConcurrentMap.compare_and_delete")
    page.code(sweep_fixed)
    page.lines.append("")
    m: ConcurrentMap[str, int] = ConcurrentMap(sessions())
    janitor = _run(
        "janitor",
        sweep_fixed,
        m,
        10,
        script=(_other("use", "web-1", refresh, m, "s1", 10),),
    )
    page.wrap(
        "The same schedule: the janitor reads s1's expiry, web-1 refreshes s1, the janitor "
        "tries to delete it. "
        + (f"{type(janitor.error).__name__}: {janitor.error}" if janitor.error else "No error; ")
        + f"sessions == {dict(sorted(m.items()))!r}: the refreshed session survives, the "
        "expired s3 is gone.",
        indent=2,
    )


def _internal_dict(page: _Page) -> None:
    page.say("The unsafe code: a registry hands out its internal dict; a caller iterates it.")
    page.lines.append("")
    page.code(Registry, describe)

    def registry() -> Registry:
        r = Registry()
        r.register("db", _Text("10.0.0.1"))
        r.register("cache", _Text("10.0.0.2"))
        return r

    page.heading("plain Python")
    r = registry()
    caller = _run(
        "web-1",
        describe,
        r,
        script=(_other("use", "owner", r.register, "queue", "10.0.0.3"),),
    )
    page.wrap(
        "web-1 runs describe(registry); after the first service, the owner thread "
        "registers 'queue':",
        indent=2,
    )
    page.say(f"{type(caller.error).__name__}: {caller.error}", indent=4)

    def race_part(page: _Page) -> None:
        with _detector() as (race, reports):
            r = Registry()
            r._services = race.watch({"db": "10.0.0.1", "cache": "10.0.0.2"}, name="services")
            caller, _ = _in_turns(
                ("web-1", describe, (r,)), ("owner", r.register, ("queue", "10.0.0.3"))
            )
        page.wrap(
            "registry._services = race.watch(..., name='services'). web-1 describes the "
            f"registry ({len(caller.result)} services, no error), then the owner registers "
            "'queue'. The detector reports:",
            indent=2,
        )
        page.lines.append("")
        _reports_section(page, reports, expect=True)

    page.heading("safemap.race")
    race_part(page)

    def checked_part(page: _Page) -> None:
        page.say("registry._services = safemap.checked(..., name='services'):", indent=2)
        for label, name, address in (
            ("registers 'queue'", "queue", "10.0.0.3"),
            ("moves 'db' (same key set)", "db", "10.0.0.9"),
        ):
            r = registry()
            r._services = checked(r._services, name="services")
            owner: list[_Thread] = []
            caller = _run(
                "web-1",
                describe,
                r,
                script=(_other("use", "owner", r.register, name, address, into=owner),),
            )
            page.lines.append("")
            page.say(f"while web-1 iterates, the owner {label}:", indent=2)
            page.errors((caller, *owner))

    page.heading("safemap.checked()")
    checked_part(page)

    page.heading("the fix: hand out snapshot()")
    page.code(SafeRegistry)
    page.lines.append("")
    safe = SafeRegistry()
    safe.register("db", _Text("10.0.0.1"))
    safe.register("cache", _Text("10.0.0.2"))
    caller = _run(
        "web-1",
        describe,
        safe,
        script=(_other("use", "owner", safe.register, "queue", "10.0.0.3"),),
    )
    page.wrap(
        "The same schedule: "
        + (f"{type(caller.error).__name__}: {caller.error}. " if caller.error else "no error; ")
        + f"web-1 got {sorted(caller.result)!r} (the services at one instant); the registry now "
        f"holds {len(safe.services())}.",
        indent=2,
    )


def _cleanup(page: _Page) -> None:
    page.say("The unsafe code: jobs clean up shared state as their threads exit (Go's defer).")
    page.lines.append("")
    page.code(run_job)

    page.heading("plain Python")
    active: dict[str, str] = {}
    stats: dict[str, int] = {"done": _Count(0)}
    _run(
        "job-1",
        run_job,
        "job-1",
        active,
        stats,
        _no_work,
        script=(_other("add", "job-2", run_job, "job-2", active, stats, _no_work),),
    )
    page.wrap(
        "job-1 and job-2 finish together: job-1's cleanup reads stats['done'] (0) and is "
        "switched out; job-2 runs to its end; job-1 stores its 1.",
        indent=2,
    )
    page.lines.append("")
    page.say(f"stats == {stats!r}    two jobs done, expected 2: one lost, no error", indent=2)

    def race_part(page: _Page) -> None:
        with _detector() as (race, reports):
            active = race.watch({}, name="active")
            stats = race.watch({"done": 0}, name="stats")
            _in_turns(
                ("job-1", run_job, ("job-1", active, stats, _no_work)),
                ("job-2", run_job, ("job-2", active, stats, _no_work)),
            )
        page.wrap(
            "job-1 runs and exits, then job-2 does: stats == "
            f"{dict(stats)!r}, correct this time. The jobs' own keys in 'active' do not "
            "conflict (different keys); their cleanups' updates of stats['done'] do:",
            indent=2,
        )
        page.lines.append("")
        _reports_section(page, reports, expect=True)

    page.heading("safemap.race")
    race_part(page)

    def checked_part(page: _Page) -> None:
        active: dict[str, str] = checked(name="active")
        stats = checked({_Key("done"): _Count(0)}, name="stats")
        first, second = _overlapping_increments(
            "job-1",
            run_job,
            ("job-1", active, stats, _no_work),
            "job-2",
            run_job,
            ("job-2", active, stats, _no_work),
        )
        page.wrap(
            "active and stats are checked() maps; job-2's cleanup stores stats['done'] while "
            "job-1's store is in progress:",
            indent=2,
        )
        page.lines.append("")
        page.errors((first, second))

    page.heading("safemap.checked()")
    checked_part(page)

    page.heading("the fix: ConcurrentMap, merge and pop")
    page.code(run_job_fixed)
    page.lines.append("")
    jobs = 8
    fixed_active: ConcurrentMap[str, str] = ConcurrentMap()
    fixed_stats: ConcurrentMap[str, int] = ConcurrentMap({"done": 0})
    together = threading.Barrier(jobs)
    threads = [
        _Thread(
            f"job-{i + 1}", run_job_fixed, f"job-{i + 1}", fixed_active, fixed_stats, together.wait
        )
        for i in range(jobs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.finish()
    page.say(
        f"{jobs} jobs released together by a Barrier exit at once: stats == "
        f"{dict(fixed_stats)!r}, active == {dict(fixed_active)!r}",
        indent=2,
    )


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "lost-update",
        "concurrent d[k] += 1 loses updates",
        "fatal error: concurrent map writes",
        _lost_update,
    ),
    Scenario(
        "iterate-while-writing",
        "iterating a dict while another thread inserts and deletes",
        "fatal error: concurrent map iteration and map write",
        _iteration,
    ),
    Scenario(
        "delete-in-loop",
        "deleting during iteration",
        "legal inside range in Go; a RuntimeError, or a check-then-act race, in Python",
        _delete_in_loop,
    ),
    Scenario(
        "internal-dict",
        "returning the internal dict; the caller iterates while the owner writes",
        "fatal error: concurrent map iteration and map write",
        _internal_dict,
    ),
    Scenario(
        "cleanup-on-exit",
        "writes to a shared dict from cleanup code as threads exit",
        "defer: fatal error: concurrent map writes",
        _cleanup,
    ),
)


def render(scenario: Scenario, number: int) -> str:
    """The text of one scenario (normalised, so equal on every run)."""
    page = _Page()
    page.lines += [
        "=" * _WIDTH,
        f"{number}/{len(SCENARIOS)}  {scenario.name}: {scenario.title}",
        f"     Go: {scenario.go}",
        "=" * _WIDTH,
        "",
    ]
    scenario.show(page)
    return page.text()


# --------------------------------------------------------------------------------------
# The subcommand.
# --------------------------------------------------------------------------------------

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
