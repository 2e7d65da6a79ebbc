"""The race detector's happens-before core: logical threads, vector clocks, sync variables.

Everything else in ``safemap.race`` is built on the operations here:

- A **logical thread** (:class:`ThreadState`) is an OS thread, an executor task or a
  ``Timer`` callback. Each has a detector-owned id (``tid``, never reused; Python reuses
  ``get_ident()`` values) and a vector clock ``vc`` (tid -> clock). ``vc[tid]`` is the
  thread's own clock; it advances on every release and fork, so an access is named by the
  *epoch* ``(tid, vc[tid])`` in force when it ran.
- An access with epoch ``(t, c)`` happens-before everything a thread ``u`` does from the
  moment ``u.vc.get(t, 0) >= c`` (:func:`ordered`).
- A :class:`SyncVar` holds the clock ``L`` of a synchronization object (a lock, a queue
  slot, a future, a thread's end). :func:`release` sets ``L := C_t`` (a lock: the releaser
  held it, so it already joined ``L`` on acquire), :func:`release_merge` sets
  ``L := L ⊔ C_t`` (several releasers, e.g. ``Semaphore.release`` or ``Event.set``), and
  :func:`acquire` sets ``C_t := C_t ⊔ L``. Both releases then advance ``C_t(t)``, so
  accesses after the release are not ordered by it.

Invariants: a thread's ``vc`` is written only by that thread (every operation here acts on
the caller's current logical thread); a SyncVar's ``vc`` is replaced, never mutated in
place, so a reader that loaded it sees one consistent clock without a lock. ``_lock``
serialises the replacement of a SyncVar's clock (a compare-and-set: the merged clock is
built outside it, because building allocates, and an allocation can run a finalizer that
releases into a SyncVar on this very thread); it is a raw ``_thread`` lock created at
import, so the detector's own locking never creates happens-before edges.
"""

from __future__ import annotations

import _thread
import itertools
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from types import CodeType, FrameType

__all__ = [
    "Stack",
    "SyncVar",
    "ThreadState",
    "acquire",
    "activate",
    "capture_stack",
    "current",
    "finish",
    "fork",
    "observe_end",
    "ordered",
    "release",
    "release_merge",
    "set_history_size",
]

# A captured stack: innermost frame first, as (code, line number) pairs. Code objects are
# kept (not frames), so a stored stack never keeps a frame's locals alive.
Stack = tuple[tuple[CodeType, int], ...]

#: Frames kept per captured stack.
STACK_DEPTH = 12
#: Events kept per logical thread: ``32768 * 2**history_size`` as Go's GORACE, see
#: :func:`set_history_size`.
_history_len = 32768 * 2

_lock = _thread.allocate_lock()
_tids = itertools.count(1)  # T0 is the main thread
_local = threading.local()


class ThreadState:
    """A logical thread: its id, display name, vector clock, creation site and the ring
    buffer of its recent access stacks (``history``), used to print the previous access of
    a race. ``events`` counts every stack ever recorded; event ``n`` is still in the ring
    while ``n >= events - len(history)``."""

    __slots__ = ("created_at", "events", "finished", "history", "name", "tid", "vc")

    def __init__(self, tid: int, name: str, vc: dict[int, int], created_at: Stack | None):
        self.tid = tid
        self.name = name
        self.vc = vc
        self.created_at = created_at
        self.finished = False
        self.history: deque[Stack] = deque(maxlen=_history_len)
        self.events = 0

    @property
    def epoch(self) -> tuple[int, int]:
        """``(tid, own clock)``: names the accesses this thread makes until its next release."""
        return self.tid, self.vc[self.tid]

    @property
    def label(self) -> str:
        """How reports name it: ``main thread`` or ``thread T3 (worker-1)``."""
        if self.tid == 0:
            return "main thread"
        return f"thread T{self.tid} ({self.name})"

    def record(self, stack: Stack) -> int:
        """Keep ``stack`` in the history ring and return its event number."""
        self.history.append(stack)
        self.events += 1
        return self.events - 1

    def recall(self, event: int) -> Stack | None:
        """The stack recorded as ``event``, or ``None`` if the ring has evicted it."""
        offset = event - (self.events - len(self.history))
        if 0 <= offset < len(self.history):
            return self.history[offset]
        return None

    def tick(self) -> None:
        self.vc[self.tid] += 1

    def __repr__(self) -> str:
        return f"<ThreadState {self.label} vc={self.vc}>"


class SyncVar:
    """The clock of one synchronization object (see the module docstring)."""

    __slots__ = ("__weakref__", "vc")

    def __init__(self) -> None:
        self.vc: dict[int, int] = {}


def set_history_size(history_size: int) -> None:
    """Apply GORACE's ``history_size`` (0..7) to threads created from now on."""
    global _history_len
    if not 0 <= history_size <= 7:
        raise ValueError(f"history_size must be in 0..7, got {history_size}")
    _history_len = 32768 * 2**history_size


def _new_state(name: str, vc: dict[int, int], created_at: Stack | None) -> ThreadState:
    tid = next(_tids)
    vc[tid] = 1
    return ThreadState(tid, name, vc, created_at)


_main_state = ThreadState(0, "main", {0: 1}, None)


def current() -> ThreadState:
    """The caller's logical thread, created on first use for a thread the detector did not
    see start (it then has no creation site and inherits nothing)."""
    try:
        return _local.state  # type: ignore[no-any-return]
    except AttributeError:
        pass
    thread = threading.current_thread()
    if thread is threading.main_thread():
        state = _main_state
    else:
        state = _new_state(thread.name, {}, None)
        # A thread the detector did not see start (started before it was enabled) has no
        # end clock of its own: join() and is_alive() find its state here and, once the
        # thread is over, take its final clock (see :func:`observe_end`).
        vars(thread)[STATE_ATTR] = state
    _local.state = state
    return state


#: The attribute of a ``threading.Thread`` holding the logical thread :func:`current`
#: created for it.
STATE_ATTR = "_safemap_race_state"


def observe_end(state: ThreadState) -> None:
    """The end of a thread that is over (``join`` returned, ``is_alive()`` is false),
    known only by its logical thread ``state``: its clock is final (only that thread wrote
    it), so the caller happens-after everything it did, and it is marked finished."""
    state.finished = True
    _join(current().vc, state.vc)


def ordered(epoch: tuple[int, int], state: ThreadState) -> bool:
    """Whether the access named ``epoch`` happens-before ``state``'s next access."""
    tid, clock = epoch
    return state.vc.get(tid, 0) >= clock


def _join(into: dict[int, int], other: dict[int, int]) -> None:
    for tid, clock in other.items():
        if into.get(tid, 0) < clock:
            into[tid] = clock


def acquire(var: SyncVar) -> None:
    """``C_t := C_t ⊔ L``: the caller now happens-after every release into ``var``."""
    _join(current().vc, var.vc)


def release(var: SyncVar) -> None:
    """``L := C_t``; advance ``C_t``. For objects with one holder at a time (locks)."""
    state = current()
    var.vc = dict(state.vc)
    state.tick()


def release_merge(var: SyncVar) -> None:
    """``L := L ⊔ C_t``; advance ``C_t``. For objects several threads release into."""
    state = current()
    while True:
        seen = var.vc
        merged = dict(seen)
        _join(merged, state.vc)
        with _lock:  # nothing in here allocates: no finalizer can run while it is held
            if var.vc is seen:
                var.vc = merged
                break
    state.tick()


def fork(name: str, created_at: Stack | None) -> ThreadState:
    """A new logical thread whose past includes the caller's (``Thread.start``, ``submit``,
    ``Timer``); the caller's clock advances. Activate it in the new thread with
    :func:`activate`."""
    parent = current()
    child = _new_state(name, dict(parent.vc), created_at)
    parent.tick()
    return child


@contextmanager
def activate(state: ThreadState) -> Iterator[ThreadState]:
    """Run the block as logical thread ``state`` (on the calling OS thread), then restore
    the previous one. An executor worker runs each task this way, so tasks that share an OS
    thread stay unordered unless something orders them."""
    previous = getattr(_local, "state", None)
    _local.state = state
    try:
        yield state
    finally:
        if previous is None:
            del _local.state
        else:
            _local.state = previous


def finish(state: ThreadState, var: SyncVar) -> None:
    """Mark ``state`` finished and publish its final clock into ``var`` (what ``join`` or
    ``result()`` will acquire). Call it on the finishing thread, while ``state`` is active."""
    state.finished = True
    release_merge(var)


# Interned stacks: a loop records the same stack over and over, so the history rings hold
# references to one shared tuple instead of copies. Bounded: cleared when it fills up (an
# interned stack stays valid after that, it just stops being shared).
_INTERN_MAX = 1 << 16
_interned: dict[Stack, Stack] = {}


def capture_stack(skip: int = 1) -> Stack:
    """The caller's stack (``skip`` = frames to drop above the caller), innermost first,
    without the detector's own frames. Equal stacks are returned as one shared object."""
    frame: FrameType | None = sys._getframe(skip + 1)
    out: list[tuple[CodeType, int]] = []
    own = _OWN_DIR
    while frame is not None and len(out) < STACK_DEPTH:
        code = frame.f_code
        if not code.co_filename.startswith(own):
            out.append((code, frame.f_lineno))
        frame = frame.f_back
    stack = tuple(out)
    shared = _interned.get(stack)
    if shared is not None:
        return shared
    if len(_interned) >= _INTERN_MAX:
        _interned.clear()
    _interned[stack] = stack
    return stack


def _own_dir() -> str:
    import os

    return os.path.dirname(os.path.abspath(__file__)) + os.sep


_OWN_DIR = _own_dir()
