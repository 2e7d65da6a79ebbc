"""Sampled contention profile: which call sites wait on contended map locks, and for how long.

Go's mutex profile for safemap's maps. Inside ``with contention_profile(every=N) as p:``
one in N *contended* acquisitions (those that found a lock held and had to wait) records
the Python stack of the waiting thread and its wait time; afterwards ``p.report()`` lists
the call sites by total wait and ``p.folded()`` gives folded stacks for flame-graph tools.
Acquisitions that found their lock free are never timed or recorded.

Two kinds of source feed a profile:

- *backends* (the C locks) registered with :func:`register_backend`: a backend's setter is
  called with ``(every, callback)`` when a profile starts and ``(0, None)`` when it ends;
  the lock then calls ``callback(kind, wait_seconds)`` itself for one in ``every`` of its
  contended acquisitions, from the waiting thread, with the map's locks released;
- the Python-level waits (``LockedMap``, ``RWLockMap``, the actor maps' mailbox), which
  call :func:`record` on their slow path only; :func:`record` samples one in ``every``.

Invariants: at most one profile is active at a time (a second one raises ``RuntimeError``);
``_profile`` is read without a lock on the slow path (a wait that races with the start or
end of a profile may or may not be recorded); records are added under the profile's lock.
"""

from __future__ import annotations

import _thread
import itertools
import sys
from collections.abc import Callable
from types import FrameType, TracebackType

from ._locked import locked

__all__ = ["ContentionProfile", "contention_profile", "record", "register_backend"]

Callback = Callable[[str, float], None]
Setter = Callable[[int, "Callback | None"], None]

_lock = _thread.allocate_lock()
_backends: list[Setter] = []
_profile: ContentionProfile | None = None

# Frames of these packages are safemap's own and are left out of recorded stacks.
_OWN_PREFIX = "safemap."


def register_backend(setter: Setter) -> None:
    """Register a lock implementation that samples its own contended acquisitions.

    ``setter(every, callback)`` turns its sampling on (``every`` > 0: call ``callback(kind,
    wait_seconds)`` for one in ``every`` contended acquisitions) or off (``(0, None)``). A
    backend registered while a profile is active is turned on at once."""
    with _lock:
        _backends.append(setter)
        profile = _profile
        if profile is not None:
            setter(profile.every, profile._sampled)


def record(kind: str, wait_seconds: float) -> None:
    """Called by a Python-level lock after a contended acquisition (its slow path only)."""
    profile = _profile
    if profile is not None:
        profile._offer(kind, wait_seconds)


def _frame_name(frame: FrameType) -> str:
    code = frame.f_code
    module = frame.f_globals.get("__name__", "?")
    name = getattr(code, "co_qualname", code.co_name)
    return f"{module}.{name}:{frame.f_lineno}"


def _stack() -> tuple[str, ...]:
    """The calling thread's stack, outermost first, without safemap's own frames."""
    frames: list[str] = []
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (module == "safemap" or module.startswith(_OWN_PREFIX)):
            frames.append(_frame_name(frame))
        frame = frame.f_back
    frames.reverse()
    return tuple(frames)


class ContentionProfile:
    """The samples of one :func:`contention_profile` (a context manager)."""

    def __init__(self, every: int) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive int, not {every!r}")
        self.every = every
        self._lock = _thread.allocate_lock()
        self._seen = itertools.count()
        # (stack outermost first, kind) -> [samples, total wait in seconds]
        self._records: dict[tuple[tuple[str, ...], str], list[float]] = {}

    def _offer(self, kind: str, wait_seconds: float) -> None:
        # One in ``every`` Python-level contended acquisitions (backends sample their own).
        if next(self._seen) % self.every == 0:
            self._sampled(kind, wait_seconds)

    def _sampled(self, kind: str, wait_seconds: float) -> None:
        locked(self._lock, self._add, (_stack(), kind), wait_seconds)

    def _add(self, key: tuple[tuple[str, ...], str], wait_seconds: float) -> None:
        entry = self._records.get(key)
        if entry is None:
            self._records[key] = [1, wait_seconds]
        else:
            entry[0] += 1
            entry[1] += wait_seconds

    def _entries(self) -> list[tuple[tuple[tuple[str, ...], str], tuple[float, float]]]:
        """The records, copied under the lock."""
        return locked(self._lock, self._copy)

    def _copy(self) -> list[tuple[tuple[tuple[str, ...], str], tuple[float, float]]]:
        return [(key, (entry[0], entry[1])) for key, entry in self._records.items()]

    @property
    def samples(self) -> int:
        """How many contended acquisitions were recorded."""
        return int(sum(count for _, (count, _wait) in self._entries()))

    @property
    def wait_seconds(self) -> float:
        """Total wait of the recorded acquisitions."""
        return sum(wait for _, (_count, wait) in self._entries())

    def _by_site(self) -> list[tuple[str, str, int, float]]:
        sites: dict[tuple[str, str], list[float]] = {}
        for (stack, kind), (count, wait) in self._entries():
            site = stack[-1] if stack else "<no Python caller>"
            entry = sites.setdefault((site, kind), [0, 0.0])
            entry[0] += count
            entry[1] += wait
        rows = [(site, kind, int(c), w) for (site, kind), (c, w) in sites.items()]
        rows.sort(key=lambda row: (-row[3], row[0], row[1]))
        return rows

    def report(self, top: int = 10) -> str:
        """The ``top`` call sites (innermost frame outside safemap) by total wait, as text:
        one line each with total wait, samples, mean wait and the lock's kind."""
        rows = self._by_site()
        lines = [
            f"contention profile: {sum(r[2] for r in rows)} sampled contended acquisitions "
            f"(1 in {self.every}), {sum(r[3] for r in rows) * 1e3:.3f} ms total wait",
            f"{'total wait':>12} {'samples':>8} {'mean':>10}  lock  call site",
        ]
        for site, kind, count, wait in rows[:top]:
            lines.append(
                f"{wait * 1e3:>10.3f}ms {count:>8} {wait / count * 1e6:>8.1f}us  {kind}  {site}"
            )
        return "\n".join(lines) + "\n"

    def folded(self) -> str:
        """Folded stacks (``frame;frame;...;lock-kind microseconds`` per line, outermost
        frame first) for ``flamegraph.pl`` or speedscope; the weight is the total wait."""
        items = sorted(self._entries())
        lines = []
        for (stack, kind), (_count, wait) in items:
            frames = ";".join((*stack, f"[{kind}]")).replace(" ", "_")
            lines.append(f"{frames} {round(wait * 1e6)}")
        return "\n".join(lines) + ("\n" if lines else "")

    def __enter__(self) -> ContentionProfile:
        global _profile
        with _lock:
            if _profile is not None:
                raise RuntimeError(
                    "a contention profile is already active; only one can run at a time"
                )
            _profile = self
            for setter in _backends:
                setter(self.every, self._sampled)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _profile
        with _lock:
            if _profile is self:
                _profile = None
                for setter in _backends:
                    setter(0, None)


def contention_profile(every: int = 1) -> ContentionProfile:
    """A context manager that samples one in ``every`` contended acquisitions of every
    safemap lock (the maps' Python-level locks and the registered C backends) with the
    waiting thread's Python stack. Use the returned profile's ``report()`` and ``folded()``
    after (or during) the block. Raises ``RuntimeError`` on entry if another profile is
    active."""
    return ContentionProfile(every)
