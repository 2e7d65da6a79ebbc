"""The C lock behind the pure maps: ``MutexCore`` (``LockedMap``'s re-entrant mutex, the
RWLock state machine in exclusive mode) and the counting hooks both locks give the maps
(``_get_release``, ``_store_release``, ... and ``_tallies()``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from safemap import RWLock
from safemap.locks._rwlock import MutexCore

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0
THREADS = 4


def _run(fns: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []

    def body(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive(), "a thread is stuck (deadlock?)"
    return errors


def _other_thread_gets(lock: Any) -> bool:
    got: list[bool] = []

    def attempt() -> None:
        ok = lock._try_write()
        if ok:
            lock.release_write()
        got.append(ok)

    assert _run([attempt]) == []
    return got[0]


# ------------------------------------------------------------------- MutexCore


def test_mutex_is_reentrant_on_either_side_and_exclusive() -> None:
    lock = MutexCore()
    assert lock._try_read() and lock._try_write() and lock.acquire_read()
    assert lock._read_holds_by_current_thread() == 3
    assert lock.held_by_current_thread() and repr(lock) == "<MutexCore locked>"
    assert not _other_thread_gets(lock)  # a read hold excludes other threads too
    lock.release_write()
    lock.release_read()
    assert not _other_thread_gets(lock)  # still held once
    lock.release_read()
    assert repr(lock) == "<MutexCore unlocked>" and not lock.held_by_current_thread()
    assert _other_thread_gets(lock)
    with pytest.raises(RuntimeError):
        lock.release_read()  # nothing held
    assert lock._stats()[0] == 4  # every hold taken counts as an acquisition


def test_mutex_release_by_another_thread_fails_and_keeps_the_hold() -> None:
    lock = MutexCore()
    assert lock._try_read()
    errors = _run([lock.release_read])
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert lock.held_by_current_thread()
    lock.release_read()


def test_mutex_excludes_under_threads() -> None:
    # A plain read-modify-write under the mutex from several threads loses nothing.
    lock = MutexCore()
    box = [0]
    rounds = 5000

    def work() -> None:
        for _ in range(rounds):
            if not lock._try_write():
                lock.acquire_write()
            box[0] = box[0] + 1
            lock.release_write()

    assert _run([work] * THREADS) == []
    assert box[0] == THREADS * rounds
    assert lock._stats()[0] == THREADS * rounds


def test_mutex_takes_no_arguments() -> None:
    with pytest.raises(TypeError):
        MutexCore(1)  # type: ignore[call-arg]


# -------------------------------------------------------------- counting hooks


@pytest.mark.parametrize("make", [MutexCore, RWLock], ids=["MutexCore", "RWLock"])
def test_hooks_count_exactly_under_threads(make: Callable[[], Any]) -> None:
    # Readers of an RWLock hold it together: the counts, changed with the lock's state
    # locked, lose nothing however many count at once.
    lock = make()
    data = {"hot": 1}
    rounds = 3000

    def work(i: int) -> Callable[[], None]:
        def run() -> None:
            for r in range(rounds):
                assert lock._try_read() or lock.acquire_read()
                assert lock._get_release(data, "hot", None) == 1
                assert lock._try_read() or lock.acquire_read()
                assert lock._contains_release(data, ("absent", i)) is False
                assert lock._try_read() or lock.acquire_read()
                lock._release_read_other()
                assert lock._try_write() or lock.acquire_write()
                lock._store_release(data, (i, r % 2), r, 0)  # 2 inserts, then updates
                assert lock._try_write() or lock.acquire_write()
                lock._tally(0, 0, 1, 1)
                lock.release_write()

        return run

    assert _run([work(i) for i in range(THREADS)]) == []
    total = THREADS * rounds
    assert lock._tallies() == (total, total, total, 2 * THREADS, total - 2 * THREADS, total, total)
    assert lock._stats()[0] == 5 * total
    assert not lock.held_by_current_thread()


@pytest.mark.parametrize("make", [MutexCore, RWLock], ids=["MutexCore", "RWLock"])
def test_hooks_release_on_error_and_count_nothing(make: Callable[[], Any]) -> None:
    lock = make()

    class Boom:
        def __hash__(self) -> int:
            raise ValueError("boom")

    for hook in (lock._get_release, lock._getitem_release, lock._contains_release):
        assert lock._try_read()
        args = ({}, Boom(), None) if hook == lock._get_release else ({}, Boom())
        with pytest.raises(ValueError, match="boom"):
            hook(*args)
        assert not lock.held_by_current_thread()
    assert lock._try_read()
    with pytest.raises(KeyError) as info:
        lock._getitem_release({}, ("a", 1))
    assert info.value.args == (("a", 1),)  # a tuple key stays one argument
    assert not lock.held_by_current_thread()
    assert lock._try_write()
    with pytest.raises(ValueError, match="boom"):
        lock._store_release({}, Boom(), 1, 0)
    assert not lock.held_by_current_thread()
    assert lock._tallies() == (0, 1, 0, 0, 0, 0, 0)  # only the KeyError's miss


def test_store_releases_the_replaced_value_after_the_lock() -> None:
    lock = RWLock()
    seen: list[bool] = []

    class Value:
        def __del__(self) -> None:
            seen.append(lock.held_by_current_thread())

    data: dict[str, Any] = {"k": Value()}
    assert lock._try_write()
    lock._store_release(data, "k", 2, 0)
    assert seen == [False]  # its __del__ ran with the lock free
    assert lock._tallies()[3:5] == (0, 1)
    same = data["k"]
    assert lock._try_write()
    lock._store_release(data, "k", same, 1)  # the very object it held: no change
    assert lock._tallies()[3:] == (0, 1, 0, 0)


@pytest.mark.parametrize("unsampled", [False, True])
def test_a_map_owned_lock_reports_no_sample(unsampled: bool) -> None:
    # A map reports its contended waits under its own name: its lock reports none.
    from safemap.protocol.contention import contention_profile

    lock = RWLock()
    if unsampled:
        lock._unsampled()
    assert lock._try_write()
    waiter = threading.Thread(target=lambda: (lock.acquire_read(), lock.release_read()))
    with contention_profile() as profile:
        waiter.start()
        deadline = time.monotonic() + WAIT
        while lock._stats()[1] == 0:  # until the reader waits (a contended acquisition)
            assert waiter.is_alive() and time.monotonic() < deadline, "the reader never waited"
            time.sleep(0.005)
        lock.release_write()
        waiter.join(WAIT)
    assert not waiter.is_alive()
    assert profile.samples == (0 if unsampled else 1)


@pytest.mark.parametrize("make", [MutexCore, RWLock], ids=["MutexCore", "RWLock"])
@pytest.mark.parametrize("side", ["read", "write"])
def test_the_maps_slow_path_counts_one_contention_and_returns_its_wait(
    make: Callable[[], Any], side: str
) -> None:
    # ``_wait_read``/``_wait_write`` are what a map calls after its try failed: the
    # acquisition counts as contended (once) even if the lock is free by then, and the call
    # returns the time it waited, which is the wait the lock adds to its statistics.
    lock = make()
    wait, release = getattr(lock, f"_wait_{side}"), getattr(lock, f"release_{side}")
    waited = wait()  # free: admitted at once, still one contention
    assert isinstance(waited, float) and waited >= 0.0
    release()
    assert lock._stats() == (1, 1, waited)

    assert lock._try_write()  # held by this thread: another thread's call waits
    outcome: list[float] = []
    waiter = threading.Thread(target=lambda: (outcome.append(wait()), release()))
    waiter.start()
    deadline = time.monotonic() + WAIT
    while lock._stats()[1] == 1:  # until the waiter is counted
        assert waiter.is_alive() and time.monotonic() < deadline, "the waiter never waited"
        time.sleep(0.005)
    time.sleep(0.01)  # it waits a measurable time
    lock.release_write()
    waiter.join(WAIT)
    assert not waiter.is_alive() and len(outcome) == 1
    acquisitions, contentions, total = lock._stats()
    assert (acquisitions, contentions) == (3, 2)
    assert outcome[0] > 0.0 and total == pytest.approx(waited + outcome[0], abs=1e-9)


def test_the_maps_slow_path_takes_no_arguments() -> None:
    lock = RWLock()
    for name in ("_wait_read", "_wait_write"):
        with pytest.raises(TypeError):
            getattr(lock, name)(1)
    assert lock._stats() == (0, 0, 0.0)
