"""Deterministic thread schedules for ``safemap demo``.

The threads are not left to the scheduler. The demo's data carry *switch points* — a value
whose ``+`` or comparison, or a key whose ``__hash__``/``__eq__``, runs the current thread's
next scripted step — and each step hands control to another thread with
:class:`threading.Event` (or runs it to completion). So "worker-1 has read the count and is
about to store it when worker-2 runs" happens at exactly that point on every run, and an
overlap that ``checked()`` must see is forced, not hoped for.

For :mod:`safemap.race`, threads instead take turns passed by a plain flag polled with
``time.sleep`` (:class:`Baton`), which the detector does not model as synchronization: the
threads never overlap, and the race is reported anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

#: How long a scripted hand-off may wait before the demo gives up (it never should).
STEP_TIMEOUT = 30.0

_script = threading.local()

Step = tuple[str, Callable[[], object]]


def switch_point(kind: str) -> None:
    """Run the calling thread's next scripted step if it is for ``kind``; else nothing."""
    steps: list[Step] | None = getattr(_script, "steps", None)
    if steps and steps[0][0] == kind:
        _, action = steps.pop(0)
        action()


class Count(int):
    """An ``int`` whose ``+`` is a switch point (``"add"``): between the read and the store
    of ``d[k] += 1``. The sum is a plain ``int``."""

    def __add__(self, other: int) -> int:
        switch_point("add")
        return int(self) + other


class Text(str):
    """A ``str`` whose ``==`` and formatting are a switch point (``"use"``): a loop body
    using the value it was given."""

    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        switch_point("use")
        return str.__eq__(self, other)

    def __format__(self, spec: str) -> str:
        switch_point("use")
        return format(str(self), spec)


class Time(int):
    """An ``int`` whose ``<`` is a switch point (``"use"``)."""

    def __lt__(self, other: int) -> bool:
        switch_point("use")
        return int(self) < other


class Key(str):
    """A ``str`` key whose hashing and comparison are a switch point (``"lookup"``): the
    dict calls them inside the operation (``__hash__`` when this object is the key given,
    ``__eq__`` when it is the stored key and an equal one is given), so a step taken there
    happens while that operation is in progress."""

    def __hash__(self) -> int:
        switch_point("lookup")
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        switch_point("lookup")
        return str.__eq__(self, other)


def wait(event: threading.Event) -> None:
    if not event.wait(STEP_TIMEOUT):
        raise RuntimeError("safemap demo: a scripted thread hand-off timed out")


class DemoThread(threading.Thread):
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

    def finish(self) -> DemoThread:
        self.join(STEP_TIMEOUT * 2)
        if self.is_alive():
            raise RuntimeError(f"safemap demo: thread {self.name} did not finish")
        return self


def run_to_end(
    name: str, fn: Callable[..., Any], *args: Any, script: tuple[Step, ...] = ()
) -> DemoThread:
    """Run ``fn(*args)`` in a new thread to completion."""
    thread = DemoThread(name, fn, *args, script=script)
    thread.start()
    return thread.finish()


def other(
    kind: str, name: str, fn: Callable[..., Any], *args: Any, into: list[DemoThread] | None = None
) -> Step:
    """A step: at the next ``kind`` switch point, run ``fn(*args)`` in a new thread called
    ``name`` to completion (appended to ``into``, if given)."""

    def step() -> None:
        thread = run_to_end(name, fn, *args)
        if into is not None:
            into.append(thread)

    return kind, step


class Baton:
    """Passes the turn between threads with a plain attribute polled with ``time.sleep``:
    no lock, event or queue, so the race detector sees no synchronization in it."""

    def __init__(self) -> None:
        self.passed = False

    def give(self) -> None:
        self.passed = True

    def take(self) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT
        while not self.passed:
            if time.monotonic() > deadline:
                raise RuntimeError("safemap demo: a baton was never passed")
            time.sleep(0.001)


def in_turns(*turns: tuple[str, Callable[..., Any], tuple[Any, ...]]) -> list[DemoThread]:
    """Run each ``(name, fn, args)`` in its own thread, one after the other: thread i+1
    starts its work when thread i has finished its, ordered only by batons. All threads are
    started first and joined last, so neither ``start`` nor ``join`` orders them, and every
    thread stays alive until the last turn is over, so reports always say ``running``."""
    batons = [Baton() for _ in turns]
    all_done = Baton()
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

        threads.append(DemoThread(name, body))
    for t in threads:
        t.start()
    batons[-1].take()
    all_done.give()
    return [t.finish() for t in threads]


def overlapping_increments(
    name1: str,
    fn1: Callable[..., Any],
    args1: tuple[Any, ...],
    name2: str,
    fn2: Callable[..., Any],
    args2: tuple[Any, ...],
) -> tuple[DemoThread, DemoThread]:
    """Two threads each run code doing ``d[key] += 1`` (``d[Key] = Count``), scripted so
    both read, then the first one's store is in progress (paused in the key's lookup) while
    the second one stores."""
    read1, read2, storing1, tried2 = (threading.Event() for _ in range(4))

    def after_read2() -> None:
        read2.set()
        wait(storing1)

    second = DemoThread(name2, fn2, *args2, script=(("add", after_read2),), on_exit=tried2.set)

    def after_read1() -> None:
        read1.set()
        second.start()
        wait(read2)

    def storing() -> None:
        storing1.set()
        wait(tried2)

    first = DemoThread(name1, fn1, *args1, script=(("add", after_read1), ("lookup", storing)))
    first.start()
    first.finish()
    second.finish()
    return first, second
