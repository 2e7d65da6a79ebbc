"""``no_leaks``: fail a test that leaves threads, open actor maps or pending tasks behind.

Go's goleak (``VerifyNone``) for safemap: on exit, everything of these kinds that did not
exist on entry and is still there is a leak.

- **Threads** started inside (known to :mod:`threading`, daemon or not) and still alive.
  Process-lifetime helpers of safemap itself (``DEFAULT_IGNORED_THREADS``) are not leaks.
- **Actor maps** (``ActorMap``, ``AsyncActorMap``) constructed inside, still alive and not
  ``closed``. A map that was garbage-collected is not a leak: dropping an ``ActorMap``
  closes it (its owner thread ends once its queue drains, which the retry lets happen), and
  an ``AsyncActorMap`` whose loop closed is closed. A leaked ``ActorMap`` is reported once,
  as a map, not also as its owner thread.
- **asyncio tasks** created inside and not done, on the loop that runs the check (the async
  forms only: a synchronous block cannot let a loop's tasks run).

**Retry.** Things that are finishing get to finish: the check repeats, with short growing
pauses (``await asyncio.sleep`` in the async forms, so the loop's tasks run), until nothing
leaks or ``timeout`` seconds have passed; only then does it raise :class:`LeakError`. When
something looked leaked it also runs the garbage collector (see ``_Check._pauses``): a map
that only garbage refers to is not a leak.

**Where.** Each leak is named with its stack: a thread's current stack (from the function
it started with inward), an actor map's creation site (its innermost 16 frames), a task's
await chain (its coroutine and each one it awaits, down to where it is suspended).
Creation sites cost nothing outside a check: the actor maps report their construction
through a hook that is set only while a check runs.

**Ignore lists.** ``ignore_threads``: thread names, exact or :mod:`fnmatch` patterns; an
``ActorMap`` whose owner thread (named after the map) matches is ignored too.
``ignore_functions``: qualified names (``module.Qualified.name``, exact or patterns) of the
function a thread or task *started with*: the bottom of its stack, below ``threading``'s
own frames. (goleak's ``IgnoreTopFunction`` matches the innermost frame; a Python thread's
innermost frame is usually a generic wait in ``threading`` or ``queue``, while the function
it started with says which thread it is, wherever it is blocked.)

**Scope.** The check sees the whole process, as goleak does: a thread started by another
thread while it runs counts too. The exception a checked block raises is never replaced:
leaks found then are added to it as a note; ``KeyboardInterrupt``, ``SystemExit`` and
cancellation skip the check.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from types import FrameType, TracebackType
from typing import Any, Final, ParamSpec, TypeVar

from .._frames import current_frames
from ..protocol.sidecar import existing_sidecar, sidecar
from .checker import positive_seconds
from .stress import _stack

__all__ = ["DEFAULT_IGNORED_THREADS", "Leak", "LeakError", "no_leaks"]

P = ParamSpec("P")
R = TypeVar("R")

#: Threads of safemap itself that live as long as the process: the actor maps' exit
#: watcher, started by the first non-daemon ``ActorMap``.
DEFAULT_IGNORED_THREADS: Final = ("safemap-actor-exit-watcher",)

_SITE_FRAMES: Final = 16  # innermost frames kept of an actor map's creation site
_FIRST_PAUSE: Final = 0.001
_MAX_PAUSE: Final = 0.05


@dataclass(frozen=True)
class Leak:
    """One thing a checked block left behind.

    ``kind`` is ``"thread"``, ``"actor map"`` or ``"task"``; ``name`` its name; ``what``
    says what it is and what the stack shows (the function a thread or task started
    with, an actor map's type); ``stack`` is that stack, formatted as a traceback is.
    """

    kind: str
    name: str
    what: str
    stack: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r} {self.what}:\n{self.stack.rstrip()}"


class LeakError(AssertionError):
    """A checked block left threads, open actor maps or pending tasks behind (``leaks``),
    still there after the retry (``timeout`` seconds)."""

    def __init__(self, leaks: Iterable[Leak], timeout: float, where: str = "") -> None:
        self.leaks = tuple(leaks)
        self.timeout = timeout
        super().__init__(describe(self.leaks, timeout, where))


def describe(leaks: tuple[Leak, ...], timeout: float, where: str = "") -> str:
    """The text of a :class:`LeakError`: a header, then each leak with its stack."""
    count = f"{len(leaks)} leak{'s' if len(leaks) != 1 else ''}"
    head = f"{where} left {count}" if where else f"{count} found"
    lines = [f"{head}, still there after {timeout:g} s:"]
    lines.extend(str(leak) for leak in leaks)
    return "\n".join(lines)


# ------------------------------------------------------------------ actor maps

_active_lock = threading.Lock()
_active: list[_Check] = []


def _record_new_map(m: object) -> None:
    """The actor maps' construction hook while a check runs: remember the map (weakly) in
    every check that is recording, and its creation site in its sidecar."""
    site = traceback.StackSummary.extract(
        _outside_actor(sys._getframe(1)), limit=_SITE_FRAMES, lookup_lines=False
    )
    site.reverse()  # most recent call last, as tracebacks print
    sidecar(m).created_at = site
    with _active_lock:
        for check in _active:
            if check.exempt == 0:
                check.maps.append(weakref.ref(m))


def _outside_actor(frame: FrameType | None) -> Iterator[tuple[FrameType, int]]:
    """``frame`` and its callers, starting at the first frame outside ``safemap.actor``
    (so a creation site ends at the line that constructed the map)."""
    while frame is not None and frame.f_globals.get("__name__", "").startswith("safemap.actor"):
        frame = frame.f_back
    yield from traceback.walk_stack(frame)


def _lifecycle() -> Any:
    from safemap.actor import _lifecycle

    return _lifecycle


def _activate(check: _Check) -> None:
    lifecycle = _lifecycle()
    with _active_lock:
        _active.append(check)
        lifecycle.on_new_map = _record_new_map


def _deactivate(check: _Check) -> None:
    lifecycle = _lifecycle()
    with _active_lock:
        _active.remove(check)
        if not _active:
            lifecycle.on_new_map = None


# ------------------------------------------------------------------ the check


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name == p or fnmatchcase(name, p) for p in patterns)


def _function_name(code: Any, module: object) -> str:
    return f"{module}.{getattr(code, 'co_qualname', code.co_name)}"


def _thread_entry(thread: threading.Thread, frame: FrameType | None) -> tuple[str, str]:
    """The qualified name of the function ``thread`` started with, and its stack from that
    function's frame inward (formatted).

    The function it started with is its class's ``run`` if overridden, else its target:
    the frame ``Thread.run`` called. Found by code object, so wrappers around threading's
    bootstrap (the race detector's) do not hide it. A target that is not Python code (or a
    thread between frames) is named from the target itself, with the stack from the first
    frame outside ``threading``."""
    frames = []  # outermost first
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    run = type(thread).run
    run_code = getattr(run, "__code__", None)
    for i, f in enumerate(frames):
        if f.f_code is run_code:
            entry = i + 1 if run_code is _THREAD_RUN else i
            if entry < len(frames):
                code, module = frames[entry].f_code, frames[entry].f_globals.get("__name__")
                summary = traceback.StackSummary.extract((f, f.f_lineno) for f in frames[entry:])
                return _function_name(code, module), "".join(summary.format())
            break
    target = getattr(thread, "_target", None) or run
    name = f"{getattr(target, '__module__', None)}.{getattr(target, '__qualname__', target)}"
    return name, _stack(frames[-1] if frames else None)


_THREAD_RUN: Final = threading.Thread.run.__code__


def _await_chain(task: asyncio.Task[Any]) -> tuple[str, str]:
    """A task's coroutine function (qualified name) and its await chain, formatted: each
    coroutine or generator it awaits in turn, down to where it is suspended."""
    coro: Any = task.get_coro()
    frames: list[tuple[FrameType, int]] = []
    function = f"{type(coro).__module__}.{type(coro).__qualname__}"
    first = True
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append((frame, frame.f_lineno))
            if first:
                function = _function_name(frame.f_code, frame.f_globals.get("__name__"))
        first = False
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    stack = "".join(traceback.format_list(traceback.StackSummary.extract(frames)))
    waiting = getattr(task, "_fut_waiter", None)
    if waiting is not None:
        stack += f"  waiting for {waiting!r}\n"
    return function, stack or "  (not started yet)\n"


class _Check:
    """One run of the check: what existed on entry, and what was created since."""

    def __init__(
        self,
        ignore_threads: tuple[str, ...],
        ignore_functions: tuple[str, ...],
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.ignore_threads = ignore_threads
        self.ignore_functions = ignore_functions
        self.loop = loop
        self.maps: list[weakref.ref[Any]] = []
        self.exempt = 0  # > 0 while creations are not this check's (see exempted())
        self.threads = set(threading.enumerate())
        self.tasks: set[asyncio.Task[Any]] = set()
        if loop is not None:
            self.tasks = asyncio.all_tasks(loop)
            current = asyncio.current_task(loop)
            if current is not None:
                self.tasks.add(current)
        _activate(self)

    def close(self) -> None:
        _deactivate(self)

    @contextmanager
    def exempted(self) -> Iterator[None]:
        """Threads started and actor maps created in this block are not this check's
        (for the plugin: fixtures of a wider scope than the test)."""
        self.exempt += 1
        try:
            yield
        finally:
            self.exempt -= 1
            self.threads.update(threading.enumerate())

    def leaks(self) -> list[Leak]:
        """What was created since entry and is still there, minus the ignored."""
        found: list[Leak] = []
        owners: set[threading.Thread] = set()
        with _active_lock:
            maps = list(self.maps)
        for ref in maps:
            m = ref()
            if m is None or m.closed:
                continue
            owner = getattr(m, "_thread", None)  # an ActorMap's owner thread
            if owner is not None:
                owners.add(owner)
                if _matches(owner.name, self.ignore_threads):
                    continue
            site = getattr(existing_sidecar(m), "created_at", None)
            stack = "".join(site.format()) if site is not None else "  (creation site unknown)\n"
            found.append(
                Leak("actor map", m.name, f"({type(m).__name__}) not closed, created at", stack)
            )
        frames = current_frames()
        for thread in threading.enumerate():
            if (
                thread in self.threads
                or thread in owners
                or not thread.is_alive()
                or isinstance(thread, threading._DummyThread)  # not started by threading
                or _matches(thread.name, self.ignore_threads)
            ):
                continue
            frame = frames.get(thread.ident) if thread.ident is not None else None
            function, stack = _thread_entry(thread, frame)
            del frame
            if _matches(function, self.ignore_functions):
                continue
            daemon = "(daemon) " if thread.daemon else ""
            what = f"{daemon}started with {function}, still running at"
            found.append(Leak("thread", thread.name, what, stack))
        del frames
        if self.loop is not None and not self.loop.is_closed():
            for task in asyncio.all_tasks(self.loop):
                if task in self.tasks or task.done():
                    continue
                function, stack = _await_chain(task)
                if _matches(function, self.ignore_functions):
                    continue
                what = f"running {function}, still pending at"
                found.append(Leak("task", task.get_name(), what, stack))
        return found

    # Why the retry collects garbage (only when something looked leaked, at most twice): a
    # map that only garbage holds is not "still referenced", and collecting it runs its
    # finalizer (an ActorMap's closes it, so its owner thread ends). On free-threaded
    # builds it also completes releases that other threads deferred: an object created by
    # one thread and dropped by another is freed only when its creator merges its
    # reference counts, which an idle thread (an event loop waiting in select) never does
    # until a collection makes it.
    def _pauses(self, timeout: float) -> Iterator[float]:
        """Pauses (seconds) between attempts until ``timeout`` has passed."""
        deadline = time.monotonic() + timeout
        pause = _FIRST_PAUSE
        while (left := deadline - time.monotonic()) > 0:
            yield min(pause, left)
            pause = min(pause * 2, _MAX_PAUSE)

    def wait(self, timeout: float) -> list[Leak]:
        """The leaks still there after up to ``timeout`` seconds of retries."""
        for attempt, pause in enumerate(self._pauses(timeout)):
            if not self.leaks():
                return []
            if attempt == 0:
                gc.collect()  # see above _pauses
            time.sleep(pause)
        gc.collect()
        return self.leaks()

    async def await_(self, timeout: float) -> list[Leak]:
        """:meth:`wait`, letting the loop run while it pauses."""
        for attempt, pause in enumerate(self._pauses(timeout)):
            if not self.leaks():
                return []
            if attempt == 0:
                gc.collect()
            await asyncio.sleep(pause)
        gc.collect()
        return self.leaks()


def _patterns(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a collection of strings (not a single string)")
    patterns = tuple(value)
    for p in patterns:
        if not isinstance(p, str):
            raise TypeError(f"{name} must hold strings, got {p!r}")
    return patterns


def _skips(exc: BaseException | None) -> bool:
    """Whether an exception ends the block without a check (interrupts, cancellation)."""
    return exc is not None and not isinstance(exc, Exception)


def _report(leaks: list[Leak], timeout: float, exc: BaseException | None) -> None:
    if not leaks:
        return
    if exc is None:
        raise LeakError(leaks, timeout)
    # Never replace the block's own error: say what leaked too.
    exc.add_note(describe(tuple(leaks), timeout, "the failed block"))


class no_leaks:  # a class, so one object is a context manager and a decorator
    """Fail if the checked code leaves threads, open actor maps or pending asyncio tasks.

    Use it as a context manager (``with no_leaks():`` or ``async with no_leaks():``) or a
    decorator of a function or coroutine function (``@no_leaks()``). On exit, every thread
    started inside and still alive, every actor map created inside and not closed, and, in
    the async forms, every task created inside and not done on the running loop, is a leak.
    The check retries for up to ``timeout`` seconds (things that are finishing get to
    finish), then raises :class:`LeakError` (an ``AssertionError``) naming each leak with
    its stack.

    - ``ignore_threads``: thread names, exact or ``fnmatch`` patterns, that are not leaks
      (added to ``DEFAULT_IGNORED_THREADS``).
    - ``ignore_functions``: qualified names (``package.module.Class.method``), exact or
      patterns, of the function a thread or task started with (the bottom of its stack).
    - ``timeout``: seconds to let things finish, a positive number.

    An exception from the block propagates unchanged, with the leaks (if any) as a note.
    See the module docstring for exactly what is checked.
    """

    def __init__(
        self,
        *,
        ignore_threads: Iterable[str] = (),
        ignore_functions: Iterable[str] = (),
        timeout: float = 1.0,
    ) -> None:
        positive_seconds("timeout", timeout)
        self.ignore_threads = DEFAULT_IGNORED_THREADS + _patterns("ignore_threads", ignore_threads)
        self.ignore_functions = _patterns("ignore_functions", ignore_functions)
        self.timeout = float(timeout)
        self._checks: list[_Check] = []  # entered and not exited, innermost last

    def _start(self, loop: asyncio.AbstractEventLoop | None) -> _Check:
        return _Check(self.ignore_threads, self.ignore_functions, loop)

    def _finish(self, check: _Check, exc: BaseException | None) -> None:
        try:
            if not _skips(exc):
                _report(check.wait(self.timeout), self.timeout, exc)
        finally:
            check.close()

    async def _afinish(self, check: _Check, exc: BaseException | None) -> None:
        try:
            if not _skips(exc):
                _report(await check.await_(self.timeout), self.timeout, exc)
        finally:
            check.close()

    def __enter__(self) -> no_leaks:
        self._checks.append(self._start(None))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(self._checks.pop(), exc)

    async def __aenter__(self) -> no_leaks:
        self._checks.append(self._start(asyncio.get_running_loop()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._afinish(self._checks.pop(), exc)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``func`` (a function or a coroutine function): each call is checked,
        calls in several threads or tasks at once each on their own."""
        if inspect.iscoroutinefunction(func):
            coroutine_function: Callable[P, Awaitable[Any]] = func

            @functools.wraps(func)
            async def checked_coroutine(*args: P.args, **kwargs: P.kwargs) -> Any:
                check = self._start(asyncio.get_running_loop())
                try:
                    result = await coroutine_function(*args, **kwargs)
                except BaseException as exc:
                    await self._afinish(check, exc)
                    raise
                await self._afinish(check, None)
                return result

            return checked_coroutine  # type: ignore[return-value]

        @functools.wraps(func)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            check = self._start(None)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                self._finish(check, exc)
                raise
            self._finish(check, None)
            return result

        return checked
