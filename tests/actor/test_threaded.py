"""ActorMap: backpressure, deadlines, failures, re-entry, close, leaks, breaker, exact counts.

Every test that needs the owner busy holds it inside a request with a ``Gate`` and waits
for *states* (queue depth, the gate entered), never for durations; timeouts used below are
only ever "short" against an owner that is provably held, so no assertion depends on the
speed of the machine.
"""

from __future__ import annotations

import _thread
import gc
import operator
import os
import signal
import sys
import threading
import traceback
import weakref
from typing import Any

import pytest
from support.actor import WAIT, Background, Gate, wait_until

from safemap import DELETE, MapBusyError, MapClosedError, RecursiveUpdateError
from safemap.actor import ActorMap, CircuitBreaker, CircuitOpenError

SHORT = 0.05  # a deadline that passes while the owner is held by a gate


def held(m: ActorMap[Any, Any]) -> tuple[Gate, Background]:
    """Occupy ``m``'s owner; return the gate and the background call holding it."""
    gate = Gate()
    holder = Background(m.execute, gate.hold)
    assert gate.entered.wait(WAIT)
    return gate, holder


def queued(m: ActorMap[Any, Any], n: int) -> None:
    wait_until(lambda: m.stats().mailbox.depth == n, f"{n} requests queued")


# ------------------------------------------------------------------ backpressure


def test_full_queue_nonblocking_fails_at_once_and_blocking_waits_then_busy() -> None:
    with ActorMap(maxsize=2) as m:
        gate, holder = held(m)
        waiting = [Background(m.store, f"q{i}", i) for i in range(2)]
        queued(m, 2)

        with pytest.raises(MapBusyError):
            m.execute(lambda d: d.__setitem__("nowait", 1), block=False)
        with pytest.raises(MapBusyError):
            m.execute(lambda d: d.__setitem__("waited", 1), timeout=SHORT)
        stats = m.stats().mailbox
        assert (stats.depth, stats.capacity, stats.rejected) == (2, 2, 2)
        assert stats.peak_depth == 2

        gate.open()
        assert holder.value() == "held"
        for call in waiting:
            call.value()
        # The rejected calls had no effect; the queued ones all did.
        assert dict(m) == {"q0": 0, "q1": 1}
        assert m.stats().mailbox.completed == m.stats().mailbox.accepted


def test_blocked_caller_gets_a_slot_when_one_frees() -> None:
    with ActorMap(maxsize=1) as m:
        gate, holder = held(m)
        first = Background(m.store, "a", 1)
        queued(m, 1)
        second = Background(m.store, "b", 2)  # waits for a slot (no deadline)
        gate.open()
        holder.value(), first.value(), second.value()
        assert dict(m) == {"a": 1, "b": 2}
        assert m.stats().mailbox.rejected == 0


# ------------------------------------------------------------------- deadlines


def test_deadline_before_start_is_never_applied() -> None:
    with ActorMap() as m:
        gate, holder = held(m)
        with pytest.raises(MapBusyError, match="not applied"):
            m.execute(lambda d: d.__setitem__("late", 1), timeout=SHORT)
        gate.open()
        holder.value()
        # Any later request runs after everything queued before it: "late" never lands.
        assert "late" not in m
        assert m.stats().mailbox.cancelled == 1


def test_map_wide_default_timeout_applies_to_every_method() -> None:
    with ActorMap(timeout=SHORT) as m:
        gate = Gate()
        holder = Background(m.execute, gate.hold, timeout=WAIT)
        assert gate.entered.wait(WAIT)
        with pytest.raises(MapBusyError):
            m["k"] = 1
        with pytest.raises(MapBusyError):
            m.merge("k", 1, operator.add)
        gate.open()
        holder.value()
        # Read with a long deadline: the map's own SHORT one could pass on a loaded machine.
        assert m.execute(dict, timeout=WAIT) == {}


def test_deadline_after_start_completes_and_drops_the_result() -> None:
    release = threading.Event()

    def slow_write(d: dict[str, Any]) -> str:
        assert release.wait(WAIT)
        d["done"] = True
        return "result nobody reads"

    with ActorMap() as m:
        started = threading.Event()
        error: TimeoutError | None = None
        # The deadline must pass after the owner started the call; on a busy machine the
        # owner may not even start within a short one (MapBusyError: not applied), so the
        # deadline grows until it does.
        for deadline in (SHORT, 0.5, 5.0):
            try:
                m.execute(lambda d: (started.set(), slow_write(d))[1], timeout=deadline)
            except MapBusyError:
                assert not started.is_set()
                continue
            except TimeoutError as exc:
                error = exc
                break
        assert error is not None, "the owner never started the call"
        assert "runs to completion" in str(error)
        assert started.is_set()
        release.set()
        assert m["done"] is True  # applied, after the caller gave up
        assert m.stats().mailbox.dropped == 1


def test_timeout_validation() -> None:
    with pytest.raises(ValueError):
        ActorMap(timeout=-1)
    with ActorMap() as m:
        with pytest.raises(ValueError):
            m.execute(len, timeout=float("nan"))
        assert m.execute(len, timeout=float("inf")) == 0
        assert m.execute(len, timeout=1e30) == 0  # beyond what locks accept: no deadline


def test_maxsize_validation() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            ActorMap(maxsize=bad)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
def test_interrupted_wait_withdraws_a_queued_request() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT is delivered to the main thread only")
    with ActorMap() as m:
        gate, holder = held(m)
        main = threading.main_thread().ident
        assert main is not None

        def interrupt() -> None:
            queued(m, 1)
            signal.pthread_kill(main, signal.SIGINT)

        helper = Background(interrupt)
        with pytest.raises(KeyboardInterrupt):
            m.store("interrupted", 1)  # waits for ever, until the signal
        helper.value()
        gate.open()
        holder.value()
        assert "interrupted" not in m
        assert m.stats().mailbox.cancelled == 1


@pytest.mark.parametrize("waiting_for", ["outcome", "slot"])
def test_interrupt_that_cannot_wake_the_wait_is_seen_while_the_call_waits(waiting_for: str) -> None:
    """A Ctrl-C reaching the main thread after its last check for signals and before its
    wait parks does not wake that wait (only a signal arriving *during* a wait does).
    ``_thread.interrupt_main()`` is such a signal every time: it never wakes a waiting
    lock. A caller waiting for its outcome, or for a free slot in a full queue, must still
    raise while it waits (not once the owner applied its call, or once a slot frees), and
    its call is never applied."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run on the main thread only")
    with ActorMap(maxsize=1 if waiting_for == "slot" else 1024) as m:
        gate, holder = held(m)
        if waiting_for == "slot":
            other = Background(m.store, "queued", 1)
            queued(m, 1)
            waits = lambda: m._mailbox._putters == 1  # noqa: E731
        else:
            waits = lambda: m.stats().mailbox.depth == 1  # noqa: E731
        raised = threading.Event()
        guard_fired: list[bool] = []

        def interrupt() -> None:
            wait_until(waits, f"the caller waits for its {waiting_for}")
            _thread.interrupt_main()
            # A guard: if the caller never sees the interrupt, let the owner go.
            guard_fired.append(not raised.wait(WAIT / 2))
            gate.open()

        helper = Background(interrupt)
        with pytest.raises(KeyboardInterrupt):
            m.store("interrupted", 1)
        raised.set()
        helper.value()
        holder.value()
        if waiting_for == "slot":
            other.value()
            assert m["queued"] == 1
        assert guard_fired == [False], "the interrupt was seen only once the wait ended"
        assert "interrupted" not in m


@pytest.mark.parametrize("where", ["admission", "before-wait"])
def test_interrupt_between_admission_and_wait_withdraws_the_request(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``KeyboardInterrupt`` can arrive at any bytecode: also after ``put`` queued the
    request but before the caller started waiting. The caller sees the interrupt, so the
    request must be withdrawn, not applied later behind its back."""
    with ActorMap() as m:
        gate, holder = held(m)
        mailbox = m._mailbox
        if where == "admission":  # the signal lands inside put(), after the append
            real = type(mailbox)._admitted

            def admitted(self: Any, depth: int) -> None:
                real(self, depth)
                raise KeyboardInterrupt

            monkeypatch.setattr(type(mailbox), "_admitted", admitted)
        else:  # ... or right after put() returned
            real_put = type(mailbox).put

            def put(self: Any, req: Any, block: bool) -> None:
                real_put(self, req, block)
                raise KeyboardInterrupt

            monkeypatch.setattr(type(mailbox), "put", put)
        with pytest.raises(KeyboardInterrupt):
            m.store("interrupted", 1)
        monkeypatch.undo()
        gate.open()
        holder.value()
        assert "interrupted" not in m
        stats = m.stats().mailbox
        assert (stats.cancelled, stats.depth) == (1, 0)


def test_refused_call_is_not_withdrawn_twice() -> None:
    """A call ``put`` refused (full queue) was never admitted: nothing to withdraw."""
    with ActorMap(maxsize=1) as m:
        gate, holder = held(m)
        waiting = Background(m.store, "q", 1)
        queued(m, 1)
        with pytest.raises(MapBusyError):
            m.execute(len, block=False)
        gate.open()
        holder.value()
        waiting.value()
        assert m["q"] == 1
        stats = m.stats().mailbox
        assert (stats.cancelled, stats.rejected) == (0, 1)


# A call through each critical section of the mailbox a caller enters.
_MAILBOX_CALLS = [
    lambda m: m.store("k", 1),
    lambda m: m.stats(),
    lambda m: m.close(),
]


def _owner_parked(m: ActorMap[Any, Any]) -> Any:
    """``m``'s mailbox, once its owner waits for work: inside ``take()``, which looked up
    the mailbox's lock on entry. A test may then put a stand-in for the lock without the
    owner ever taking the stand-in (a slow-starting owner would, and die by its raise)."""
    mailbox: Any = m._mailbox
    wait_until(lambda: mailbox._owner_idle, "the owner waits for work")
    return mailbox


class _InterruptingLock:
    """The mailbox's lock, except that the next ``acquire()`` raises ``KeyboardInterrupt``
    as a signal handler would: right after taking the lock (before the code that took it
    can protect the hold, the CPython 3.14 ``with`` window) or instead of taking it (an
    interrupted wait)."""

    def __init__(self, lock: Any, after: bool) -> None:
        self._lock, self._after, self.armed = lock, after, True

    def acquire(self, *args: Any) -> bool:
        if self.armed and not self._after:
            self.armed = False
            raise KeyboardInterrupt
        got = self._lock.acquire(*args)
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return bool(got)

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lock, name)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("after", [True, False], ids=["after-acquire", "in-acquire"])
@pytest.mark.parametrize("call", _MAILBOX_CALLS, ids=["put", "stats", "close"])
def test_interrupt_in_a_mailbox_critical_section_leaves_no_hold(after: bool, call: Any) -> None:
    m: ActorMap[str, int] = ActorMap(timeout=WAIT)
    try:
        mailbox: Any = _owner_parked(m)
        real = mailbox._lock
        mailbox._lock = _InterruptingLock(real, after)
        with pytest.raises(KeyboardInterrupt):
            call(m)
        mailbox._lock = real
        assert not real._is_owned(), "the interrupted section kept its hold"
        # Another thread (the owner included) can still take the lock: the map works.
        if not m.closed:
            Background(m.store, "other", 2).value()
            assert m["other"] == 2

        def take_and_give_back() -> bool:
            got = bool(real.acquire(True, WAIT))
            if got:
                real.release()
            return got

        assert Background(take_and_give_back).value() is True
    finally:
        m.close(drain=False, timeout=WAIT)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("call", _MAILBOX_CALLS, ids=["put", "stats", "close"])
def test_interrupted_acquire_never_releases_another_threads_hold(call: Any) -> None:
    """A caller interrupted while it waits for the mailbox lock took nothing, so it releases
    nothing: the thread holding the lock meanwhile keeps its hold (on CPython 3.11 the
    mailbox once released it, and that thread's own release then raised)."""
    m: ActorMap[str, int] = ActorMap(timeout=WAIT)
    try:
        mailbox: Any = _owner_parked(m)
        real = mailbox._lock
        holding, done = threading.Event(), threading.Event()

        def hold() -> bool:
            real.acquire()
            try:
                holding.set()
                done.wait(WAIT)
                return bool(real._is_owned())
            finally:
                real.release()

        class LetTheHolderGoOnNextAcquire(_InterruptingLock):
            # put() withdraws its request after the interrupt, taking the lock again: the
            # holder ends its hold then (after checking it) rather than at the end.
            def acquire(self, *args: Any) -> bool:
                if not self.armed:
                    done.set()
                return super().acquire(*args)

        holder = Background(hold)
        assert holding.wait(WAIT)
        mailbox._lock = LetTheHolderGoOnNextAcquire(real, after=False)
        with pytest.raises(KeyboardInterrupt):
            call(m)
        mailbox._lock = real
        done.set()
        assert holder.value() is True, "the interrupted caller released the holder's hold"
        assert not m.closed
        m["after"] = 3  # the owner takes the lock again: the map works
        assert m["after"] == 3
    finally:
        m.close(drain=False, timeout=WAIT)


@pytest.mark.timeout(60)
def test_repr_is_bounded_while_the_owner_is_blocked() -> None:
    with ActorMap({"a": 1}, timeout=None) as m:  # no deadline: only repr's own bound
        assert repr(m) == "ActorMap({'a': 1})"
        gate, holder = held(m)
        assert Background(repr, m).value() == "ActorMap(<busy>)"
        gate.open()
        holder.value()
        assert repr(m) == "ActorMap({'a': 1})"
        # On the owner (from a request) it runs inline.
        assert m.execute(lambda d: repr(m)) == "ActorMap({'a': 1})"


# -------------------------------------------------------------------- failures


class Boom(Exception):
    pass


def raise_boom_from_owner(d: dict[Any, Any]) -> None:
    raise Boom("from the owner")


def test_a_raising_request_fails_only_its_caller_with_its_traceback() -> None:
    with ActorMap({"k": 0}) as m:
        others = [Background(lambda: [m.merge("k", 1, operator.add) for _ in range(200)])]
        with pytest.raises(Boom) as info:
            m.execute(raise_boom_from_owner)
        frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
        assert "raise_boom_from_owner" in frames
        assert frames[0] == "test_a_raising_request_fails_only_its_caller_with_its_traceback"
        with pytest.raises(Boom):
            m.compute("k", lambda k, old: raise_boom_from_owner({}))
        for call in others:
            call.value()
        assert m["k"] == 200  # the owner kept serving, and the failed compute changed nothing
        stats = m.stats().mailbox
        assert stats.failed == 2
        assert stats.completed == stats.accepted


def test_base_exceptions_reach_the_caller_too() -> None:
    with ActorMap() as m:

        def exit_(d: dict[Any, Any]) -> None:
            raise SystemExit(3)

        with pytest.raises(SystemExit):
            m.execute(exit_)
        assert m.execute(len) == 0  # the owner thread survived


# -------------------------------------------------------------------- re-entry


def test_calls_from_inside_execute_run_inline() -> None:
    with ActorMap({"a": 1}, timeout=WAIT) as m:  # a deadlock would raise, not hang

        def body(d: dict[str, int]) -> tuple[Any, ...]:
            m["b"] = m["a"] + 1  # inline read and write
            m.merge("a", 10, operator.add)
            nested = m.execute(lambda inner: inner is d)
            return nested, dict(m), len(m), m.snapshot()

        nested, seen, size, snap = m.execute(body)
        assert nested is True
        assert seen == {"a": 11, "b": 2} == snap
        assert size == 2
        assert m.stats().mailbox.accepted == 1  # one request; everything inside ran inline


def test_compute_callback_may_read_but_not_write() -> None:
    with ActorMap({"a": 1, "b": 2}, timeout=WAIT) as m:
        assert m.compute("a", lambda k, old: old + m["b"]) == 3
        with pytest.raises(RecursiveUpdateError):
            m.compute("a", lambda k, old: m.store("b", 0))
        with pytest.raises(RecursiveUpdateError):
            m.merge("a", 1, lambda old, v: m.execute(len))
        assert dict(m) == {"a": 3, "b": 2}


def test_transaction_fn_may_not_call_the_map() -> None:
    with ActorMap({"a": 1}, timeout=WAIT) as m:
        with pytest.raises(RecursiveUpdateError):
            m.transaction(lambda view: m.get("a"))

        def move(view: Any) -> None:
            view["b"] = view.pop("a")

        m.transaction(move)
        assert dict(m) == {"b": 1}


def test_finalizer_on_the_owner_thread_may_use_the_map() -> None:
    with ActorMap(timeout=WAIT) as m:

        class WritesOnDeath:
            def __del__(self) -> None:
                m["finalized"] = True

        m["x"] = WritesOnDeath()
        m.clear()
        assert dict(m) == {"finalized": True}


@pytest.mark.parametrize(
    "drop",
    [
        lambda m: m.store("x", 0),
        lambda m: m.compute("x", lambda k, v: 0),
        lambda m: m.merge("x", 0, lambda v, w: w),
        lambda m: m.compute_if_present("x", lambda k, v: DELETE),
        lambda m: m.compare_and_delete("x", "x"),
        lambda m: m.transaction(lambda view: view.__delitem__("x")),
        lambda m: m.execute(lambda d: d.__delitem__("x")),  # dies inside execute, inline
    ],
    ids=["store", "compute", "merge", "compute-delete", "cas-delete", "transaction", "execute"],
)
def test_value_dropped_by_a_request_is_released_on_the_owner_after_it(drop: Any) -> None:
    # The owner releases what a request replaced or removed once the request is over, so the
    # value's __del__ (on the owner thread) writes inline, and the write has landed by the
    # time the call returns (it is not refused as a write nested in the operation).
    with ActorMap(timeout=WAIT) as m:
        seen: list[Any] = []

        class WritesOnDeath:
            __hash__ = object.__hash__

            def __eq__(self, other: object) -> bool:
                return other is self or other == "x"

            def __del__(self) -> None:
                seen.append(threading.current_thread())
                m["finalized"] = m.get("finalized", 0) + 1

        m["x"] = WritesOnDeath()
        drop(m)
        assert seen == [m._thread]
        assert m["finalized"] == 1
        assert "x" not in m or m["x"] == 0


class _Cycle:
    """Garbage that only the cyclic collector frees; ``on_del`` runs in its ``__del__``."""

    def __init__(self, on_del: Any) -> None:
        self.me = self
        self.on_del = on_del

    def __del__(self) -> None:
        self.on_del()


def test_collector_finalizer_on_the_owner_mid_compute_writes_inline_and_compute_reruns() -> None:
    # The collector may run finalizers on the owner inside a compute callback: their write is
    # not the callback's own (never refused), it lands at once, and the callback runs again
    # on the entry as the finalizer left it, so neither write is lost.
    with ActorMap({"n": 0}, timeout=WAIT) as m:
        calls: list[Any] = []
        errors: list[Any] = []

        def fn(key: str, old: int) -> int:
            calls.append(old)
            if len(calls) == 1:

                def on_del() -> None:
                    try:
                        m["n"] = 100
                    except BaseException as exc:
                        errors.append(exc)

                _Cycle(on_del)
                gc.collect()
            return old + 1

        assert m.compute("n", fn) == 101
        assert errors == []
        assert calls == [0, 100]
        assert m["n"] == 101


def test_callback_own_write_is_still_refused_outside_a_collection() -> None:
    with ActorMap({"n": 0}, timeout=WAIT) as m:
        with pytest.raises(RecursiveUpdateError):
            m.compute("n", lambda k, old: m.store("x", 1))
        assert dict(m) == {"n": 0}


@pytest.mark.timeout(60)
def test_call_from_inside_a_mailbox_critical_section_does_not_deadlock() -> None:
    # What a finalizer run by the collector inside one of the mailbox's critical sections
    # does: call the map while this thread holds the mailbox lock. It must wait for the
    # owner with the lock released, then give the hold back.
    with ActorMap({"a": 1}, timeout=WAIT) as m:
        lock: Any = m._mailbox._lock

        def body() -> Any:
            with lock, lock:
                m["b"] = 2
                got = m["a"]
                count = lock._recursion_count()
            return got, count

        got, count = Background(body).value()
        assert (got, count) == (1, 2)
        assert dict(m) == {"a": 1, "b": 2}


# ------------------------------------------------------------------- lifecycle


def test_close_drains_queued_requests() -> None:
    m: ActorMap[str, int] = ActorMap()
    gate, holder = held(m)
    calls = [Background(m.store, f"k{i}", i) for i in range(3)]
    queued(m, 3)
    closer = Background(m.close)  # waits for the queue to drain and the owner to exit
    wait_until(lambda: m.closed, "closed")
    with pytest.raises(MapClosedError):
        m.store("after", 1)
    gate.open()
    holder.value()
    closer.value()
    for call in calls:
        call.value()  # each queued request ran
    assert m.stats().mailbox.completed == 4
    assert not m._thread.is_alive()


def test_close_without_drain_rejects_queued_requests() -> None:
    effects: list[str] = []
    m: ActorMap[str, int] = ActorMap()
    gate, holder = held(m)
    calls = [Background(m.execute, lambda d, i=i: effects.append(f"k{i}")) for i in range(3)]
    queued(m, 3)
    closer = Background(m.close, drain=False)
    for call in calls:
        call.join()
        assert isinstance(call.error, MapClosedError)
    gate.open()
    assert holder.value() == "held"  # the running request completed
    closer.value()
    assert effects == []
    assert m.stats().mailbox.cancelled == 3


def test_close_wakes_callers_blocked_on_a_full_queue() -> None:
    m: ActorMap[str, int] = ActorMap(maxsize=1)
    gate, holder = held(m)
    first = Background(m.store, "first", 1)
    queued(m, 1)
    blocked = Background(m.store, "blocked", 2)
    wait_until(lambda: m._mailbox._putters == 1, "a caller blocked on the full queue")
    m._mailbox.close(drain=True)  # close without joining: the owner is still held
    blocked.join()
    assert isinstance(blocked.error, MapClosedError)
    gate.open()
    holder.value()
    first.value()
    m.close()


def test_calls_after_close_raise_map_closed_error() -> None:
    with ActorMap({"a": 1}) as m:
        pass
    assert m.closed
    for call in (
        lambda: m["a"],
        lambda: m.store("b", 2),
        lambda: len(m),
        lambda: list(m),
        lambda: m.execute(len),
        lambda: m.snapshot(),
    ):
        with pytest.raises(MapClosedError):
            call()
    assert repr(m) == "ActorMap(<closed>)"
    m.close()  # idempotent
    m.close(drain=False)


def test_close_from_inside_a_request_does_not_wait_for_itself() -> None:
    m: ActorMap[str, int] = ActorMap()
    m.execute(lambda d: m.close())
    assert m.closed
    m._thread.join(WAIT)
    assert not m._thread.is_alive()


def test_unreferenced_map_stops_its_owner_thread() -> None:
    m: ActorMap[int, int] = ActorMap({1: 2})
    m.merge(1, 1, operator.add)
    owner = m._thread
    ref = weakref.ref(m)
    del m  # the owner thread must not keep the map alive ...
    gc.collect()
    assert ref() is None
    owner.join(WAIT)  # ... and the finalizer must stop it
    assert not owner.is_alive()
    assert owner not in threading.enumerate()


def test_map_stored_in_itself_is_collected_and_stops_its_owner_thread() -> None:
    # Issue 18.8: the running owner must not keep the dict (and so the map in it) alive.
    m: ActorMap[str, Any] = ActorMap()
    m["self"] = m
    m["list"] = [m, {"again": m}]
    assert m["self"] is m
    owner = m._thread
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None
    owner.join(WAIT)
    assert not owner.is_alive()


def test_many_maps_dropped_without_close_leave_no_threads() -> None:
    before = set(threading.enumerate())
    owners = []
    for i in range(20):
        m: ActorMap[int, int] = ActorMap({i: i})
        m[i] += 1
        owners.append(m._thread)
        del m
    gc.collect()
    for owner in owners:
        owner.join(WAIT)
    leftover = [t for t in threading.enumerate() if t not in before]
    assert [t for t in leftover if t.name != "safemap-actor-exit-watcher"] == []


def test_owner_is_not_a_daemon_unless_asked() -> None:
    with ActorMap(name="custom-owner") as m, ActorMap(daemon=True) as d:
        assert m.name == "custom-owner"
        assert not m._thread.daemon
        assert d._thread.daemon


# --------------------------------------------------------------------- breaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_circuit_breaker_opens_after_repeated_overloads_and_recovers() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=2, cooldown=30.0, clock=clock)
    with ActorMap(maxsize=1, breaker=breaker) as m:
        gate, holder = held(m)
        queued_call = Background(m.store, "queued", 1)
        queued(m, 1)
        for _ in range(2):  # two overloads in a row ...
            with pytest.raises(MapBusyError) as busy:
                m.execute(len, block=False)
            assert not isinstance(busy.value, CircuitOpenError)
        with pytest.raises(CircuitOpenError) as info:  # ... open the circuit
            m.execute(len, block=False)
        assert info.value.retry_after == pytest.approx(30.0)
        with pytest.raises(CircuitOpenError):  # every call is shed, blocking ones too
            m.store("shed", 1)
        stats = m.stats().mailbox
        assert (stats.breaker, stats.breaker_trips) == ("open", 1)
        assert (stats.rejected, stats.rejected_by_breaker) == (4, 2)

        clock.now += 30.0  # cool-down over: half-open, calls go through again
        gate.open()
        holder.value()
        queued_call.value()
        m.store("after", 2)
        assert m.stats().mailbox.breaker == "closed"
        assert dict(m) == {"queued": 1, "after": 2}


def test_half_open_circuit_reopens_on_the_next_overload() -> None:
    clock = FakeClock()
    with ActorMap(maxsize=1, breaker=CircuitBreaker(failures=1, cooldown=5, clock=clock)) as m:
        gate, holder = held(m)
        queued_call = Background(m.store, "queued", 1)
        queued(m, 1)
        with pytest.raises(MapBusyError):
            m.execute(len, block=False)
        assert m.stats().mailbox.breaker == "open"
        clock.now += 5
        with pytest.raises(MapBusyError) as info:  # half-open: admitted, but still full
            m.execute(len, block=False)
        assert not isinstance(info.value, CircuitOpenError)
        assert m.stats().mailbox.breaker == "open"
        assert m.stats().mailbox.breaker_trips == 2
        gate.open()
        holder.value()
        queued_call.value()


def test_open_circuit_stays_open_while_the_owner_drains_its_backlog() -> None:
    # Issue 18.4: the owner starting a request that was queued before the circuit opened
    # must not close it; only the cool-down ends the shedding.
    clock = FakeClock()
    with ActorMap(maxsize=1, breaker=CircuitBreaker(failures=2, cooldown=60, clock=clock)) as m:
        gate, holder = held(m)
        queued_call = Background(m.store, "queued", 1)
        queued(m, 1)
        for _ in range(2):
            with pytest.raises(MapBusyError):
                m.execute(len, block=False)
        assert m.stats().mailbox.breaker == "open"
        gate.open()
        holder.value()
        queued_call.value()  # the owner started (and ran) the backlog while open
        assert m.stats().mailbox.completed == 2
        for _ in range(3):
            with pytest.raises(CircuitOpenError):
                m.store("shed", 1)
        assert (m.stats().mailbox.breaker, m.stats().mailbox.breaker_trips) == ("open", 1)
        clock.now += 60  # the cool-down is over: half-open without any call admitted
        assert m.stats().mailbox.breaker == "half-open"
        m.store("after", 2)  # admitted, and its start closes the circuit
        assert m.stats().mailbox.breaker == "closed"
        assert dict(m) == {"queued": 1, "after": 2}


def test_backlog_expiring_while_open_neither_trips_again_nor_extends_the_cooldown() -> None:
    clock = FakeClock()
    with ActorMap(maxsize=2, breaker=CircuitBreaker(failures=1, cooldown=10, clock=clock)) as m:
        gate, holder = held(m)
        expiring = Background(m.execute, len, timeout=SHORT)
        kept = Background(m.store, "kept", 1)
        queued(m, 2)
        with pytest.raises(MapBusyError):  # full: the circuit opens
            m.execute(len, block=False)
        with pytest.raises(MapBusyError):  # its deadline passed in the queue: not applied
            expiring.value()
        stats = m.stats().mailbox
        assert (stats.breaker, stats.breaker_trips, stats.cancelled) == ("open", 1, 1)
        clock.now += 10  # the cool-down counts from the one trip
        assert m.stats().mailbox.breaker == "half-open"
        gate.open()
        holder.value()
        kept.value()
        assert m.stats().mailbox.breaker == "closed"
        assert dict(m) == {"kept": 1}


def test_breaker_policy_validation() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)
    with pytest.raises(ValueError):
        CircuitBreaker(cooldown=-1)


# ---------------------------------------------------------------- exact counts


def test_execute_keeps_a_multi_key_invariant_under_threads(run_threads: Any) -> None:
    accounts = 8
    total = 1000 * accounts
    n = 1500
    with ActorMap({a: 1000 for a in range(accounts)}) as m:

        def transfer(d: dict[int, int], src: int, dst: int) -> int:
            amount = min(d[src], 7)
            d[src] -= amount
            d[dst] += amount
            return sum(d.values())

        def worker(i: int) -> list[int]:
            sums = []
            for j in range(n):
                src, dst = (i + j) % accounts, (i * 3 + j + 1) % accounts
                sums.append(m.execute(transfer, src, dst))
                if j % 100 == 0:
                    sums.append(sum(m.snapshot().values()))
            return sums

        for sums in run_threads(worker, 4):
            assert set(sums) == {total}  # no one ever saw money in flight
        assert sum(m.values()) == total
        assert m.stats().mailbox.accepted >= 4 * n


def test_merge_counts_exactly_under_threads(run_threads: Any, fast_switch: None) -> None:
    n = 2000
    with ActorMap() as m:

        def worker(i: int) -> None:
            for j in range(n):
                m.merge(j % 5, 1, operator.add)

        run_threads(worker, 4)
        assert dict(m) == {k: 4 * n // 5 for k in range(5)}


# ------------------------------------------------------------ process lifecycle


def _run_script(source: str) -> str:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_interpreter_exits_with_an_unclosed_map_and_drains_it() -> None:
    # A module-level map never closed, and a non-daemon thread still using it after the
    # main thread returns: the process must use the map to the end, then exit.
    out = _run_script(
        "import threading, operator, time\n"
        "from safemap.actor import ActorMap\n"
        "m = ActorMap()\n"
        "def late_user():\n"
        "    time.sleep(0.2)\n"
        "    for _ in range(100): m.merge('n', 1, operator.add)\n"
        "    print('late', m['n'], flush=True)\n"
        "threading.Thread(target=late_user).start()\n"
        "m['main'] = 1\n"
    )
    assert out.split() == ["late", "100"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_forked_child_gets_a_new_owner_and_the_data_at_the_fork() -> None:
    out = _run_script(
        "import os, operator, threading, warnings\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "from safemap.actor import ActorMap\n"
        "m = ActorMap({'a': 1})\n"
        "closed = ActorMap({'b': 2}); closed.close()\n"
        "entered, release = threading.Event(), threading.Event()\n"
        "def hold(d):\n"
        "    entered.set(); release.wait(30); d['held'] = True\n"
        "holder = threading.Thread(target=m.execute, args=(hold,)); holder.start()\n"
        "entered.wait(30)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    m.merge('a', 10, operator.add)\n"
        "    try:\n"
        "        closed['b']\n"
        "    except Exception as exc:\n"
        "        kind = type(exc).__name__\n"
        "    print('child', dict(m), kind, flush=True)\n"
        "    m.close()\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "release.set(); holder.join()\n"
        "print('parent', dict(m))\n"
    )
    assert out.splitlines() == [
        "child {'a': 11} MapClosedError",
        "parent {'a': 1, 'held': True}",
    ]


# ------------------------------------------------------------ constructor options


RESERVED = {"maxsize": 1, "name": 2, "timeout": 3, "daemon": 4, "breaker": 5}


def test_option_names_are_reserved_and_such_keys_go_in_the_mapping() -> None:
    # Issue 16.7: ActorMap(name=...) is an option; the key "name" is passed in the mapping.
    with ActorMap(RESERVED) as m:
        assert m.snapshot() == RESERVED
        assert (m.stats().mailbox.capacity, m._thread.daemon) == (1024, False)
        assert m.copy().snapshot() == RESERVED
    with ActorMap(dict(RESERVED), name="owner", maxsize=7, daemon=True, timeout=5.0) as m:
        assert m.snapshot() == RESERVED
        assert (m.name, m.stats().mailbox.capacity, m._thread.daemon) == ("owner", 7, True)
        clone = m.copy()
        assert (clone.stats().mailbox.capacity, clone._thread.daemon) == (7, True)
        clone.close()


@pytest.mark.parametrize(
    "options",
    [{"name": 2}, {"daemon": 4}, {"breaker": 5}, {"timeout": "3"}, {"daemon": None}],
    ids=repr,
)
def test_an_option_of_the_wrong_type_says_how_to_store_such_a_key(options: Any) -> None:
    # The likely mistake is an item meant for another map type: say so, start no thread.
    before = set(threading.enumerate())
    with pytest.raises(TypeError, match=r"timeout must be|pass it in the mapping"):
        ActorMap(**options)
    assert set(threading.enumerate()) <= before


class _WritesOnCollection:
    """Cyclic garbage whose finalizer writes the map: it runs wherever the collector runs."""

    def __init__(self, m: ActorMap[Any, Any], key: Any) -> None:
        self.m, self.key, self.me = m, key, self

    def __del__(self) -> None:
        self.m[("finalized", self.key)] = 1


def test_copies_are_whole_when_finalizers_write_during_them() -> None:
    """Iteration, ``items()`` and ``snapshot()`` copy the dict on the owner. The copy's
    allocations can start the garbage collector there, and a finalizer's write to the map
    runs inline at once (it may not wait for the owner, which is itself): the copy must
    start over rather than fail with "dictionary changed size during iteration" or mix two
    states. The finalizers' writes all land."""
    rounds, per_round, size = 100, 20, 2000
    with ActorMap({i: i for i in range(size)}) as m:

        def make_garbage(d: dict[Any, Any], r: int) -> None:
            garbage = [_WritesOnCollection(m, (r, j)) for j in range(per_round)]
            del garbage  # unreachable cycles: the owner's next collection finalizes them

        old = gc.get_threshold()
        gc.set_threshold(50)  # collections start while the owner builds the copies
        try:
            for r in range(rounds):
                m.execute(make_garbage, r)
                assert [k for k, _ in m.items() if isinstance(k, int)] == list(range(size))
                assert sum(isinstance(k, int) for k in m.snapshot()) == size
        finally:
            gc.set_threshold(*old)
        gc.collect()
        assert len(m) == size + rounds * per_round
