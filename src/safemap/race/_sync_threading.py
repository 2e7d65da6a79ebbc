"""Happens-before models of ``threading``: locks, conditions, semaphores, events, barriers
and threads. Installed by :mod:`safemap.race._sync`.

Every model keeps the behaviour of the object it stands for (it *is* that object, or wraps
one): same return values, timeouts, exceptions, blocking. The bookkeeping is a few
vector-clock operations around the real operation:

- a **release** (``Lock.release``, ``Semaphore.release``, ``Event.set``, ``notify``) merges
  the caller's clock into the object's :class:`~safemap.race._runtime.SyncVar` *before* the
  real release, so a thread that gets through right after it finds the clock there;
- an **acquire** (a successful ``acquire``, ``wait()`` returning true, ``is_set()`` true)
  joins that clock into the caller's *after* the real operation succeeded. A failed or
  timed-out acquire, or a ``wait`` that returns false, joins nothing.

Internal synchronization (the lock inside an ``Event``, a ``Condition``'s waiter locks, a
``Barrier``'s condition) is the original, unmodelled kind: the models' edges are exactly
the ones listed in ``docs/race.md`` ("Happens-before").

Interrupts: as for ``threading.Semaphore`` and every lock written in Python, an exception
raised by a signal handler in the instant between the real acquire and its bookkeeping
propagates; the lock models release the raw lock again in that case.
"""

from __future__ import annotations

import _thread
import itertools
import threading
import types
from typing import Any

from . import _runtime
from ._runtime import SyncVar
from ._sync_base import RAW_LOCK_TYPE, FactoryMeta, Patches, caller_is_internal, stand_in

__all__ = ["install"]

_allocate_lock = _thread.allocate_lock
_ORIG_LOCK = threading.Lock
_ORIG_RLOCK = threading.RLock
_ORIG_CONDITION = threading.Condition
_ORIG_SEMAPHORE = threading.Semaphore
_ORIG_BOUNDED = threading.BoundedSemaphore
_ORIG_EVENT = threading.Event
_ORIG_BARRIER = threading.Barrier
_CRLOCK: Any = getattr(threading, "_CRLock", None) or threading._PyRLock  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- locks


class _ModelledLock:
    """What the two lock models share: the real lock in ``_inner``, its clock in ``_var``.
    A successful acquire joins the clock (an exception after the real acquire, e.g. from
    a signal handler, gives the lock back); a release by the holder merges into it first
    (releasing a lock one does not hold only raises: no edge)."""

    __slots__ = ()

    _inner: Any
    _var: SyncVar

    def _held(self) -> bool:
        raise NotImplementedError

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = False
        try:
            got = self._inner.acquire(blocking, timeout)
            if got:
                _runtime.acquire(self._var)
        except BaseException:
            if got:
                self._inner.release()
            raise
        return bool(got)

    def __enter__(self) -> bool:
        return self.acquire()

    def release(self) -> None:
        if self._held():
            _runtime.release_merge(self._var)
        self._inner.release()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _at_fork_reinit(self) -> None:
        self._inner._at_fork_reinit()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._inner, name)


class Lock(_ModelledLock, metaclass=FactoryMeta):
    """``threading.Lock`` while the detector is installed: a raw lock plus a clock.
    ``release`` → every later successful ``acquire`` (also through ``with`` and
    ``acquire(timeout=...)``). Created by internal code: the original raw lock."""

    __slots__ = ("__weakref__", "_inner", "_var")

    _inner: Any
    _var: SyncVar

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Lock and caller_is_internal(1):
            return _allocate_lock(*args, **kwargs)
        self = object.__new__(cls)
        self._inner = _allocate_lock(*args, **kwargs)
        self._var = SyncVar()
        return self

    def locked(self) -> bool:
        return bool(self._inner.locked())

    _held = locked

    def __repr__(self) -> str:
        state = "locked" if self._inner.locked() else "unlocked"
        return f"<{state} _thread.lock object at {id(self):#x}>"


class RLock(_ModelledLock, metaclass=FactoryMeta):
    """``threading.RLock`` while the detector is installed: a C ``RLock`` plus a clock.
    Every release (also the ones ``Condition.wait`` makes through ``_release_save``) →
    every later acquire (also ``_acquire_restore``)."""

    __slots__ = ("__weakref__", "_inner", "_var")

    _inner: Any
    _var: SyncVar

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is RLock and caller_is_internal(1):
            return _ORIG_RLOCK(*args, **kwargs)
        return _new_rlock(cls)

    def _held(self) -> bool:
        return bool(self._inner._is_owned())

    def _is_owned(self) -> bool:
        return bool(self._inner._is_owned())

    def _release_save(self) -> Any:
        if self._held():
            _runtime.release_merge(self._var)
        return self._inner._release_save()

    def _acquire_restore(self, state: Any) -> None:
        self._inner._acquire_restore(state)
        _runtime.acquire(self._var)

    def __repr__(self) -> str:
        return repr(self._inner)


def _new_rlock(cls: type[RLock] = RLock) -> RLock:
    self = object.__new__(cls)
    self._inner = _CRLOCK()
    self._var = SyncVar()
    return self


# ---------------------------------------------------------------- condition & co.


class _InternalFlag:
    """Mixin hook: a subclass of a model defined in internal code (standard library or
    safemap) makes unmodelled objects (``_race_var`` is ``None``)."""

    _safemap_race_internal = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._safemap_race_internal = caller_is_internal(1)


def _var_for(obj: Any) -> SyncVar | None:
    # An original object (e.g. threading's own BoundedSemaphore.__init__ calling the
    # module's ``Semaphore.__init__``, now ours) counts as internal.
    return None if getattr(type(obj), "_safemap_race_internal", True) else SyncVar()


class Condition(_InternalFlag, _ORIG_CONDITION, metaclass=FactoryMeta):
    """``threading.Condition``: synchronizes through its lock (a modelled ``RLock`` when
    none is given), and ``notify``/``notify_all`` → every later ``wait``/``wait_for``
    woken (returning true)."""

    _race_var: SyncVar | None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Condition and caller_is_internal(1):
            return _ORIG_CONDITION(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, lock: Any = None) -> None:
        if lock is None and not type(self)._safemap_race_internal:
            lock = _new_rlock()
        super().__init__(lock)
        self._race_var = _var_for(self)

    def wait(self, timeout: float | None = None) -> bool:
        woken = super().wait(timeout)
        if woken and self._race_var is not None:
            _runtime.acquire(self._race_var)
        return woken

    def notify(self, n: int = 1) -> None:
        if self._race_var is not None and self._is_owned():  # type: ignore[attr-defined]
            _runtime.release_merge(self._race_var)
        super().notify(n)


class _SemaphoreEdges:
    """``release`` → every later successful ``acquire`` (both semaphore models)."""

    _race_var: SyncVar | None

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        got: bool = super().acquire(blocking, timeout)  # type: ignore[misc]
        if got and self._race_var is not None:
            _runtime.acquire(self._race_var)
        return got

    __enter__ = acquire

    def release(self, n: int = 1) -> None:
        if self._race_var is not None:
            _runtime.release_merge(self._race_var)
        super().release(n)  # type: ignore[misc]


class Semaphore(_InternalFlag, _SemaphoreEdges, _ORIG_SEMAPHORE, metaclass=FactoryMeta):
    """``threading.Semaphore``: ``release`` → every later successful ``acquire``."""

    _race_var: SyncVar | None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Semaphore and caller_is_internal(1):
            return _ORIG_SEMAPHORE(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, value: int = 1) -> None:
        # Explicit base: the original BoundedSemaphore.__init__ calls the module's
        # ``Semaphore.__init__`` (this one) on objects that are not ours.
        _ORIG_SEMAPHORE.__init__(self, value)
        self._race_var = _var_for(self)


class BoundedSemaphore(_InternalFlag, _SemaphoreEdges, _ORIG_BOUNDED, metaclass=FactoryMeta):
    """``threading.BoundedSemaphore``: as :class:`Semaphore`."""

    _race_var: SyncVar | None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is BoundedSemaphore and caller_is_internal(1):
            return _ORIG_BOUNDED(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._race_var = _var_for(self)


class Event(_InternalFlag, _ORIG_EVENT, metaclass=FactoryMeta):
    """``threading.Event``: ``set`` → ``wait()`` returning true and ``is_set()`` returning
    true. ``clear`` creates no edge."""

    _race_var: SyncVar | None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Event and caller_is_internal(1):
            return _ORIG_EVENT(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self) -> None:
        super().__init__()
        self._race_var = _var_for(self)

    def set(self) -> None:
        if self._race_var is not None:
            _runtime.release_merge(self._race_var)
        super().set()

    def is_set(self) -> bool:
        flag = super().is_set()
        if flag and self._race_var is not None:
            _runtime.acquire(self._race_var)
        return flag

    def wait(self, timeout: float | None = None) -> bool:
        flag = super().wait(timeout)
        if flag and self._race_var is not None:
            _runtime.acquire(self._race_var)
        return flag


class Barrier(_InternalFlag, _ORIG_BARRIER, metaclass=FactoryMeta):
    """``threading.Barrier``, per generation: everything before any party's ``wait`` →
    the ``action`` and everything after every party's ``wait`` returned normally.

    Invariant: a generation's clock (``_race_gen``) is replaced, under the barrier's own
    lock, by the first party that enters with no other party inside (``_count == 0``): the
    start of a new generation (also after a ``reset`` or a break has drained). A party
    merges its clock into the generation it entered and, once ``wait`` returns its index,
    joins that same generation's clock (kept per OS thread in ``_race_entered``), so
    generations are never mixed. ``BrokenBarrierError`` joins nothing."""

    _race_gen: SyncVar | None
    _race_entered: dict[int, SyncVar] | None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Barrier and caller_is_internal(1):
            return _ORIG_BARRIER(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, parties: int, action: Any = None, timeout: float | None = None) -> None:
        super().__init__(parties, action, timeout)
        self._race_gen = _var_for(self)
        self._race_entered = None if self._race_gen is None else {}
        if action is not None and self._race_gen is not None:
            self._action = self._race_action(action)

    def _race_action(self, action: Any) -> Any:
        def run_action() -> Any:
            gen = self._race_gen  # read under the barrier's lock (_release holds it)
            assert gen is not None
            _runtime.acquire(gen)
            try:
                return action()
            finally:
                _runtime.release_merge(gen)

        return run_action

    def _enter(self) -> None:
        super()._enter()  # type: ignore[misc]
        entered = self._race_entered
        if entered is None:
            return
        if self._count == 0:  # type: ignore[attr-defined]
            self._race_gen = SyncVar()
        gen = self._race_gen
        assert gen is not None
        _runtime.release_merge(gen)
        entered[_thread.get_ident()] = gen

    def wait(self, timeout: float | None = None) -> int:
        entered = self._race_entered
        if entered is None:
            return super().wait(timeout)
        me = _thread.get_ident()
        try:
            index = super().wait(timeout)
        except BaseException:
            entered.pop(me, None)
            raise
        gen = entered.pop(me, None)
        if gen is not None:
            _runtime.acquire(gen)
        return index


# --------------------------------------------------------------------------- threads

_ORIG_START = threading.Thread.start
_ORIG_JOIN = threading.Thread.join
_ORIG_IS_ALIVE = threading.Thread.is_alive
_END_ATTR = "_safemap_race_end"
_task_numbers = itertools.count(1)


def _start(self: threading.Thread) -> None:
    """``Thread.start``: the parent's past → the new thread, a new logical thread whose
    creation site is this call. Its end is published for ``join``/``is_alive``."""
    started = getattr(self, "_started", None)
    if not getattr(self, "_initialized", False) or started is None or started.is_set():
        return _ORIG_START(self)  # raises as it would
    child = _runtime.fork(self.name, _runtime.capture_stack(0))
    end = SyncVar()
    inner = type(self)._bootstrap_inner  # type: ignore[attr-defined]

    def bootstrap_inner(thread: threading.Thread) -> None:
        try:
            with _runtime.activate(child):
                try:
                    inner(thread)
                finally:
                    _runtime.finish(child, end)
        finally:
            vars(thread).pop("_bootstrap_inner", None)

    # An instance attribute: the new thread runs it even if uninstall() happens meanwhile.
    vars(self)[_END_ATTR] = end
    vars(self)["_bootstrap_inner"] = types.MethodType(bootstrap_inner, self)
    try:
        _ORIG_START(self)
    except BaseException:
        vars(self).pop("_bootstrap_inner", None)
        raise


def _observe_end(thread: threading.Thread) -> None:
    """``thread`` is over: the caller happens-after its end. A thread started while the
    detector was installed published its end clock; one started before has only the
    logical thread the detector gave it on its first access (if any)."""
    end = vars(thread).get(_END_ATTR)
    if end is not None:
        _runtime.acquire(end)
        return
    state = vars(thread).get(_runtime.STATE_ATTR)
    if state is not None:
        _runtime.observe_end(state)


def _join(self: threading.Thread, timeout: float | None = None) -> None:
    """``Thread.join``: the thread's end → the return of a join that saw it end."""
    _ORIG_JOIN(self, timeout)
    if not _ORIG_IS_ALIVE(self):
        _observe_end(self)


def _is_alive(self: threading.Thread) -> bool:
    """``Thread.is_alive``: the thread's end → an ``is_alive()`` returning false."""
    alive = _ORIG_IS_ALIVE(self)
    if not alive:
        _observe_end(self)
    return alive


def install(patches: Patches) -> None:
    """Put the models in ``threading`` (recorded in ``patches``)."""
    for name, model in (
        ("Lock", Lock),
        ("RLock", RLock),
        ("Condition", Condition),
        ("Semaphore", Semaphore),
        ("BoundedSemaphore", BoundedSemaphore),
        ("Event", Event),
        ("Barrier", Barrier),
    ):
        patches.set(threading, name, model)
    patches.set(threading.Thread, "start", _start)
    patches.set(threading.Thread, "join", _join)
    patches.set(threading.Thread, "is_alive", _is_alive)


for _model in (Condition, Semaphore, BoundedSemaphore, Event, Barrier):
    _model._safemap_race_internal = False  # defined here, but these are the user-facing models
stand_in(Lock, RAW_LOCK_TYPE, "threading", "Lock")
stand_in(RLock, _CRLOCK, "threading", "RLock")
stand_in(Condition, _ORIG_CONDITION, "threading", "Condition")
stand_in(Semaphore, _ORIG_SEMAPHORE, "threading", "Semaphore")
stand_in(BoundedSemaphore, _ORIG_BOUNDED, "threading", "BoundedSemaphore")
stand_in(Event, _ORIG_EVENT, "threading", "Event")
stand_in(Barrier, _ORIG_BARRIER, "threading", "Barrier")
