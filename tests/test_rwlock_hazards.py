"""``safemap.RWLock`` against what can strike a thread at any instant: signals (a handler
raising ``KeyboardInterrupt``) arriving over and over while threads contend, the garbage
collector running finalizers that use the lock (through ``RWLockMap``) on the thread that
is inside the lock's own methods, and threads that end while holding it."""

from __future__ import annotations

import _thread
import gc
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safemap import RecursiveUpdateError, RWLock, RWLockMap

pytestmark = pytest.mark.timeout(120)

WAIT = 20.0  # seconds before a liveness check declares a thread stuck
INTERRUPTS = 300  # interrupts each signal-storm test delivers
FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()

posix_main_thread = pytest.mark.skipif(
    os.name == "nt" or threading.current_thread() is not threading.main_thread(),
    reason="needs POSIX signals delivered to the main thread",
)


def run_in_thread(fn: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Run ``fn`` in a daemon thread; its result, or its exception re-raised. A thread
    still running after ``timeout`` fails the test (instead of hanging it)."""
    out: list[Any] = []

    def body() -> None:
        try:
            out.append((True, fn()))
        except BaseException as exc:
            out.append((False, exc))

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the thread is stuck"
    ok, value = out[0]
    if not ok:
        raise value
    return value


def fresh_thread_gets_both_sides(lock: RWLock) -> None:
    """A thread that never touched the lock takes the write lock, then the read lock."""

    def attempt() -> tuple[bool, bool]:
        wrote = lock.acquire_write(timeout=WAIT)
        if wrote:
            lock.release_write()
        read = lock.acquire_read(timeout=WAIT)
        if read:
            lock.release_read()
        return wrote, read

    assert run_in_thread(attempt, WAIT * 2 + 5) == (True, True)


class _Interrupt(BaseException):
    """What the test's SIGINT handler raises (a class of its own, so that one escaping
    by mistake could never look like a real KeyboardInterrupt to pytest)."""


class _Trigger:
    """SIGINT handler raising one :class:`_Interrupt` per arming: the test arms it only
    inside ``try``, so the exception lands at an arbitrary point of the code in that
    ``try`` (inside the lock's methods included), never outside."""

    def __init__(self, exc: type[BaseException] = _Interrupt) -> None:
        self.armed = False
        self.raised = 0
        self.exc = exc

    def __call__(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.armed = False
            self.raised += 1
            raise self.exc


@pytest.fixture
def trigger() -> Iterator[_Trigger]:
    trig = _Trigger()
    previous = signal.signal(signal.SIGINT, trig)
    try:
        yield trig
    finally:
        signal.signal(signal.SIGINT, previous)


# -------------------------------------------------------------- signal storms


@posix_main_thread
@pytest.mark.parametrize("mode", ["write", "read"])
def test_signal_storm_while_acquiring_leaves_the_lock_working(trigger: _Trigger, mode: str) -> None:
    """The main thread loops on timed acquires (until it has been interrupted INTERRUPTS
    times) while another thread sends it SIGINT every few hundred microseconds and four
    threads churn (three readers, one writer doing a two-step update). Interrupts land
    inside the acquires, mostly while they wait. Afterwards: no churning thread saw an
    error or a torn update, every write counted, and a fresh thread gets the lock (with
    the old lock, its internal mutex stayed locked or 'release unlocked lock' escaped)."""
    lock = RWLock()
    acquire = lock.acquire_write if mode == "write" else lock.acquire_read
    release = lock.release_write if mode == "write" else lock.release_read
    state = {"a": 0, "b": 0}
    stop = threading.Event()
    errors: list[BaseException] = []
    torn: list[tuple[int, int]] = []
    writes = [0]
    main_ident = threading.get_ident()

    def reader() -> None:
        try:
            while not stop.is_set():
                with lock.read(timeout=WAIT):
                    a = state["a"]
                    time.sleep(0.0002)  # hold a while: the main thread mostly waits
                    b = state["b"]
                    if a != b:
                        torn.append((a, b))
        except BaseException as exc:
            errors.append(exc)

    def writer() -> None:
        try:
            while not stop.is_set():
                with lock.write(timeout=WAIT):
                    state["a"] += 1
                    state["b"] = state["a"]
                    writes[0] += 1
        except BaseException as exc:
            errors.append(exc)

    def sender() -> None:
        while not stop.wait(0.0003):
            signal.pthread_kill(main_ident, signal.SIGINT)

    threads = [threading.Thread(target=f, daemon=True) for f in (reader, reader, reader, writer)]
    signals = threading.Thread(target=sender, daemon=True)
    for t in [*threads, signals]:
        t.start()
    interrupted = got = 0
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # GIL build: let the churning threads interleave
    try:
        for _ in range(100_000):
            if interrupted >= INTERRUPTS:
                break
            try:
                trigger.armed = True
                if acquire(timeout=0.002):
                    got += 1
                    release()
                time.sleep(0)  # let the others in, so that the next acquire waits
                trigger.armed = False
            except _Interrupt:
                interrupted += 1
            # An interrupt between a successful acquire and its release (in this loop's
            # own code, not the lock's) leaves this thread's hold: give it back.
            if mode == "write" and lock.write_held_by_current_thread():
                lock.release_write()
            while mode == "read" and lock.held_by_current_thread():
                lock.release_read()
    finally:
        trigger.armed = False
        sys.setswitchinterval(old_switch)
        stop.set()
        signals.join(WAIT)
        for t in threads:
            t.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a churning thread is stuck"
    assert errors == [] and torn == []
    assert state == {"a": writes[0], "b": writes[0]}
    assert interrupted == trigger.raised == INTERRUPTS
    assert not lock.held_by_current_thread()
    assert repr(lock) == "<RWLock unlocked, 0 writers waiting>"
    fresh_thread_gets_both_sides(lock)


@posix_main_thread
@pytest.mark.parametrize("mode", ["write", "read"])
def test_interrupted_untimed_wait_takes_nothing(trigger: _Trigger, mode: str) -> None:
    """A wait with no timeout, interrupted by a real signal (the handler raises), ends with
    the exception, nothing held and no waiter left behind; repeated many times."""
    lock = RWLock()
    holding, done = threading.Event(), threading.Event()

    def holder() -> None:  # holds the side that makes the main thread wait
        (lock.acquire_read if mode == "write" else lock.acquire_write)()
        holding.set()
        done.wait(WAIT * 3)
        (lock.release_read if mode == "write" else lock.release_write)()

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    assert holding.wait(WAIT)
    acquire = lock.acquire_write if mode == "write" else lock.acquire_read
    main_ident = threading.get_ident()
    for _ in range(20):
        stop = threading.Event()

        def sender(stop: threading.Event = stop) -> None:
            while not stop.wait(0.002):
                signal.pthread_kill(main_ident, signal.SIGINT)

        s = threading.Thread(target=sender, daemon=True)
        s.start()
        try:
            trigger.armed = True
            acquire()  # cannot succeed: the holder keeps the lock
            trigger.armed = False
            pytest.fail("the wait ended without an interrupt")
        except _Interrupt:
            pass
        finally:
            stop.set()
            s.join(WAIT)
        assert not lock.held_by_current_thread()
        assert repr(lock).endswith(", 0 writers waiting>")
    done.set()
    t.join(WAIT)
    assert not t.is_alive()
    fresh_thread_gets_both_sides(lock)


@posix_main_thread
def test_signal_handler_using_the_lock_while_its_thread_waits_to_write() -> None:
    """A signal handler that reads through the lock runs while its thread waits for the
    write lock. The waiting writer must not hold the handler back (the old lock kept it
    counted as waiting, so the handler waited for its own thread: a self-deadlock)."""
    lock = RWLock()
    holding, done = threading.Event(), threading.Event()

    def reader() -> None:
        lock.acquire_read()
        holding.set()
        done.wait(WAIT * 3)
        lock.release_read()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    assert holding.wait(WAIT)
    seen: list[bool] = []
    armed = [True]

    def handler(signum: int, frame: Any) -> None:
        if not armed[0]:
            return
        with lock.read(timeout=5):
            seen.append(lock.held_by_current_thread())
        if len(seen) == 3:
            armed[0] = False
            raise _Interrupt

    stop = threading.Event()
    main_ident = threading.get_ident()

    def sender() -> None:
        while not stop.wait(0.01):
            signal.pthread_kill(main_ident, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, handler)
    s = threading.Thread(target=sender, daemon=True)
    s.start()
    try:
        with pytest.raises(_Interrupt):
            lock.acquire_write()  # waits: another thread reads
    finally:
        armed[0] = False
        stop.set()
        s.join(WAIT)
        signal.signal(signal.SIGINT, previous)
    assert seen == [True, True, True]
    assert not lock.held_by_current_thread()
    done.set()
    t.join(WAIT)
    assert not t.is_alive()
    fresh_thread_gets_both_sides(lock)


def _interrupter(go: list[bool]) -> threading.Thread:
    """A started thread that calls ``_thread.interrupt_main()`` once ``go`` is non-empty
    (a plain list: setting it runs no code an interrupt could break, unlike an Event)."""

    def body() -> None:
        while not go:
            time.sleep(0.0005)
        _thread.interrupt_main()

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


@posix_main_thread
@pytest.mark.parametrize("mode", ["write", "read"])
def test_keyboard_interrupt_from_interrupt_main_while_holding(mode: str) -> None:
    """``_thread.interrupt_main()`` while the main thread is inside ``with lock.write():``
    (or ``read()``): the KeyboardInterrupt leaves the block and the hold is released."""
    trig = _Trigger(KeyboardInterrupt)
    previous = signal.signal(signal.SIGINT, trig)
    lock = RWLock()
    hold = lock.write if mode == "write" else lock.read
    try:
        for _ in range(20):
            go: list[bool] = []
            t = _interrupter(go)
            with pytest.raises(KeyboardInterrupt):
                trig.armed = True
                with hold():
                    go.append(True)
                    for _ in range(10**8):  # until interrupted
                        pass
            t.join(WAIT)
            assert trig.armed is False
            assert not lock.held_by_current_thread()
    finally:
        trig.armed = False
        signal.signal(signal.SIGINT, previous)
    assert trig.raised == 20
    fresh_thread_gets_both_sides(lock)


@posix_main_thread
def test_keyboard_interrupt_from_interrupt_main_while_waiting() -> None:
    """``_thread.interrupt_main()`` while the main thread keeps retrying a timed
    acquire_write that a reader blocks: the KeyboardInterrupt leaves no waiting writer
    behind (new readers get in) and nothing held."""
    trig = _Trigger(KeyboardInterrupt)
    previous = signal.signal(signal.SIGINT, trig)
    lock = RWLock()
    holding, done = threading.Event(), threading.Event()

    def reader() -> None:
        lock.acquire_read()
        holding.set()
        done.wait(WAIT * 3)
        lock.release_read()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    assert holding.wait(WAIT)
    try:
        for _ in range(20):
            go: list[bool] = []
            interrupter = _interrupter(go)
            with pytest.raises(KeyboardInterrupt):
                trig.armed = True
                go.append(True)
                for _ in range(10**6):  # until interrupted
                    assert lock.acquire_write(timeout=0.001) is False
            interrupter.join(WAIT)
            assert not lock.held_by_current_thread()
            # No waiting writer left behind: a new reader is admitted at once.
            assert run_in_thread(lambda: (lock.acquire_read(0), lock.release_read())[0]) is True
    finally:
        trig.armed = False
        signal.signal(signal.SIGINT, previous)
        done.set()
        t.join(WAIT)
    assert not t.is_alive()
    assert trig.raised == 20
    fresh_thread_gets_both_sides(lock)


# ------------------------------------------------------- garbage-collector re-entry


@pytest.fixture
def gc_often() -> Iterator[None]:
    """Collections at (nearly) every allocation of a tracked object on the GIL build; every
    100 on the free-threaded build (where each collection stops every thread, and where a
    zero second threshold turns off the scaling that would make collections rare)."""
    old = gc.get_threshold()
    if FREE_THREADED:
        gc.set_threshold(100, 0)
    else:
        gc.set_threshold(1)
    gc.enable()
    try:
        yield
    finally:
        gc.set_threshold(*old)


class _Cycle:
    """Garbage only the cyclic collector frees (it refers to itself)."""

    __slots__ = ("__weakref__", "me")

    def __init__(self) -> None:
        self.me = self


class _DelCycle:
    """A cycle whose ``__del__`` runs ``on_del(key)``."""

    def __init__(self, on_del: Callable[[Any], None], key: Any) -> None:
        self.me = self
        self.on_del = on_del
        self.key = key

    def __del__(self) -> None:
        self.on_del(self.key)


@pytest.mark.parametrize("how", ["weakref.finalize", "__del__"])
def test_gc_finalizers_using_the_map_never_hang(gc_often: None, how: str) -> None:
    """Threads use an RWLockMap (reads, writes, iteration: all allocate) while dropping
    cycles whose finalizer pops a key from the same map. A collection can start on any
    thread at any allocation, including inside the map's lock handling, and runs the
    finalizer there. Each finalizer must either pop its key or, when its thread is inside
    one of the map's operations (a nested write), get RecursiveUpdateError and change
    nothing; no thread may hang (the old lock's internal mutex was not re-entrant)."""
    m: RWLockMap[Any, int] = RWLockMap()
    outcomes: list[tuple[Any, str]] = []  # list.append: atomic, takes no lock of ours

    def finalizer(key: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            # The main thread is the test's watchdog: it must never block (with the old
            # lock, a finalizer here waited forever for a mutex a stuck worker held).
            outcomes.append((key, "left"))
            return
        try:
            m.pop(key)
            result = "popped"
        except RecursiveUpdateError:
            result = "refused"
        outcomes.append((key, result))

    n_threads, rounds = 4, 300 if not FREE_THREADED else 200

    def worker(w: int) -> None:
        scratch = ("scratch", w)
        for i in range(rounds):
            key = (w, i)
            m[key] = i
            if how == "weakref.finalize":
                c = _Cycle()
                weakref.finalize(c, finalizer, key)
                del c
            else:
                _DelCycle(finalizer, key)
            # The cycle is garbage now: the next collection runs its finalizer. The next
            # allocation of a tracked object is inside this store's lock handling (the
            # key is built already), so that is where the collection starts.
            m[scratch] = i
            # More operations that allocate, so collections also start inside them.
            _ = m.get(key)
            _ = sum(1 for _ in m.items())
            _ = m.snapshot()

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(n_threads)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + WAIT * 3
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a thread hangs in the map's lock"
    gc.collect()
    gc.collect()
    expected = {(w, i) for w in range(n_threads) for i in range(rounds)}
    keys = [k for k, _ in outcomes]
    assert len(keys) == len(expected) and set(keys) == expected  # each ran exactly once
    popped = {k for k, r in outcomes if r == "popped"}
    kept = {k for k, r in outcomes if r != "popped"}  # refused (nested write) or left
    remaining = {k for k in m if k[0] != "scratch"}
    assert remaining == kept  # a refused pop changed nothing
    assert not (remaining & popped)
    # Collections did run finalizers on the workers (a worker inside the map's write gets
    # "refused"). Only the GIL build can be made to collect at a chosen allocation: the
    # free-threaded collector's threshold is a heap-growth heuristic, so in a long run it
    # may collect only in the gc.collect() above.
    if not FREE_THREADED:
        assert any(r != "left" for _, r in outcomes)


def test_gc_finalizer_reading_the_map_inside_its_own_operations(gc_often: None) -> None:
    """A finalizer that only reads the map (nested reads are allowed) succeeds even when
    the collection starts while its thread holds the map's lock."""
    m: RWLockMap[int, int] = RWLockMap({i: i for i in range(50)})
    seen: list[tuple[int, int | None]] = []

    def finalizer(key: int) -> None:
        if threading.current_thread() is threading.main_thread():
            seen.append((key, key))  # the watchdog thread never blocks (see above)
            return
        seen.append((key, m.get(key)))

    rounds = 2000

    def worker() -> None:
        for i in range(rounds):
            c = _Cycle()
            weakref.finalize(c, finalizer, i % 50)
            del c
            m[i % 50] = i % 50
            _ = list(m.items())

    run_in_thread(worker, WAIT * 3)
    gc.collect()
    assert len(seen) == rounds
    assert all(value == key for key, value in seen)  # every key is always present


# ------------------------------------------------------------- dead threads


def _same_ident_thread(dead_ident: int, probe: Callable[[], Any]) -> Any:
    """Run ``probe`` in a new thread that got ``dead_ident`` (the OS recycles thread
    identifiers: usually the very next thread gets it)."""
    for _ in range(200):

        def attempt() -> tuple[bool, Any]:
            if threading.get_ident() != dead_ident:
                return False, None
            return True, probe()

        reused, result = run_in_thread(attempt)
        if reused:
            return result
    pytest.skip("this platform did not reuse the dead thread's identifier")


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except RuntimeError:
        return "RuntimeError"


@pytest.mark.parametrize("mode", ["read", "write"])
def test_hold_of_a_dead_thread_never_passes_to_a_thread_reusing_its_ident(mode: str) -> None:
    lock = RWLock()

    def leak() -> int:
        assert (lock.acquire_read if mode == "read" else lock.acquire_write)()
        return threading.get_ident()  # ends holding the lock

    dead_ident = run_in_thread(leak)

    def probe() -> dict[str, Any]:
        return {
            "held": lock.held_by_current_thread(),
            "write held": lock.write_held_by_current_thread(),
            # Not ours: releasing must fail, not free the dead thread's hold.
            "release": _outcome(lock.release_read if mode == "read" else lock.release_write),
            # A dead reader still excludes writers (no upgrade error: we hold nothing);
            # a dead writer still excludes readers (we are not the writer).
            "other side": _outcome(
                lambda: (lock.acquire_write if mode == "read" else lock.acquire_read)(0.01)
            ),
        }

    assert _same_ident_thread(dead_ident, probe) == {
        "held": False,
        "write held": False,
        "release": "RuntimeError",
        "other side": False,
    }
    # The leaked hold stays taken, as a threading.Lock's would.
    assert run_in_thread(lambda: lock.acquire_write(timeout=0)) is False
    if mode == "read":
        assert run_in_thread(lambda: (lock.acquire_read(0), lock.release_read())[0]) is True
    else:
        assert run_in_thread(lambda: lock.acquire_read(timeout=0)) is False


# --------------------------------------------------------------------- fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads running
def test_fork_child_forgets_other_threads_holds_and_keeps_its_own() -> None:
    lock, mine = RWLock(), RWLock()
    holding, done = threading.Event(), threading.Event()

    def writer() -> None:
        lock.acquire_write()
        holding.set()
        done.wait(WAIT * 3)
        lock.release_write()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    assert holding.wait(WAIT)
    assert mine.acquire_read()
    pid = os.fork()
    if pid == 0:  # the child: only this thread exists
        code = 1
        try:
            # The other thread's write hold is gone; this thread's read hold is kept.
            ok = lock.acquire_write(timeout=5) is True and mine.held_by_current_thread()
            lock.release_write()
            mine.release_read()
            ok = ok and mine.acquire_write(timeout=5) is True
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    done.set()
    t.join(WAIT)
    mine.release_read()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# ------------------------------------------------- the state machine vs a model

_EXECUTORS = [ThreadPoolExecutor(max_workers=1) for _ in range(3)]  # 3 stable threads
_OPS = ["acquire_read", "acquire_write", "release_read", "release_write", "held", "write_held"]


class _Model:
    """What RWLock must answer to non-blocking calls (``timeout=0``), per thread."""

    def __init__(self) -> None:
        self.readers: dict[int, int] = {}
        self.writer: int | None = None

    def apply(self, t: int, op: str) -> Any:
        reads = self.readers.get(t, 0)
        if op == "acquire_read":
            if reads or self.writer in (t, None):
                self.readers[t] = reads + 1
                return True
            return False
        if op == "acquire_write":
            if self.writer == t or reads:
                return "RuntimeError"
            if self.writer is None and not self.readers:
                self.writer = t
                return True
            return False
        if op == "release_read":
            if not reads:
                return "RuntimeError"
            if reads == 1:
                del self.readers[t]
            else:
                self.readers[t] = reads - 1
            return None
        if op == "release_write":
            if self.writer != t:
                return "RuntimeError"
            self.writer = None
            return None
        if op == "held":
            return self.writer == t or bool(reads)
        return self.writer == t

    def repr(self) -> str:
        if self.writer is not None:
            return "<RWLock write-locked, 0 writers waiting>"
        if self.readers:
            return f"<RWLock {sum(self.readers.values())} read holds, 0 writers waiting>"
        return "<RWLock unlocked, 0 writers waiting>"


def _call(lock: RWLock, op: str) -> Any:
    fn = {
        "acquire_read": lambda: lock.acquire_read(0),
        "acquire_write": lambda: lock.acquire_write(timeout=0),
        "release_read": lock.release_read,
        "release_write": lock.release_write,
        "held": lock.held_by_current_thread,
        "write_held": lock.write_held_by_current_thread,
    }[op]
    try:
        return fn()
    except RuntimeError:
        return "RuntimeError"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(_OPS)), max_size=40))
def test_non_blocking_calls_from_three_threads_match_the_model(
    steps: list[tuple[int, str]],
) -> None:
    """Misuse errors, re-entrant reads (also under the thread's own write hold), a writer
    downgrading to a reader, and exclusion, from three threads, against a model."""
    lock, model = RWLock(), _Model()
    for t, op in steps:
        got = _EXECUTORS[t].submit(_call, lock, op).result(WAIT)
        assert got == model.apply(t, op), (t, op)
        assert repr(lock) == model.repr()
