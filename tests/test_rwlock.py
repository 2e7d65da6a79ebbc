"""``safemap.RWLock``: shared readers, an exclusive writer, writer preference, timeouts,
misuse errors instead of deadlocks, and interrupt safety."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from safemap import RWLock

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0  # seconds before a liveness check declares a thread stuck


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``fn`` in a daemon thread; the list receives its result or exception."""
    out: list[Any] = []

    def body() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, out


def call_in_thread(fn: Callable[[], Any]) -> Any:
    t, out = in_thread(fn)
    t.join(WAIT)
    assert not t.is_alive(), "the thread is stuck"
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def try_read(lock: RWLock) -> bool:
    """From another thread: can a new reader get in right now?"""

    def attempt() -> bool:
        ok = lock.acquire_read(timeout=0)
        if ok:
            lock.release_read()
        return ok

    return bool(call_in_thread(attempt))


def try_write(lock: RWLock) -> bool:
    """From another thread: can a writer get in right now?"""

    def attempt() -> bool:
        ok = lock.acquire_write(timeout=0)
        if ok:
            lock.release_write()
        return ok

    return bool(call_in_thread(attempt))


@pytest.fixture
def lock() -> RWLock:
    return RWLock()


# ------------------------------------------------------------------- basics


def test_acquire_release_return_values(lock: RWLock) -> None:
    assert lock.acquire_read() is True
    assert lock.release_read() is None
    assert lock.acquire_write() is True
    assert lock.release_write() is None
    assert lock.acquire_read(timeout=1) is True
    lock.release_read()
    assert lock.acquire_write(timeout=1) is True
    lock.release_write()
    assert lock.acquire_read(timeout=None) is True
    lock.release_read()
    assert lock.acquire_write(timeout=None) is True
    lock.release_write()


def test_concurrent_readers(lock: RWLock) -> None:
    """N readers hold the read lock at the same time: all reach a barrier while holding it
    (if readers excluded each other, the barrier would never fill)."""
    n = 6
    inside = threading.Barrier(n)
    start = threading.Barrier(n)

    def reader() -> bool:
        start.wait(WAIT)
        assert lock.acquire_read(timeout=WAIT)
        try:
            inside.wait(WAIT)  # BrokenBarrierError if the others cannot get in
            return True
        finally:
            lock.release_read()

    threads = [in_thread(reader) for _ in range(n)]
    for t, out in threads:
        t.join(WAIT * 2)
        assert not t.is_alive()
        assert out == [True], out


def test_writer_excludes_readers_and_writers(lock: RWLock) -> None:
    assert lock.acquire_write()
    assert try_read(lock) is False
    assert try_write(lock) is False
    lock.release_write()
    assert try_read(lock) is True
    assert try_write(lock) is True


def test_reader_excludes_writers_not_readers(lock: RWLock) -> None:
    assert lock.acquire_read()
    assert try_write(lock) is False
    assert try_read(lock) is True
    lock.release_read()
    assert try_write(lock) is True


def test_mutual_exclusion_under_contention(lock: RWLock) -> None:
    """Writers do a non-atomic two-step update with a thread switch in the middle; readers
    must never see it half done, and no writer update may be lost."""
    state = {"a": 0, "b": 0}
    writers, readers, rounds = 4, 4, 300
    torn: list[tuple[int, int]] = []
    start = threading.Barrier(writers + readers)

    def writer() -> None:
        start.wait(WAIT)
        for _ in range(rounds):
            with lock.write():
                a = state["a"]
                time.sleep(0)  # invite a switch mid-update
                state["a"] = a + 1
                state["b"] = a + 1

    def reader() -> None:
        start.wait(WAIT)
        for _ in range(rounds):
            with lock.read():
                a = state["a"]
                time.sleep(0)
                b = state["b"]
                if a != b:
                    torn.append((a, b))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [in_thread(writer) for _ in range(writers)]
        threads += [in_thread(reader) for _ in range(readers)]
        for t, out in threads:
            t.join(WAIT * 2)
            assert not t.is_alive()
            assert out == [None], out
    finally:
        sys.setswitchinterval(old)
    assert torn == []
    assert state == {"a": writers * rounds, "b": writers * rounds}


# -------------------------------------------------------------- writer preference


def test_waiting_writer_blocks_new_readers(lock: RWLock) -> None:
    events: list[str] = []
    assert lock.acquire_read()  # the main thread reads

    def writer() -> None:
        assert lock.acquire_write(timeout=WAIT)
        events.append("writer in")
        lock.release_write()

    writer_thread, writer_out = in_thread(writer)
    # Once the writer waits, new readers must be held back.
    wait_until(lambda: not try_read(lock), "a waiting writer holds back new readers")
    assert writer_thread.is_alive() and events == []

    def late_reader() -> None:
        assert lock.acquire_read(timeout=WAIT)
        events.append("late reader in")
        lock.release_read()

    reader_thread, reader_out = in_thread(late_reader)
    reader_thread.join(0.2)  # let the late reader try (it must wait)
    assert events == []
    lock.release_read()  # the writer goes first, then the late reader
    writer_thread.join(WAIT)
    reader_thread.join(WAIT)
    assert not writer_thread.is_alive() and not reader_thread.is_alive()
    assert writer_out == [None] and reader_out == [None]
    assert events == ["writer in", "late reader in"]
    assert try_read(lock) is True and try_write(lock) is True


def test_writers_are_not_starved_by_a_stream_of_readers(lock: RWLock) -> None:
    """Overlapping readers keep the read lock held at every instant; a writer still gets
    in each time (a reader-preferring lock would starve it until WAIT expires)."""
    stop = threading.Event()
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            if lock.acquire_read(timeout=0.1):
                reads[0] += 1
                time.sleep(0.002)
                lock.release_read()

    def writer() -> int:
        wins = 0
        for _ in range(5):
            if lock.acquire_write(timeout=WAIT):
                wins += 1
                lock.release_write()
            time.sleep(0.005)
        return wins

    readers = [in_thread(reader) for _ in range(4)]
    try:
        wait_until(lambda: reads[0] > 20, "readers are running")
        assert call_in_thread(writer) == 5
    finally:
        stop.set()
        for t, _ in readers:
            t.join(WAIT)
            assert not t.is_alive()


def test_timed_out_writer_stops_holding_back_readers(lock: RWLock) -> None:
    assert lock.acquire_read()
    assert call_in_thread(lambda: lock.acquire_write(timeout=0.05)) is False
    assert try_read(lock) is True  # the writer gave up: readers are admitted again
    lock.release_read()
    assert try_write(lock) is True


# ------------------------------------------------------------------- timeouts


def test_acquire_read_times_out_while_writer_holds(lock: RWLock) -> None:
    assert lock.acquire_write()
    result = call_in_thread(lambda: lock.acquire_read(timeout=0.05))
    assert result is False
    assert call_in_thread(lambda: lock.acquire_read(timeout=0)) is False
    lock.release_write()
    assert try_read(lock) is True


def test_acquire_write_times_out_while_reader_holds(lock: RWLock) -> None:
    assert lock.acquire_read()
    assert call_in_thread(lambda: lock.acquire_write(timeout=0.05)) is False
    assert call_in_thread(lambda: lock.acquire_write(timeout=0)) is False
    lock.release_read()
    assert try_write(lock) is True


def test_acquire_write_times_out_while_writer_holds(lock: RWLock) -> None:
    assert lock.acquire_write()
    assert call_in_thread(lambda: lock.acquire_write(timeout=0.05)) is False
    lock.release_write()
    assert try_write(lock) is True


def test_blocking_acquire_succeeds_after_release(lock: RWLock) -> None:
    assert lock.acquire_write()

    def waiter() -> bool:
        ok = lock.acquire_read()
        lock.release_read()
        return ok

    t, out = in_thread(waiter)
    t.join(0.05)
    lock.release_write()
    t.join(WAIT)
    assert not t.is_alive()
    assert out == [True]


# ----------------------------------------------------------------- misuse


def test_reader_asking_for_write_gets_runtime_error_at_once(lock: RWLock) -> None:
    assert lock.acquire_read()
    with pytest.raises(RuntimeError):
        lock.acquire_write()
    with pytest.raises(RuntimeError):
        lock.acquire_write(timeout=WAIT)
    with pytest.raises(RuntimeError):
        lock.acquire_write(timeout=0)
    # the failed upgrade changed nothing: still a reader, others may read, nobody writes
    assert try_read(lock) is True
    assert try_write(lock) is False
    lock.release_read()
    assert try_write(lock) is True


def test_upgrade_error_with_other_readers_present(lock: RWLock) -> None:
    other_in, other_release = threading.Event(), threading.Event()

    def other_reader() -> None:
        assert lock.acquire_read()
        other_in.set()
        other_release.wait(WAIT)
        lock.release_read()

    t, _ = in_thread(other_reader)
    assert other_in.wait(WAIT)
    assert lock.acquire_read()
    with pytest.raises(RuntimeError):
        lock.acquire_write()
    lock.release_read()
    other_release.set()
    t.join(WAIT)
    assert try_write(lock) is True


def test_context_manager_upgrade_raises(lock: RWLock) -> None:
    with lock.read(), pytest.raises(RuntimeError), lock.write():
        pass
    assert try_write(lock) is True


def test_release_read_not_held(lock: RWLock) -> None:
    with pytest.raises(RuntimeError):
        lock.release_read()
    assert lock.acquire_read()
    lock.release_read()
    with pytest.raises(RuntimeError):
        lock.release_read()  # double release
    assert try_write(lock) is True


def test_release_write_not_held(lock: RWLock) -> None:
    with pytest.raises(RuntimeError):
        lock.release_write()
    assert lock.acquire_write()
    lock.release_write()
    with pytest.raises(RuntimeError):
        lock.release_write()  # double release
    assert lock.acquire_read()
    with pytest.raises(RuntimeError):
        lock.release_write()  # a reader does not hold the write lock
    lock.release_read()
    assert try_write(lock) is True


def test_release_by_another_thread_raises(lock: RWLock) -> None:
    assert lock.acquire_write()
    with pytest.raises(RuntimeError):
        call_in_thread(lock.release_write)
    assert try_read(lock) is False  # still held by this thread
    lock.release_write()
    assert lock.acquire_read()
    with pytest.raises(RuntimeError):
        call_in_thread(lock.release_read)
    assert try_write(lock) is False  # the read hold is still ours
    lock.release_read()
    assert try_write(lock) is True


# ------------------------------------------------------------ context managers


def test_read_context_manager(lock: RWLock) -> None:
    with lock.read():
        assert try_write(lock) is False
        assert try_read(lock) is True
    assert try_write(lock) is True


def test_write_context_manager(lock: RWLock) -> None:
    with lock.write():
        assert try_read(lock) is False
        assert try_write(lock) is False
    assert try_read(lock) is True and try_write(lock) is True


def test_context_managers_release_on_exception(lock: RWLock) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), lock.write():
        raise Boom
    assert try_read(lock) is True and try_write(lock) is True
    with pytest.raises(Boom), lock.read():
        raise Boom
    assert try_write(lock) is True


# ------------------------------------------------------------ interrupt safety


@pytest.fixture
def sigint_to_main() -> Iterator[Callable[[Callable[[], None]], KeyboardInterrupt]]:
    """``interrupt(wait)`` runs ``wait()`` in the main thread while another thread sends
    SIGINT to the process until the main thread is interrupted; returns the interrupt.
    The KeyboardInterrupt is raised only while ``wait()`` runs (never into pytest).

    ``armed`` is a list item, not an ``Event``: disarming must not be a Python call, whose
    entry is itself a point where a pending signal's handler runs (and would raise again,
    out of the ``except`` below and into pytest)."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    armed = [False]

    def handler(signum: int, frame: Any) -> None:
        if armed[0]:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)

    def interrupt(wait: Callable[[], None]) -> KeyboardInterrupt:
        done = threading.Event()

        def sender() -> None:
            while not done.wait(0.05):
                os.kill(os.getpid(), signal.SIGINT)

        t = threading.Thread(target=sender, daemon=True)
        armed[0] = True
        t.start()
        try:
            wait()
        except KeyboardInterrupt as exc:
            armed[0] = False  # first: no call (so no signal check) before it
            caught = exc
        else:
            pytest.fail("wait() returned without being interrupted")
        finally:
            armed[0] = False
            done.set()
            t.join(WAIT)
        return caught

    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)


def _holding_reader(lock: RWLock) -> tuple[threading.Thread, threading.Event]:
    held, release = threading.Event(), threading.Event()

    def reader() -> None:
        assert lock.acquire_read()
        held.set()
        release.wait(WAIT * 2)
        lock.release_read()

    t, _ = in_thread(reader)
    assert held.wait(WAIT)
    return t, release


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("timeout", [None, WAIT * 2])
def test_interrupt_while_waiting_for_write(
    lock: RWLock, sigint_to_main: Callable[[Callable[[], None]], Any], timeout: float | None
) -> None:
    reader, release = _holding_reader(lock)

    def wait() -> None:
        got = lock.acquire_write(timeout=timeout)
        # Should not get here while the reader holds; if it did, keep the lock consistent.
        if got:
            lock.release_write()

    sigint_to_main(wait)
    # The interrupted writer must not linger: new readers are admitted again...
    assert try_read(lock) is True
    release.set()
    reader.join(WAIT)
    # ...and the lock works fully: writes from another thread and from this one.
    assert try_write(lock) is True
    assert lock.acquire_write(timeout=WAIT) is True
    assert try_read(lock) is False
    lock.release_write()
    assert lock.acquire_read(timeout=WAIT) is True
    lock.release_read()
    assert try_write(lock) is True


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("timeout", [None, WAIT * 2])
def test_interrupt_while_waiting_for_read(
    lock: RWLock, sigint_to_main: Callable[[Callable[[], None]], Any], timeout: float | None
) -> None:
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        assert lock.acquire_write()
        held.set()
        release.wait(WAIT * 2)
        lock.release_write()

    t, _ = in_thread(writer)
    assert held.wait(WAIT)

    def wait() -> None:
        if lock.acquire_read(timeout=timeout):
            lock.release_read()

    sigint_to_main(wait)
    release.set()
    t.join(WAIT)
    assert try_write(lock) is True
    assert lock.acquire_read(timeout=WAIT) is True
    lock.release_read()
    assert lock.acquire_write(timeout=WAIT) is True
    lock.release_write()


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("mode", ["write", "read"])
def test_repeated_interrupts_leave_lock_usable(
    lock: RWLock, sigint_to_main: Callable[[Callable[[], None]], Any], mode: str
) -> None:
    """Interrupts landing at many different points of acquire_write/acquire_read (short
    timed waits in a loop, signalled every 50 ms) never corrupt the lock. The waits can
    never succeed (another thread holds the conflicting lock), so no hold can leak from
    the loop itself."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        assert (lock.acquire_read if mode == "write" else lock.acquire_write)()
        held.set()
        release.wait(WAIT * 2)
        (lock.release_read if mode == "write" else lock.release_write)()

    t, _ = in_thread(holder)
    assert held.wait(WAIT)
    acquire = lock.acquire_write if mode == "write" else lock.acquire_read
    for _ in range(5):

        def wait() -> None:
            for _ in range(100000):
                assert acquire(timeout=0.001) is False

        sigint_to_main(wait)
        if mode == "write":
            assert try_read(lock) is True  # no phantom waiting writer left behind
    release.set()
    t.join(WAIT)
    assert not t.is_alive()
    assert try_write(lock) is True
    assert try_read(lock) is True
    assert lock.acquire_write(timeout=WAIT) is True
    lock.release_write()
    assert lock.acquire_read(timeout=WAIT) is True
    lock.release_read()
