"""``safemap.protocol._locked.locked``: ``fn(*args)`` with a lock held, acquired, called and
released in one C call, so that no exception (a signal handler's included) leaves the lock
held; what it returns and raises is ``fn``'s, as with a ``with`` block."""

from __future__ import annotations

import contextlib
import sysconfig
import threading
from typing import Any

import pytest
from support.interrupts import interrupted_while_contending, needs_main_thread_signals
from support.leaks import FLAT, traced_growth

from safemap.protocol._locked import locked


class Boom(Exception):
    pass


class Recording:
    """A lock that records its calls; ``acquire``/``release`` raise what they are told."""

    def __init__(self, taken: object = True) -> None:
        self.calls: list[str] = []
        self.taken = taken
        self.acquire_raises: BaseException | None = None
        self.release_raises: BaseException | None = None

    def acquire(self) -> object:
        self.calls.append("acquire")
        if self.acquire_raises is not None:
            raise self.acquire_raises
        return self.taken

    def release(self) -> None:
        self.calls.append("release")
        if self.release_raises is not None:
            raise self.release_raises


@pytest.mark.parametrize("make", [threading.Lock, threading.RLock])
def test_it_returns_what_fn_returns_and_holds_the_lock_only_during_the_call(make: Any) -> None:
    lock = make()
    seen: list[bool] = []

    def fn(a: int, b: int) -> int:
        # Another thread cannot take it while fn runs.
        other = threading.Thread(target=lambda: seen.append(lock.acquire(timeout=0)))
        other.start()
        other.join()
        return a + b

    assert locked(lock, fn, 2, 3) == 5
    assert seen == [False]
    assert lock.acquire(timeout=0)  # released afterwards
    lock.release()


def test_fn_exceptions_propagate_and_the_lock_is_released() -> None:
    lock = threading.Lock()

    def fn() -> None:
        raise Boom("in fn")

    with pytest.raises(Boom, match="in fn"):
        locked(lock, fn)
    assert not lock.locked()


def test_a_release_that_raises_wins_with_fns_exception_as_its_context() -> None:
    lock = Recording()
    lock.release_raises = Boom("release")

    def fn() -> None:
        raise KeyError("fn")

    with pytest.raises(Boom, match="release") as info:
        locked(lock, fn)
    assert isinstance(info.value.__context__, KeyError)
    assert lock.calls == ["acquire", "release"]
    lock.release_raises = Boom("release only")
    with pytest.raises(Boom, match="release only"):
        locked(lock, lambda: 1)


def test_an_acquire_that_raises_calls_neither_fn_nor_release() -> None:
    lock = Recording()
    lock.acquire_raises = Boom("acquire")
    called: list[int] = []
    with pytest.raises(Boom, match="acquire"):
        locked(lock, called.append, 1)
    assert called == [] and lock.calls == ["acquire"]


@pytest.mark.parametrize("taken", [False, 0, None])
def test_an_acquire_that_does_not_take_the_lock_is_refused(taken: object) -> None:
    lock = Recording(taken)
    called: list[int] = []
    with pytest.raises(RuntimeError, match="did not take the lock"):
        locked(lock, called.append, 1)
    assert called == [] and lock.calls == ["acquire"]


def test_bad_calls_are_refused() -> None:
    with pytest.raises(TypeError, match="at least 2 arguments"):
        locked(threading.Lock())  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        locked(object(), print)
    lock = threading.Lock()
    with pytest.raises(TypeError):
        locked(lock, None)  # type: ignore[arg-type]
    assert not lock.locked()


def test_a_re_entrant_lock_can_be_re_entered() -> None:
    lock = threading.RLock()
    assert locked(lock, locked, lock, lambda: "inner") == "inner"
    assert lock.acquire(blocking=False)
    lock.release()


def test_it_leaks_nothing(frozen_heap: None) -> None:
    # A million sections, half of them raising: no reference is left behind.
    lock = threading.Lock()

    def fails() -> None:
        raise Boom

    def step(i: int) -> None:
        locked(lock, list, (i,))
        with contextlib.suppress(Boom):
            locked(lock, fails)

    assert traced_growth(step, warmup=10_000, rounds=250_000) < FLAT


@needs_main_thread_signals
@pytest.mark.timeout(120)
@pytest.mark.parametrize("make", [threading.Lock, threading.RLock])
def test_interrupts_never_leave_the_lock_held(make: Any, fast_switch: None) -> None:
    # The main thread takes the lock over and over, contending with three threads, while a
    # SIGINT handler raises in it: wherever the exception lands, the lock ends up free (the
    # workers finish), and every section that ran, ran whole under the lock.
    lock = make()
    state = {"inside": 0, "runs": 0, "overlaps": 0}

    def section() -> None:
        state["inside"] += 1
        if state["inside"] != 1:
            state["overlaps"] += 1
        state["runs"] += 1
        state["inside"] -= 1

    def op() -> None:
        locked(lock, section)

    workers, per_worker = 3, 20000
    main_done, interrupts = interrupted_while_contending(op, op, workers, per_worker)
    assert lock.acquire(timeout=30), "the lock was left held"
    lock.release()
    assert state["overlaps"] == 0 and state["inside"] == 0
    done = workers * per_worker + main_done
    assert done <= state["runs"] <= done + interrupts


def test_it_says_whether_this_is_a_free_threaded_build() -> None:
    from safemap.protocol._locked import FREE_THREADED

    assert FREE_THREADED is bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
