"""Faults and hostile inputs, on every map type: each case asserts its documented outcome and
that no entry was lost or corrupted."""

from __future__ import annotations

import itertools
import operator
import os
import signal
import sys
import threading
import time
from typing import Any

import pytest
from support.interrupts import (
    Interrupt,
    interrupted_after,
    interrupted_while_contending,
    needs_main_thread_signals,
)

from safemap import DELETE, MISSING, RecursiveUpdateError

pytestmark = pytest.mark.timeout(120)


class SlowKey:
    """A key whose ``__hash__`` and ``__eq__`` release the GIL (sleep) mid-lookup."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        time.sleep(0)
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        time.sleep(0)
        return isinstance(other, SlowKey) and other.name == self.name


def test_keys_that_release_the_gil_keep_merges_exact(
    map_type: type[Any], fast_switch: None
) -> None:
    m = map_type()
    keys = [SlowKey(f"k{i}") for i in range(3)]
    per_thread = 300

    def work(_: int) -> None:
        for i in range(per_thread):
            m.merge(SlowKey(keys[i % 3].name), 1, operator.add)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(m[k] for k in keys) == [400, 400, 400]
    assert len(m) == 3


def test_callback_calling_sys_exit_propagates_and_changes_nothing(map_type: type[Any]) -> None:
    m = map_type(a=1)

    def leave(_key: Any, _old: Any) -> Any:
        sys.exit(3)

    with pytest.raises(SystemExit):
        m.compute("a", leave)
    with pytest.raises(SystemExit):
        m.transaction(lambda view: (view.__setitem__("b", 2), sys.exit(3)))
    assert dict(m.snapshot()) == {"a": 1}
    m.merge("a", 1, operator.add)  # still usable: no lock or flag left behind
    assert m["a"] == 2


def test_blocked_callback_does_not_corrupt_and_other_threads_finish(map_type: type[Any]) -> None:
    m = map_type(a=0)
    entered, release = threading.Event(), threading.Event()

    def slow(_key: Any, old: Any) -> Any:
        entered.set()
        release.wait(10)
        return old + 100

    blocker = threading.Thread(target=m.compute, args=("a", slow))
    blocker.start()
    assert entered.wait(10)
    writers = [
        threading.Thread(target=lambda: [m.merge("a", 1, operator.add) for _ in range(50)])
        for _ in range(3)
    ]
    for w in writers:
        w.start()
    release.set()
    blocker.join(10)
    for w in writers:
        w.join(10)
    assert not blocker.is_alive() and not any(w.is_alive() for w in writers)
    assert m["a"] == 250


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX-only")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads: intended here
def test_fork_while_another_thread_holds_the_map(map_type: type[Any]) -> None:
    """The child can use the map (no hang) and sees the data as it was at the fork."""
    m = map_type({i: i for i in range(100)})
    entered, release = threading.Event(), threading.Event()

    def hold(_key: Any, old: Any) -> Any:
        entered.set()
        release.wait(30)
        return old

    holder = threading.Thread(target=m.compute, args=(5, hold))
    holder.start()
    assert entered.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # child: only this thread exists; the holder thread is gone
            code = 1
            try:
                m[1000] = 1000
                m.merge(5, 1, operator.add)
                ok = len(m) == 101 and m[5] == 6 and m[1000] == 1000 and sum(m.values()) == 5951
                code = 0 if ok else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung using the map")
            time.sleep(0.01)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        holder.join(10)
    assert len(m) == 100 and m[5] == 5  # the parent is unaffected


def _plus_one(_key: object, old: Any) -> int:
    return 1 if old is MISSING else int(old) + 1


def _increment_in_view(view: Any) -> None:
    view["n"] = view.get("n", 0) + 1


@needs_main_thread_signals
# The interrupt may land in a finalizer run by the collector meanwhile (a socket's __del__,
# a GC callback): Python reports it as unraisable and goes on, as it does for a real Ctrl-C.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("op", ["merge", "compute", "transaction"])
def test_interrupt_signal_while_threads_contend(
    map_type: type[Any], op: str, fast_switch: None
) -> None:
    """A SIGINT handler raises in the main thread mid-operation, many times; the map stays
    usable, the workers finish (no lock left held) and every completed increment (a merge,
    a compute, which some maps run on another path, or a transaction) is counted."""
    m = map_type()
    workers, per_worker = 3, 2000

    def increment() -> None:
        if op == "merge":
            m.merge("n", 1, operator.add)
        elif op == "compute":
            m.compute("n", _plus_one)
        else:
            m.transaction(_increment_in_view)

    main_done, interrupts = interrupted_while_contending(increment, increment, workers, per_worker)
    total = m["n"]
    # An interrupt may land after an increment took effect but before main counted it.
    assert workers * per_worker + main_done <= total
    assert total <= workers * per_worker + main_done + interrupts


@needs_main_thread_signals
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_interrupted_loads_never_strand_their_waiters(
    map_type: type[Any], fast_switch: None
) -> None:
    """get_or_compute on a few keys from every thread, each key removed again after its
    load, while the main thread is interrupted many times (in its loads among other
    places). A waiter gets the loaded value or the load's exception (an interrupt of the
    loading main thread); none waits for ever, and no stored value is wrong."""
    m = map_type()
    keys = itertools.count()
    errors: list[BaseException] = []

    def loader(key: int) -> int:
        return key * 2

    def load_one() -> None:
        key = next(keys) % 8
        try:
            value = m.get_or_compute(key, loader, timeout=30)
            if value != key * 2:
                errors.append(AssertionError(f"{key} -> {value}"))
        except Interrupt:
            pass  # the load this thread waited for was the interrupted main thread's
        except BaseException as exc:
            errors.append(exc)
        m.pop(key, None)

    def main_load() -> None:
        key = next(keys) % 8
        assert m.get_or_compute(key, loader, timeout=30) == key * 2
        m.pop(key, None)

    interrupted_while_contending(main_load, load_one, workers=3, per_worker=300)
    assert errors == []
    assert all(m.get(key, key * 2) == key * 2 for key in range(8))


@needs_main_thread_signals
def test_an_interrupt_while_a_transaction_waits_for_the_lock_leaves_the_map_usable(
    map_type: type[Any],
) -> None:
    """Ctrl-C while transaction() waits for a lock another transaction holds. Where that
    wait cannot be interrupted (the native maps' locks on free-threaded builds), the
    handler runs the moment the lock is taken: the lock must still be returned (it was
    held for good), and the interrupted transaction changes nothing or everything."""
    m = map_type(a=0)
    entered = threading.Event()

    def hold(view: Any) -> None:
        entered.set()
        time.sleep(0.3)
        view["a"] = 1

    holder = threading.Thread(target=m.transaction, args=(hold,), daemon=True)
    holder.start()
    assert entered.wait(10)
    interrupted = interrupted_after(0.1, lambda: m.transaction(lambda v: v.update(b=2)))
    holder.join(10)
    writer = threading.Thread(target=m.__setitem__, args=("c", 3), daemon=True)
    writer.start()
    writer.join(10)
    assert not holder.is_alive() and not writer.is_alive(), "a lock was left held"
    m.transaction(lambda v: v.update(d=4))
    after = dict(m)
    assert after in ({"a": 1, "c": 3, "d": 4}, {"a": 1, "b": 2, "c": 3, "d": 4})
    assert interrupted or "b" in after


def test_reentrant_key_eq_write_is_refused_and_map_unchanged(map_type: type[Any]) -> None:
    m = map_type()

    class Meddler:
        armed = False

        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            if Meddler.armed:
                Meddler.armed = False
                m["intruder"] = 1  # a write from inside the map's own operation
            return self is other

    first, second = Meddler(), Meddler()
    m[first] = "first"
    Meddler.armed = True
    try:
        m[second] = "second"  # the lookup compares second with first: __eq__ runs inside
    except RecursiveUpdateError:
        assert dict(m.snapshot()) == {first: "first"}
    else:
        # A type may allow the nested write when it cannot break atomicity; then both
        # writes must have landed whole.
        assert dict(m.snapshot()) == {first: "first", second: "second", "intruder": 1}


def test_compute_returning_delete_for_absent_key_stores_nothing(map_type: type[Any]) -> None:
    m = map_type()
    assert m.compute("x", lambda k, old: DELETE) is None
    assert "x" not in m and len(m) == 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ten_million_entries(map_type: type[Any]) -> None:
    n = 10_000_000
    m = map_type()
    for i in range(n):
        m[i] = i
    assert len(m) == n
    assert m[n - 1] == n - 1
    assert sum(1 for _ in m.items()) == n
    removed = m.delete_if(lambda k, v: k % 2 == 0)
    assert removed == n // 2 and len(m) == n // 2
