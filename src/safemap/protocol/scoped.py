"""Entries that live as long as a scope: ``m.scoped(k, v)`` and ``m.bind(k, v, owner=, ttl=)``.

Written once on top of the protocol's primitives (``store``, ``load``, ``compute``), so
every map type has them. The per-map registry, the ttl read mixin and the shared sweeper
thread are in ``expiry``.

Invariants:
- A binding ends exactly once, whatever ends it first (its scope's exit, ``release()``,
  its owner ending, its deadline, its map being collected): ending *claims* the binding
  (an atomic ``list.pop`` of its one token) and only the claimant acts.
- Ending removes the entry only if the key still holds exactly the bound object (a
  compare-and-delete by identity; by equality for map types whose reads return copies,
  ``_value_identity = False``): a newer value, even an equal one, survives, and the
  binding is simply dropped.
- Removal runs where no map lock is held: in the caller (scope exit, ``release()``), in
  the event loop's callback (task owners), or on the sweeper thread (deadlines, weak
  reference callbacks, which can fire anywhere, and dying threads). A removal that fails
  where there is no caller to tell is reported to ``sys.unraisablehook``.
- Thread owners: a thread that binds entries to itself gets a hook in a
  ``threading.local``, destroyed by CPython when the thread's state is cleared, which is
  before ``join()`` returns (on 3.11 and on free-threaded 3.14 alike); the dying thread
  hands the removals to the sweeper and waits for them, so they are done when ``join()``
  returns and no map code runs in a thread state being torn down. Another thread, if it
  has no hook, is polled by the sweeper (``expiry.POLL_INTERVAL``).
"""

from __future__ import annotations

import math
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._locked import locked
from .errors import RecursiveUpdateError
from .expiry import _MapState, _sweeper, now, report_unraisable, start_expiring, state_of

if TYPE_CHECKING:
    from types import TracebackType

    from .mapping import ConcurrentMapping

__all__ = ["Binding", "Scope", "bind"]

K = TypeVar("K")
V = TypeVar("V")

THREAD_END_WAIT = 30.0  # seconds a dying owner thread waits for its removals at most


class Binding(Generic[K, V]):
    """A bound entry: ``key`` holds ``value`` until the binding ends (see ``bind``).

    ``release()`` ends it now; ``active`` says whether it has not ended yet."""

    __slots__ = ("__weakref__", "_claim", "_holds", "_owner", "_state", "deadline", "key", "value")

    def __init__(self, st: _MapState, key: K, value: V, deadline: float | None) -> None:
        self.key = key
        self.value = value
        self.deadline = deadline
        self._state = st
        self._claim = [True]  # popped by whoever ends the binding: exactly once
        self._holds = False  # whether it keeps the sweeper running
        self._owner: object = None

    @property
    def ended(self) -> bool:
        return not self._claim

    @property
    def active(self) -> bool:
        """Whether the binding has not ended yet (its entry may still have been
        overwritten or deleted by someone else)."""
        return bool(self._claim)

    def release(self) -> bool:
        """End the binding now: remove the entry if the key still holds the bound value.
        Returns whether it removed it (``False`` also when the binding had already ended).
        A failing removal raises here (the binding has ended all the same)."""
        return bool(self._end())

    def _end(self, *, soft: bool = False) -> bool | None:
        """Claim and end; ``None`` if already ended. With ``soft`` (a read reclaiming a
        due entry), a ``RecursiveUpdateError`` (the read runs where it may not write)
        gives the binding back and leaves the removal to the sweeper."""
        try:
            self._claim.pop()
        except IndexError:
            return None
        try:
            removed = self._state.remove(self.key, self.value)
        except RecursiveUpdateError:
            if soft:
                self._claim.append(True)
                _sweeper.submit(self._end)
                raise
            self._finish()
            raise
        except BaseException:
            self._finish()
            raise
        self._finish()
        return removed

    def _forget(self) -> None:
        """End without touching the map (its map is gone, or storing failed)."""
        try:
            self._claim.pop()
        except IndexError:
            return
        self._finish()

    def _finish(self) -> None:
        self._state.drop(self)
        self._owner = None
        self.value = None  # type: ignore[assignment]  # an ended binding keeps nothing alive
        if self._holds:
            self._holds = False
            _sweeper.unhold()

    def __repr__(self) -> str:
        state = "active" if self._claim else "ended"
        return f"<Binding {self.key!r}: {self.value!r} ({state})>"


class Scope(Generic[K, V]):
    """``with m.scoped(k, v) as value:``: ``k`` holds ``v`` for the block; on exit (also by
    an exception, ``KeyboardInterrupt`` or a generator's ``close()``) it is removed, once,
    if it still holds ``v``. A scope is entered once."""

    __slots__ = ("_binding", "_key", "_map", "_used", "_value")

    def __init__(self, m: ConcurrentMapping[K, V], key: K, value: V) -> None:
        self._map = m
        self._key = key
        self._value = value
        self._binding: Binding[K, V] | None = None
        self._used = False

    def __enter__(self) -> V:
        if self._used:
            raise RuntimeError("a scoped() entry is entered once; call scoped() again")
        self._used = True
        self._binding = bind(self._map, self._key, self._value)
        return self._value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        binding = self._binding
        if binding is None:
            return
        if exc is None:
            binding.release()
            return
        try:
            binding.release()
        except BaseException as failure:  # the block's exception goes on
            report_unraisable(failure, "safemap: removing a scoped entry failed")


# ---------------------------------------------------------------------------- owners


class _ThreadEnd:
    """Lives in one thread's ``threading.local``: destroyed when that thread ends."""

    __slots__ = ("__weakref__", "bindings", "closed", "limit", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bindings: list[Binding[Any, Any]] = []
        self.closed = False
        self.limit = 16  # prune the ended bindings when the list reaches this length

    def add(self, b: Binding[Any, Any]) -> bool:
        return locked(self.lock, self._add, b)

    def _add(self, b: Binding[Any, Any]) -> bool:
        if self.closed:
            return False
        self.bindings.append(b)
        if len(self.bindings) >= self.limit:  # a long-lived thread binding many times
            self.bindings = [x for x in self.bindings if not x.ended]
            self.limit = max(16, 2 * len(self.bindings))
        return True

    def _close(self) -> list[Binding[Any, Any]]:
        self.closed = True
        bindings, self.bindings = self.bindings, []
        return bindings

    def __del__(self) -> None:
        bindings = locked(self.lock, self._close)
        bindings = [b for b in bindings if not b.ended]
        if not bindings or sys.is_finalizing():
            return
        done = threading.Event()

        def end_all() -> None:
            try:
                for b in bindings:
                    try:
                        b._end()
                    except BaseException as exc:  # no caller to raise into
                        report_unraisable(exc, f"safemap: removing bound entry {b.key!r} failed")
            finally:
                done.set()

        # Held for the hand-off itself: the bindings' own holds may end meanwhile (another
        # thread releasing them), which must not let the sweeper exit with the job queued.
        _sweeper.hold()
        try:
            _sweeper.submit(end_all)
            done.wait(THREAD_END_WAIT)
        finally:
            _sweeper.unhold()


_local = threading.local()
_hooks_lock = threading.RLock()  # `_unhook` is a weakref callback: it may run while held
_hooks: dict[int, tuple[weakref.ref[threading.Thread], weakref.ref[_ThreadEnd]]] = {}


def _own_hook() -> _ThreadEnd:
    hook: _ThreadEnd | None = getattr(_local, "hook", None)
    if hook is None:
        hook = _ThreadEnd()
        _local.hook = hook
        thread = threading.current_thread()
        key = id(thread)
        with _hooks_lock:
            _hooks[key] = (weakref.ref(thread), weakref.ref(hook, lambda _r: _unhook(key, _r)))
    return hook


def _unhook(key: int, ref: weakref.ref[_ThreadEnd]) -> None:
    with _hooks_lock:
        entry = _hooks.get(key)
        if entry is not None and entry[1] is ref:
            del _hooks[key]


def _hook_of(thread: threading.Thread) -> _ThreadEnd | None:
    entry = _hooks.get(id(thread))
    if entry is None or entry[0]() is not thread:
        return None
    return entry[1]()


def _attach_thread(b: Binding[Any, Any], thread: threading.Thread) -> None:
    if thread is threading.current_thread():
        _own_hook().add(b)
        return
    if thread is threading.main_thread():
        return  # it ends with the interpreter: nothing to watch (or to poll) until then
    hook = _hook_of(thread)
    if hook is not None and hook.add(b):
        return
    if thread.ident is not None and not thread.is_alive():
        b._end()  # it has already ended
        return
    _sweeper.poll(thread, b)


def _attach_task(b: Binding[Any, Any], task: Any) -> None:
    if task.done():
        b._end()
        return

    def on_done(_task: object) -> None:
        try:
            b._end()
        except BaseException as exc:  # runs in the event loop: report it
            report_unraisable(exc, f"safemap: removing bound entry {b.key!r} failed")

    task.add_done_callback(on_done)


def _is_task(owner: object) -> bool:
    asyncio = sys.modules.get("asyncio")  # an asyncio task implies asyncio is imported
    return asyncio is not None and isinstance(owner, asyncio.Future)


def _check_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    seconds = float(ttl)
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
    return seconds


def bind(
    m: ConcurrentMapping[K, V],
    key: K,
    value: V,
    owner: object = None,
    ttl: float | None = None,
) -> Binding[K, V]:
    """Store ``key: value`` in ``m`` for the lifetime of ``owner`` and/or ``ttl`` seconds
    (see ``ConcurrentMapping.bind``)."""
    deadline = None if ttl is None else now() + _check_ttl(ttl)
    kind = None
    if owner is not None:
        if isinstance(owner, threading.Thread):
            kind = "thread"
        elif _is_task(owner):
            kind = "task"
        else:
            try:
                weakref.ref(owner)
            except TypeError:
                raise TypeError(
                    f"owner must be a threading.Thread, an asyncio.Task or an object that "
                    f"supports weak references, not {type(owner).__name__}"
                ) from None
            kind = "ref"
    st = state_of(m)
    b: Binding[K, V] = Binding(st, key, value, deadline)
    # Deadlines, collected owners and ending threads need the sweeper (a dying thread hands
    # it its removals); the main thread ends with the interpreter, a task on its own loop.
    if (
        deadline is not None
        or kind == "ref"
        or (kind == "thread" and owner is not threading.main_thread())
    ):
        b._holds = True
        _sweeper.hold()
    if deadline is not None:
        start_expiring(m)
    st.add(b)  # registered before the value is in the map (see expiry's invariants)
    try:
        m.store(key, value)
    except BaseException:
        b._forget()
        raise
    if deadline is not None:
        _sweeper.schedule(b)
    if kind == "thread":
        _attach_thread(b, owner)  # type: ignore[arg-type]
    elif kind == "task":
        _attach_task(b, owner)
    elif kind == "ref":
        b._owner = weakref.ref(owner, lambda _r: _sweeper.submit(b._end))
    return b
