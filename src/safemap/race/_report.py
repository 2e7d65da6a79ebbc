"""Race reports: the :class:`RaceReport` object and its Go-style text.

A report is built once, when the race is found, from the two accesses' stored records; its
text never changes afterwards (source lines are read with :mod:`linecache` at that moment).
Layout (Go's, adapted to maps)::

    ==================
    WARNING: DATA RACE
    Write at map 'cache' key 'user:42' by thread T3 (worker-1):
      app/cache.py:42 in put
        self._d[key] = value
      app/worker.py:17 in run

    Previous read at map 'cache' key 'user:42' by main thread:
      app/cache.py:30 in get
      tests/test_cache.py:55 in test_concurrent

    Thread T3 (running) created at:
      tests/test_cache.py:51 in test_concurrent
    ==================

The source line is printed under the first frame of the current access only. A shape
conflict names the map's ``key set`` instead of a key. A previous access whose stack was
evicted from its thread's history prints ``[failed to restore the stack]``.
"""

from __future__ import annotations

import linecache
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._runtime import Stack, ThreadState

__all__ = ["KINDS", "Access", "Frame", "RaceReport", "conflict_kind", "format_frames"]

FAILED = "[failed to restore the stack]"
SEPARATOR = "=================="

#: Every value ``RaceReport.kind`` can take.
KINDS = frozenset(
    {
        "read/write",
        "write/write",
        "atomic/read",
        "atomic/write",
        "iteration/write",
        "observation/write",
    }
)

# Access kinds (as stored in the shadow) -> the verb that starts a report header.
_VERBS = {
    "read": "read",
    "write": "write",
    "atomic": "atomic operation",
    "observation": "read",
    "iteration": "iteration",
    "change": "write",
}


def conflict_kind(a: str, b: str) -> str:
    """The report kind of two conflicting access kinds (order does not matter)."""
    pair = {a, b}
    if "iteration" in pair:
        return "iteration/write"
    if "observation" in pair:
        return "observation/write"
    if "atomic" in pair:
        return "atomic/write" if "write" in pair else "atomic/read"
    return "write/write" if pair == {"write"} else "read/write"


class Frame(NamedTuple):
    """One stack frame of an access: file, line and function name."""

    filename: str
    lineno: int
    function: str

    def site(self) -> tuple[str, int]:
        return self.filename, self.lineno


@dataclass(frozen=True)
class Access:
    """One side of a race.

    ``thread_name`` is the thread's name (``MainThread`` for the main thread),
    ``thread_id`` the detector's own id (``T<id>``, never reused; 0 is the main thread),
    ``operation`` the map operation (``"d[k] = v"``, ``"get"``, ``"iter"``, ...), ``kind``
    the access kind (``read``, ``write``, ``atomic``, ``observation``, ``iteration``,
    ``change``), ``stack`` the frames innermost first (empty if not restored) and
    ``stack_restored`` whether the history still held it."""

    thread_name: str
    thread_id: int
    operation: str
    kind: str
    stack: tuple[Frame, ...]
    stack_restored: bool
    thread_label: str

    @property
    def site(self) -> tuple[str, int] | None:
        """``(file, line)`` of the innermost frame: what deduplication compares."""
        return self.stack[0].site() if self.stack else None


def to_frames(stack: Stack | None) -> tuple[Frame, ...]:
    if not stack:
        return ()
    return tuple(Frame(code.co_filename, line, code.co_name) for code, line in stack)


def make_access(state: ThreadState, op: str, kind: str, stack: Stack | None) -> Access:
    name = "MainThread" if state.tid == 0 else state.name
    return Access(
        thread_name=name,
        thread_id=state.tid,
        operation=op,
        kind=kind,
        stack=to_frames(stack),
        stack_restored=stack is not None,
        thread_label=state.label,
    )


def _strip(path: str, prefix: str) -> str:
    return path[len(prefix) :] if prefix and path.startswith(prefix) else path


def format_frames(
    frames: tuple[Frame, ...], prefix: str = "", *, source: bool = False
) -> list[str]:
    """Report lines for a stack (``source``: the source line under the first frame)."""
    if not frames:
        return [f"  {FAILED}"]
    lines = []
    for i, frame in enumerate(frames):
        lines.append(f"  {_strip(frame.filename, prefix)}:{frame.lineno} in {frame.function}")
        if source and i == 0:
            text = linecache.getline(frame.filename, frame.lineno).strip()
            if text:
                lines.append(f"    {text}")
    return lines


def _key_text(key: Any) -> str:
    try:
        text = repr(key)
    except Exception as exc:  # a broken __repr__ must not lose the report
        text = f"<{type(key).__name__} object; repr failed: {type(exc).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


class RaceReport:
    """One data race on a watched map: two conflicting accesses from different threads,
    neither happening-before the other.

    Attributes: ``map_name``; ``key`` (``None`` for a conflict on the map's shape, i.e.
    its key set); ``kind`` (one of :data:`KINDS`); ``current`` (the access that found the
    race) and ``previous`` (the earlier access), each an :class:`Access`;
    ``current_created_at`` / ``previous_created_at`` (where each thread was started,
    ``None`` for the main thread). ``str(report)`` is the Go-style text."""

    __slots__ = (
        "_text",
        "current",
        "current_created_at",
        "current_thread_finished",
        "key",
        "kind",
        "map_name",
        "previous",
        "previous_created_at",
        "previous_thread_finished",
    )

    def __init__(
        self,
        map_name: str,
        key: Any,
        kind: str,
        current: Access,
        previous: Access,
        *,
        current_created_at: tuple[Frame, ...] | None = None,
        previous_created_at: tuple[Frame, ...] | None = None,
        current_thread_finished: bool = False,
        previous_thread_finished: bool = False,
        strip_path_prefix: str = "",
        has_key: bool = True,
    ) -> None:
        self.map_name = map_name
        self.key = key if has_key else None
        self.kind = kind
        self.current = current
        self.previous = previous
        self.current_created_at = current_created_at
        self.previous_created_at = previous_created_at
        self.current_thread_finished = current_thread_finished
        self.previous_thread_finished = previous_thread_finished
        self._text = self._format(has_key, strip_path_prefix)

    @property
    def sites(self) -> frozenset[tuple[str, int] | None]:
        """The unordered pair of access sites (innermost frames) deduplication compares."""
        return frozenset((self.current.site, self.previous.site))

    def _header(self, access: Access, has_key: bool, previous: bool) -> str:
        verb = _VERBS.get(access.kind, access.kind)
        verb = "Previous " + verb if previous else verb[:1].upper() + verb[1:]
        where = f"key {_key_text(self.key)}" if has_key else "key set"
        return f"{verb} at map '{self.map_name}' {where} by {access.thread_label}:"

    def _format(self, has_key: bool, prefix: str) -> str:
        lines = [SEPARATOR, "WARNING: DATA RACE", self._header(self.current, has_key, False)]
        lines += format_frames(self.current.stack, prefix, source=True)
        lines.append("")
        lines.append(self._header(self.previous, has_key, True))
        lines += format_frames(self.previous.stack, prefix)
        blocks: list[list[str]] = []
        for access, created, finished in (
            (self.current, self.current_created_at, self.current_thread_finished),
            (self.previous, self.previous_created_at, self.previous_thread_finished),
        ):
            if access.thread_id == 0:
                continue
            status = "finished" if finished else "running"
            block = [f"Thread T{access.thread_id} ({status}) created at:"]
            block += format_frames(created or (), prefix)
            blocks.append(block)
        for block in blocks:
            lines.append("")
            lines += block
        lines.append(SEPARATOR)
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        key = "" if self.key is None else f" key={_key_text(self.key)}"
        return (
            f"<RaceReport {self.kind} on {self.map_name!r}{key}: "
            f"{self.current.thread_label} {self.current.operation!r} vs "
            f"{self.previous.thread_label} {self.previous.operation!r}>"
        )
