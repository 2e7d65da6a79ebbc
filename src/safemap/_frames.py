"""``current_frames()``: ``sys._current_frames()`` without its deadlock.

On CPython 3.11 (python/cpython#106883), ``sys._current_frames()`` holds the runtime's
thread-list lock while it builds its result. An allocation there can start a garbage
collection, whose finalizers can release the GIL (a socket's ``__del__`` closing it);
another thread then takes the GIL and waits for the thread-list lock (its own
``sys._current_frames()``, a thread starting or exiting), while the first waits for the
GIL: the process hangs, Ctrl-C included. Seen in this project's suite on 3.11.7, with
several threads checking for leaked threads at once while redis connections were
collected. CPython's own fix (later releases) pauses the collector inside the call; this
does the same around it, for the releases without it.
"""

from __future__ import annotations

import gc
import sys
from _thread import allocate_lock
from types import FrameType

from .protocol._locked import locked

_lock = allocate_lock()


def current_frames() -> dict[int, FrameType]:
    """Every thread's current frame, by thread ident, as ``sys._current_frames()``, taken
    with the automatic garbage collection paused (so no finalizer runs meanwhile; calls
    are serialized so that one's pause cannot end during another's). The collector's
    state is restored after."""
    # ``locked``, not ``with``: no signal handler's exception can leave ``_lock`` held.
    return locked(_lock, _frames_uncollected)


def _frames_uncollected() -> dict[int, FrameType]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        if enabled:
            gc.enable()
