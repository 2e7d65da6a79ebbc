"""The errors :class:`~safemap.CheckedDict` raises, with Go's messages.

Every error is raised in the thread that detects the overlap, at once, before the
operation touches the dict (the dict is unchanged by the refused operation). Each carries:

- ``map_name``: the map's ``name``, or ``"0x..."`` (its ``id``) when it has none;
- ``other_thread``: the name of the other thread (``None`` if it has already exited);
- ``other_stack``: that thread's stack as text, taken when the overlap was detected,
  while the other thread was still inside the overlapping operation (``None`` if the
  thread had exited by then). For an iteration it shows where the iterating thread is
  in its loop.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any

from .._frames import current_frames

__all__ = [
    "ConcurrentIterationError",
    "ConcurrentMapMisuse",
    "ConcurrentReadWriteError",
    "ConcurrentWriteError",
    "ThreadConfinementError",
]


class ConcurrentMapMisuse(RuntimeError):
    """Base of the fail-fast errors: a map was used by several threads at once."""

    def __init__(
        self,
        message: str,
        map_name: str | None = None,
        other_thread: str | None = None,
        other_stack: str | None = None,
    ) -> None:
        super().__init__(message, map_name, other_thread, other_stack)
        self.message = message
        self.map_name = map_name
        self.other_thread = other_thread
        self.other_stack = other_stack

    def __str__(self) -> str:
        return self.message


class ConcurrentWriteError(ConcurrentMapMisuse):
    """``concurrent map writes``: two writes overlapped."""


class ConcurrentReadWriteError(ConcurrentMapMisuse):
    """``concurrent map read and map write``: a read overlapped a write."""


class ConcurrentIterationError(ConcurrentMapMisuse):
    """``concurrent map iteration and map write``: a write overlapped an iteration."""


class ThreadConfinementError(ConcurrentMapMisuse):
    """``map confined to thread``: a confined map was used by another thread."""


# kind -> (class, Go's text, what the current thread does, what the other thread did)
_KINDS: dict[int, tuple[type[ConcurrentMapMisuse], str, str, str]] = {
    1: (ConcurrentWriteError, "concurrent map writes", "write", "writing"),
    2: (ConcurrentReadWriteError, "concurrent map read and map write", "write", "reading"),
    3: (ConcurrentReadWriteError, "concurrent map read and map write", "read", "writing"),
    4: (ConcurrentIterationError, "concurrent map iteration and map write", "write", "iterating"),
    5: (ConcurrentIterationError, "concurrent map iteration and map write", "iterate", "writing"),
}


def _thread_name(ident: int) -> str | None:
    for t in threading.enumerate():
        if t.ident == ident:
            return t.name
    return None


def _describe(name: str | None, ident: int) -> str:
    """``thread 'name' (ident N)``; the confinement message drops the first word."""
    return f"thread {name!r} (ident {ident})" if name is not None else f"thread ident {ident}"


def _make_error(kind: int, mapping: Any, other_ident: int) -> ConcurrentMapMisuse:
    """Build the error (called from C on the error path only; never on the fast path)."""
    frame = current_frames().get(other_ident)
    stack = "".join(traceback.format_stack(frame)) if frame is not None else None
    del frame
    name = mapping.name
    map_name = name if name is not None else f"0x{id(mapping):x}"
    shown = repr(name) if name is not None else f"at {map_name}"
    other = _thread_name(other_ident)
    me = threading.current_thread()
    if kind == 6:
        message = (
            f"map confined to thread {_describe(other, other_ident)[7:]}: map {shown} used by "
            f"{_describe(me.name, threading.get_ident())}"
        )
        cls: type[ConcurrentMapMisuse] = ThreadConfinementError
        where = "Current stack of the owning thread"
    else:
        cls, text, doing, did = _KINDS[kind]
        message = (
            f"{text}: map {shown}: {_describe(me.name, threading.get_ident())} tried to "
            f"{doing} while {_describe(other, other_ident)} was {did}"
        )
        where = f"Stack of {_describe(other, other_ident)}, still {did}"
    if stack is not None:
        message += f"\n{where}:\n{stack.rstrip()}"
    else:
        message += "\n(the other thread has exited: no stack)"
    return cls(message, map_name, other, stack)
