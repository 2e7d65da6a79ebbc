"""The race detector's scenario corpus, through the public API.

Each scenario is a small program, a one-line reason under the happens-before rules of
``docs/race.md`` and the expected outcome: a race of kind X on key Y (``None`` for the
shape), or no race.
Threads are sequenced with raw ``_thread`` locks and raw ``_thread`` threads, which create
no happens-before edges, so every scenario is deterministic: the accesses of a racy
scenario always run in the same real-time order, yet are unordered under happens-before,
and the detector must report them whether or not they "collided".
"""

from __future__ import annotations

import _thread
import concurrent.futures as cf
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import safemap
from safemap import race

Expect = tuple[str, Any] | None


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[[], None]
    reason: str
    expect: Expect


CASES: list[Case] = []


def case(expect: Expect, reason: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(fn: Callable[[], None]) -> Callable[[], None]:
        CASES.append(Case(fn.__name__, fn, reason, expect))
        return fn

    return register


def race_on(kind: str, key: Any) -> Expect:
    return (kind, key)


NO_RACE: Expect = None


# --------------------------------------------------------------------- sequencing


class Raw:
    """Run ``fn`` on a raw thread (a logical thread unordered with everyone)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                self.error = exc
            finally:
                self._done.release()

        _thread.start_new_thread(run, ())

    def wait(self) -> None:
        self._done.acquire()
        self._done.release()
        if self.error is not None:
            raise self.error


def raw(fn: Callable[[], Any]) -> None:
    """Run ``fn`` on a raw thread to completion (no edge to or from the caller)."""
    Raw(fn).wait()


def gate() -> Any:
    """A closed raw lock: ``release()`` opens it, ``acquire()`` waits for that."""
    lock = _thread.allocate_lock()
    lock.acquire()
    return lock


def watched(**items: Any) -> Any:
    return race.watch(dict(items), name="m")


# ------------------------------------------------------------ map operation kinds


@case(race_on("read/write", "k"), "a read and a write of one key, unordered")
def read_then_write() -> None:
    d = watched(k=0)
    raw(lambda: d["k"])
    d["k"] = 1


@case(race_on("read/write", "k"), "a write then a read (get), unordered")
def write_then_get() -> None:
    d = watched(k=0)
    raw(lambda: d.__setitem__("k", 1))
    d.get("k")


@case(race_on("read/write", "k"), "`in` is a read of the key")
def contains_then_delete() -> None:
    d = watched(k=0)
    raw(lambda: "k" in d)
    del d["k"]


@case(race_on("write/write", "k"), "two writes of one key, unordered")
def write_write() -> None:
    d = watched(k=0)
    raw(lambda: d.__setitem__("k", 1))
    d["k"] = 2


@case(race_on("atomic/read", "k"), "setdefault is atomic; a plain read conflicts with it")
def setdefault_then_read() -> None:
    d = watched()
    raw(lambda: d.setdefault("k", 1))
    d.get("k")


@case(race_on("atomic/write", "k"), "pop is atomic; a plain write conflicts with it")
def pop_then_write() -> None:
    d = watched(k=0)
    raw(lambda: d.pop("k"))
    d["k"] = 1


@case(NO_RACE, "atomic/atomic does not conflict (setdefault then pop)")
def setdefault_then_pop() -> None:
    d = watched()
    raw(lambda: d.setdefault("k", 1))
    d.pop("k")


@case(race_on("iteration/write", None), "iterating while another thread adds a key")
def iteration_then_insert() -> None:
    d = watched(a=1)
    raw(lambda: list(d))
    d["new"] = 1


@case(race_on("iteration/write", None), "values() is an iteration span; a delete changes the shape")
def values_then_delete_other_key() -> None:
    d = race.watch({"a": 1}, name="m")
    raw(lambda: list(d.values()))
    d.setdefault("b", 2)  # atomic insert: a shape change (no conflict on key "b")


@case(race_on("observation/write", None), "len observes the shape; an insert changes it")
def len_then_insert() -> None:
    d = watched(a=1)
    raw(lambda: len(d))
    d["new"] = 1


@case(race_on("observation/write", None), "copy() observes the shape")
def copy_then_insert() -> None:
    d = watched(a=1)
    raw(lambda: d.copy())
    d["new"] = 1


@case(NO_RACE, "change/change does not conflict: two inserts of different keys")
def insert_insert_different_keys() -> None:
    d = watched()
    raw(lambda: d.__setitem__("a", 1))
    d["b"] = 1


@case(NO_RACE, "accesses to different keys never conflict")
def different_keys() -> None:
    d = watched(a=0, b=0)
    raw(lambda: d.__setitem__("a", 1))
    d.get("b")


@case(NO_RACE, "read/read never conflicts")
def read_read() -> None:
    d = watched(k=0)
    raw(lambda: d["k"])
    d.get("k")


@case(race_on("read/write", "x"), "an absent key is still accessed")
def absent_key_read_then_write() -> None:
    d = watched()
    raw(lambda: d.get("x"))
    d["x"] = 1


@case(race_on("observation/write", None), "an empty map's len still observes the shape")
def empty_map_len_then_insert() -> None:
    d = watched()
    raw(lambda: len(d))
    d["k"] = 1


@case(race_on("iteration/write", None), "iterating an empty map is still a span")
def empty_map_iteration_then_insert() -> None:
    d = watched()
    raw(lambda: list(d))
    d["k"] = 1


@case(race_on("read/write", "k"), "clear writes every key")
def clear_then_read() -> None:
    d = watched(k=0)
    raw(d.clear)
    d.get("k")


@case(race_on("read/write", "k"), "update writes each of its keys")
def update_then_read() -> None:
    d = watched(k=0)
    raw(lambda: d.update(k=1))
    d["k"]


@case(race_on("atomic/read", "k"), "popitem is atomic on the key it removes")
def popitem_then_read() -> None:
    d = watched(k=0)
    raw(d.popitem)
    d.get("k")


@case(NO_RACE, "one thread alone never races")
def single_thread() -> None:
    d = watched()
    for i in range(10):
        d[i] = i
        d.get(i)
        len(d)
    d.clear()


# --------------------------------------------------------------- threading.Lock/RLock


@case(NO_RACE, "Lock release -> later acquire orders the writes")
def lock_protected() -> None:
    d = watched(k=0)
    lock = threading.Lock()

    def a() -> None:
        with lock:
            d["k"] = 1

    raw(a)
    with lock:
        d["k"] = 2


@case(race_on("write/write", "k"), "the second write is outside the lock")
def lock_near_miss() -> None:
    d = watched(k=0)
    lock = threading.Lock()

    def a() -> None:
        with lock:
            d["k"] = 1

    raw(a)
    d["k"] = 2
    with lock:
        pass


@case(NO_RACE, "Lock.acquire(timeout=) that succeeds is an acquire")
def lock_acquire_timeout() -> None:
    d = watched(k=0)
    lock = threading.Lock()

    def a() -> None:
        lock.acquire()
        d["k"] = 1
        lock.release()

    raw(a)
    assert lock.acquire(timeout=5)
    d["k"] = 2
    lock.release()


@case(NO_RACE, "RLock, re-entered, orders through its outermost release")
def rlock_protected() -> None:
    d = watched(k=0)
    lock = threading.RLock()

    def a() -> None:
        with lock, lock:
            d["k"] = 1

    raw(a)
    with lock:
        d["k"] = 2


@case(race_on("read/write", "k"), "two different RLocks do not order each other")
def rlock_near_miss_different_locks() -> None:
    d = watched(k=0)
    l1, l2 = threading.RLock(), threading.RLock()

    def a() -> None:
        with l1:
            d["k"] = 1

    raw(a)
    with l2:
        d.get("k")


# ------------------------------------------------------------------------ Condition


@case(NO_RACE, "notify -> the woken wait (and the condition's lock)")
def condition_protected() -> None:
    d = watched(k=0)
    cond = threading.Condition()
    waiting = gate()

    def producer() -> None:
        waiting.acquire()
        with cond:
            d["k"] = 1
            cond.notify()

    with cond:
        t = Raw(producer)
        waiting.release()
        cond.wait_for(lambda: d["k"] == 1, timeout=30)
    d["k"]
    t.wait()


@case(race_on("read/write", "k"), "reading before waiting on the condition")
def condition_near_miss() -> None:
    d = watched(k=0)
    cond = threading.Condition()
    wrote = gate()

    def producer() -> None:
        d["k"] = 1
        wrote.release()
        with cond:
            cond.notify()

    t = Raw(producer)
    wrote.acquire()
    d.get("k")
    t.wait()


# ---------------------------------------------------------------------- Semaphores


@case(NO_RACE, "Semaphore release -> acquire")
def semaphore_protected() -> None:
    d = watched(k=0)
    sem = threading.Semaphore(0)

    def a() -> None:
        d["k"] = 1
        sem.release()

    raw(a)
    sem.acquire()
    d["k"]


@case(race_on("read/write", "k"), "the write is after the release")
def semaphore_near_miss() -> None:
    d = watched(k=0)
    sem = threading.Semaphore(0)

    def a() -> None:
        sem.release()
        d["k"] = 1

    raw(a)
    sem.acquire()
    d["k"]


@case(NO_RACE, "BoundedSemaphore release -> acquire")
def bounded_semaphore_protected() -> None:
    d = watched(k=0)
    sem = threading.BoundedSemaphore(1)
    sem.acquire()

    def a() -> None:
        d["k"] = 1
        sem.release()

    raw(a)
    with sem:
        d["k"] = 2


@case(race_on("write/write", "k"), "a failed non-blocking acquire orders nothing")
def bounded_semaphore_near_miss() -> None:
    d = watched(k=0)
    sem = threading.BoundedSemaphore(1)
    held = gate()
    done = gate()

    def a() -> None:
        with sem:
            d["k"] = 1
            held.release()
            done.acquire()

    t = Raw(a)
    held.acquire()
    assert not sem.acquire(blocking=False)
    d["k"] = 2
    done.release()
    t.wait()


# --------------------------------------------------------------------------- Event


@case(NO_RACE, "Event.set -> wait() returning True")
def event_protected() -> None:
    d = watched(k=0)
    ev = threading.Event()

    def a() -> None:
        d["k"] = 1
        ev.set()

    t = Raw(a)
    assert ev.wait(30)
    d["k"]
    t.wait()


@case(NO_RACE, "Event.set -> is_set() returning True")
def event_is_set_protected() -> None:
    d = watched(k=0)
    ev = threading.Event()

    def a() -> None:
        d["k"] = 1
        ev.set()

    raw(a)
    assert ev.is_set()
    d["k"] = 2


@case(race_on("read/write", "k"), "is_set() returned False: no edge")
def event_near_miss() -> None:
    d = watched(k=0)
    ev = threading.Event()
    wrote, read = gate(), gate()

    def a() -> None:
        d["k"] = 1
        wrote.release()
        read.acquire()
        ev.set()

    t = Raw(a)
    wrote.acquire()
    assert not ev.is_set()
    d.get("k")
    read.release()
    t.wait()


# ------------------------------------------------------------------------- Barrier


@case(NO_RACE, "everything before any party's wait -> after every party's wait")
def barrier_protected() -> None:
    d = watched(a=0, b=0)
    b = threading.Barrier(2)

    def party() -> None:
        d["a"] = 1
        b.wait(30)
        d["b"]

    t = Raw(party)
    d["b"] = 1
    b.wait(30)
    d["a"]
    t.wait()


@case(race_on("read/write", "a"), "the write is after the barrier: next generation's business")
def barrier_near_miss() -> None:
    d = watched(a=0)
    b = threading.Barrier(2)
    wrote = gate()

    def party() -> None:
        b.wait(30)
        d["a"] = 1
        wrote.release()

    t = Raw(party)
    b.wait(30)
    wrote.acquire()
    d["a"]
    t.wait()


# ---------------------------------------------------------------- Thread and Timer


@case(NO_RACE, "Thread.start: the parent's past -> the child")
def thread_start_protected() -> None:
    d = watched(k=0)
    d["k"] = 1
    t = threading.Thread(target=lambda: d["k"])
    t.start()
    t.join()


@case(race_on("read/write", "k"), "the parent writes after start")
def thread_start_near_miss() -> None:
    d = watched(k=0)
    wrote = gate()

    def child() -> None:
        wrote.acquire()
        d["k"]

    t = threading.Thread(target=child)
    t.start()
    d["k"] = 1
    wrote.release()
    t.join()


@case(NO_RACE, "thread end -> join() returning")
def thread_join_protected() -> None:
    d = watched(k=0)
    t = threading.Thread(target=lambda: d.__setitem__("k", 1))
    t.start()
    t.join()
    d["k"]


@case(race_on("read/write", "k"), "reading before join")
def thread_join_near_miss() -> None:
    d = watched(k=0)
    wrote, read = gate(), gate()

    def child() -> None:
        d["k"] = 1
        wrote.release()
        read.acquire()

    t = threading.Thread(target=child)
    t.start()
    wrote.acquire()
    d["k"]
    read.release()
    t.join()


@case(NO_RACE, "thread end -> is_alive() returning False")
def thread_is_alive_protected() -> None:
    d = watched(k=0)
    t = threading.Thread(target=lambda: d.__setitem__("k", 1))
    t.start()
    while t.is_alive():
        _thread.allocate_lock().acquire(True, 0.001)
    d["k"]


@case(NO_RACE, "a Timer: start -> callback -> join")
def timer_protected() -> None:
    d = watched(k=0)
    d["k"] = 1
    t = threading.Timer(0.0, lambda: d.__setitem__("k", d["k"] + 1))
    t.start()
    t.join()
    d["k"]


@case(race_on("read/write", "k"), "the Timer callback's write is read without join")
def timer_near_miss() -> None:
    d = watched(k=0)
    wrote = gate()

    def callback() -> None:
        d["k"] = 1
        wrote.release()

    t = threading.Timer(0.0, callback)
    t.start()
    wrote.acquire()
    d["k"]
    t.join()


# --------------------------------------------------------------------------- queue


@case(NO_RACE, "Queue: a put -> the get that returns its item")
def queue_protected() -> None:
    d = watched(k=0)
    q = queue.Queue()

    def a() -> None:
        d["k"] = 1
        q.put("item")

    raw(a)
    assert q.get() == "item"
    d["k"]


@case(race_on("read/write", "k"), "wrong sender: the item came from another thread")
def queue_wrong_sender() -> None:
    d = watched(k=0)
    q = queue.Queue()
    raw(lambda: d.__setitem__("k", 1))
    raw(lambda: q.put("item"))
    q.get()
    d["k"]


@case(race_on("read/write", "k"), "two puts do not order each other (queue's own mutex)")
def queue_two_puts() -> None:
    d = watched(k=0)
    q = queue.Queue()

    def a() -> None:
        d["k"] = 1
        q.put(1)

    raw(a)
    q.put(2)
    d["k"]


@case(race_on("read/write", "a"), "per item: the first get returns b's item, not a's")
def lifo_queue_per_item() -> None:
    d = watched(a=0, b=0)
    q = queue.LifoQueue()

    def put(key: str) -> Callable[[], None]:
        def run() -> None:
            d[key] = 1
            q.put(key)

        return run

    raw(put("a"))
    raw(put("b"))
    assert q.get() == "b"
    d["b"]
    d["a"]


@case(NO_RACE, "PriorityQueue: each get is ordered after the put of its item")
def priority_queue_protected() -> None:
    d = watched(a=0, b=0)
    q = queue.PriorityQueue()

    def put(prio: int, key: str) -> Callable[[], None]:
        def run() -> None:
            d[key] = 1
            q.put((prio, key))

        return run

    raw(put(2, "b"))
    raw(put(1, "a"))
    assert q.get() == (1, "a")
    d["a"]
    assert q.get() == (2, "b")
    d["b"]


@case(race_on("read/write", "b"), "PriorityQueue: the get of a's item says nothing of b")
def priority_queue_near_miss() -> None:
    d = watched(a=0, b=0)
    q = queue.PriorityQueue()

    def put(prio: int, key: str) -> Callable[[], None]:
        def run() -> None:
            d[key] = 1
            q.put((prio, key))

        return run

    raw(put(2, "b"))
    raw(put(1, "a"))
    q.get()
    d["b"]


@case(NO_RACE, "SimpleQueue: a put -> the get of its item")
def simple_queue_protected() -> None:
    d = watched(k=0)
    q = queue.SimpleQueue()

    def a() -> None:
        d["k"] = 1
        q.put(None)

    raw(a)
    q.get()
    d["k"]


@case(race_on("read/write", "k"), "SimpleQueue: wrong sender")
def simple_queue_wrong_sender() -> None:
    d = watched(k=0)
    q = queue.SimpleQueue()
    raw(lambda: d.__setitem__("k", 1))
    raw(lambda: q.put(None))
    q.get()
    d["k"]


@case(NO_RACE, "a Queue(maxsize=1) used as a mutex: get k -> put k+1")
def bounded_queue_as_mutex() -> None:
    d = watched(k=0)
    mutex = queue.Queue(maxsize=1)

    def critical(value: int) -> None:
        mutex.put(None)
        d["k"] = value
        mutex.get()

    raw(lambda: critical(1))
    critical(2)


@case(race_on("write/write", "k"), "maxsize=2 admits two holders: not a mutex")
def bounded_queue_too_big() -> None:
    d = watched(k=0)
    mutex = queue.Queue(maxsize=2)

    def critical(value: int) -> None:
        mutex.put(None)
        d["k"] = value
        mutex.get()

    raw(lambda: critical(1))
    critical(2)


@case(NO_RACE, "a bounded queue used as a semaphore (2 permits, 3 users)")
def bounded_queue_as_semaphore() -> None:
    d = watched(k=0)
    permits = queue.Queue(maxsize=2)
    permits.put(None)  # one permit taken for good: effectively a mutex for the others

    def critical(value: int) -> None:
        permits.put(None)
        d["k"] = value
        permits.get()

    raw(lambda: critical(1))
    raw(lambda: critical(2))
    critical(3)


@case(NO_RACE, "task_done -> join returning")
def queue_task_done_join() -> None:
    d = watched(k=0)
    q = queue.Queue()
    q.put("job")

    def worker() -> None:
        q.get()
        d["k"] = 1
        q.task_done()

    raw(worker)
    q.join()
    d["k"]


@case(race_on("read/write", "k"), "empty() says nothing about the consumer's work")
def queue_empty_near_miss() -> None:
    d = watched(k=0)
    q = queue.Queue()
    q.put("job")
    wrote, read = gate(), gate()

    def worker() -> None:
        q.get()
        d["k"] = 1
        wrote.release()
        read.acquire()
        q.task_done()

    t = Raw(worker)
    wrote.acquire()
    assert q.empty()
    d["k"]
    read.release()
    t.wait()


# -------------------------------------------------------------- concurrent.futures


@case(NO_RACE, "submit -> the task; the task -> result()")
def executor_submit_result() -> None:
    d = watched(k=0)
    d["k"] = 1
    with cf.ThreadPoolExecutor(2) as pool:
        f = pool.submit(lambda: d.__setitem__("k", d["k"] + 1))
        f.result()
        d["k"]


@case(race_on("write/write", "k"), "worker reuse does not order two tasks")
def executor_worker_reuse() -> None:
    d = watched(k=0)
    with cf.ThreadPoolExecutor(1) as pool:
        first = pool.submit(lambda: d.__setitem__("k", 1))
        second = pool.submit(lambda: (first.done() or None, d.__setitem__("k", 2)))
        second.result()


@case(NO_RACE, "the second task waits for the first's result(): ordered")
def executor_tasks_chained_by_result() -> None:
    d = watched(k=0)
    with cf.ThreadPoolExecutor(2) as pool:
        first = pool.submit(lambda: d.__setitem__("k", 1))
        second = pool.submit(lambda: (first.result(), d.__setitem__("k", 2)))
        second.result()


@case(NO_RACE, "wait() and as_completed() observe the tasks they return")
def executor_wait_as_completed() -> None:
    d = watched(a=0, b=0)
    with cf.ThreadPoolExecutor(2) as pool:
        fa = pool.submit(lambda: d.__setitem__("a", 1))
        fb = pool.submit(lambda: d.__setitem__("b", 1))
        cf.wait([fa])
        d["a"]
        for _ in cf.as_completed([fb]):
            d["b"]


@case(NO_RACE, "a done callback observes the task; exception() too")
def executor_callback_exception() -> None:
    d = watched(a=0, b=0)
    got = gate()

    def boom() -> None:
        d["b"] = 1
        raise ValueError("x")

    with cf.ThreadPoolExecutor(2) as pool:
        fa = pool.submit(lambda: d.__setitem__("a", 1))
        fa.add_done_callback(lambda f: (d["a"], got.release()))
        got.acquire()
        fb = pool.submit(boom)
        assert isinstance(fb.exception(), ValueError)
        d["b"]


@case(NO_RACE, "shutdown(wait=True) -> after it, every task")
def executor_shutdown() -> None:
    d = watched(k=0)
    pool = cf.ThreadPoolExecutor(2)
    pool.submit(lambda: d.__setitem__("k", 1))
    pool.shutdown(wait=True)
    d["k"]


@case(race_on("read/write", "k"), "done() is not an observation edge")
def executor_done_near_miss() -> None:
    d = watched(k=0)
    pool = cf.ThreadPoolExecutor(1)
    f = pool.submit(lambda: d.__setitem__("k", 1))
    while not f.done():
        _thread.allocate_lock().acquire(True, 0.001)
    d["k"]
    pool.shutdown(wait=True)


# ------------------------------------------------------------------- safemap maps


def _publish_through(m: Any, read_key: str) -> None:
    d = watched(k=0)
    try:

        def publisher() -> None:
            d["k"] = 1
            m["ready"] = True

        raw(publisher)
        while not m.get(read_key, False):
            if read_key != "ready":
                break
        d["k"]
    finally:
        if hasattr(m, "close"):
            m.close()


@case(NO_RACE, "publishing through a ConcurrentMap key orders the reader")
def concurrent_map_publish() -> None:
    _publish_through(safemap.ConcurrentMap(), "ready")


@case(race_on("read/write", "k"), "ConcurrentMap: a different key publishes nothing")
def concurrent_map_other_key() -> None:
    _publish_through(safemap.ConcurrentMap(), "other")


@case(NO_RACE, "publishing through a SyncMap")
def sync_map_publish() -> None:
    _publish_through(safemap.SyncMap(), "ready")


@case(NO_RACE, "publishing through a LockedMap")
def locked_map_publish() -> None:
    _publish_through(safemap.LockedMap(), "ready")


@case(race_on("read/write", "k"), "LockedMap's internal lock orders nothing across keys")
def locked_map_other_key() -> None:
    _publish_through(safemap.LockedMap(), "other")


@case(NO_RACE, "publishing through an RWLockMap")
def rwlock_map_publish() -> None:
    _publish_through(safemap.RWLockMap(), "ready")


@case(race_on("read/write", "k"), "RWLockMap's internal RWLock orders nothing across keys")
def rwlock_map_other_key() -> None:
    _publish_through(safemap.RWLockMap(), "other")


@case(NO_RACE, "publishing through an ActorMap")
def actor_map_publish() -> None:
    _publish_through(safemap.ActorMap(), "ready")


@case(race_on("read/write", "k"), "ActorMap's queue orders nothing across keys")
def actor_map_other_key() -> None:
    _publish_through(safemap.ActorMap(), "other")


@case(NO_RACE, "a compute callback sees the key's past (ActorMap: on its owner thread)")
def actor_map_compute_callback() -> None:
    d = watched(k=0)
    with safemap.ActorMap() as m:

        def publisher() -> None:
            d["k"] = 1
            m["c"] = 1

        raw(publisher)
        m.compute("c", lambda key, old: d["k"] + old)
        d["k"] = 2


@case(NO_RACE, "clear() on a safemap map touches every key")
def concurrent_map_clear_publishes() -> None:
    d = watched(k=0)
    m = safemap.ConcurrentMap(ready=False)

    def a() -> None:
        d["k"] = 1
        m.clear()

    raw(a)
    assert "ready" not in m
    d["k"]


# -------------------------------------------------------------------------- RWLock


@case(NO_RACE, "RWLock: write release -> read acquire")
def rwlock_write_then_read() -> None:
    d = watched(k=0)
    rw = safemap.RWLock()

    def writer() -> None:
        with rw.write():
            d["k"] = 1

    raw(writer)
    with rw.read():
        d["k"]


@case(NO_RACE, "RWLock: read release -> write acquire")
def rwlock_read_then_write() -> None:
    d = watched(k=0)
    rw = safemap.RWLock()

    def reader() -> None:
        with rw.read():
            d["k"]

    raw(reader)
    with rw.write():
        d["k"] = 1


@case(race_on("read/write", "k"), "RWLock: readers are not ordered among themselves")
def rwlock_readers_unordered() -> None:
    d = watched(k=0)
    rw = safemap.RWLock()

    def bad_reader() -> None:
        with rw.read():
            d["k"] = 1  # a write under a read lock: a bug

    raw(bad_reader)
    with rw.read():
        d["k"]


# ------------------------------------------------------------------- miscellaneous


@case(race_on("read/write", "x"), "nested maps: the inner watched dict races on its key")
def nested_maps() -> None:
    inner = race.watch({"x": 0}, name="inner")
    outer = race.watch({"inner": inner}, name="outer")
    raw(lambda: outer["inner"].__setitem__("x", 1))
    outer["inner"]["x"]


@case(NO_RACE, "nested maps, with a lock around both levels")
def nested_maps_locked() -> None:
    inner = race.watch({"x": 0}, name="inner")
    outer = race.watch({"inner": inner}, name="outer")
    lock = threading.Lock()

    def a() -> None:
        with lock:
            outer["inner"]["x"] = 1

    raw(a)
    with lock:
        outer["inner"]["x"]


class _ReentrantKey:
    """A key whose ``__eq__`` reads the same map (from the same thread)."""

    def __init__(self, d: Any, tag: str) -> None:
        self.d = d
        self.tag = tag

    def __hash__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        self.d.get("plain")
        return isinstance(other, _ReentrantKey) and other.tag == self.tag


@case(NO_RACE, "re-entrant __eq__ reading the map in the same thread is no race")
def reentrant_eq() -> None:
    d = race.watch({"plain": 0}, name="m")
    k1, k2 = _ReentrantKey(d, "a"), _ReentrantKey(d, "b")
    d[k1] = 1
    d[k2] = 2
    d.get(_ReentrantKey(d, "a"))
    d.get(k2)


@case(race_on("read/write", "k"), "a logging call does not hide a race")
def logging_does_not_hide() -> None:
    d = watched(k=0)
    log = logging.getLogger("safemap.race.corpus")
    handler = logging.NullHandler()
    log.addHandler(handler)
    try:

        def a() -> None:
            d["k"] = 1
            log.warning("wrote")

        raw(a)
        log.warning("reading")
        d["k"]
    finally:
        log.removeHandler(handler)


@case(race_on("write/write", "k"), "a lock created before the detector started orders nothing")
def pre_enable_lock() -> None:
    d = watched(k=0)
    lock = _PRE_ENABLE_LOCK

    def a() -> None:
        with lock:
            d["k"] = 1

    raw(a)
    with lock:
        d["k"] = 2


_PRE_ENABLE_LOCK = _thread.allocate_lock()  # raw: never modelled, as a pre-enable lock


@case(NO_RACE, "a user Queue subclass defined while the detector runs is modelled")
def user_queue_subclass() -> None:
    class JobQueue(queue.Queue):  # type: ignore[type-arg]
        pass

    d = watched(k=0)
    q = JobQueue()

    def a() -> None:
        d["k"] = 1
        q.put("job")

    raw(a)
    q.get()
    d["k"]


# ------------------------------------------------------------------------------ run


@pytest.mark.parametrize("scenario", CASES, ids=[c.name for c in CASES])
def test_scenario(scenario: Case) -> None:
    with race.detect() as session:
        scenario.fn()
    reports = session.reports
    text = "\n".join(map(str, reports))
    if scenario.expect is None:
        assert not reports, f"{scenario.reason}: unexpected race\n{text}"
        return
    kind, key = scenario.expect
    found = {(r.kind, r.key) for r in reports}
    assert (kind, key) in found, f"{scenario.reason}: expected {kind} on {key!r}, got {found}"
    stray = [r for r in reports if r.key != key]
    assert not stray, f"{scenario.reason}: races on other locations\n{text}"


def test_corpus_size() -> None:
    races = [c for c in CASES if c.expect is not None]
    quiet = [c for c in CASES if c.expect is None]
    assert len(CASES) >= 60
    assert len(races) >= 25 and len(quiet) >= 25
    assert len({c.name for c in CASES}) == len(CASES)
