"""Happens-before edges of ``safemap.race._sync``, checked at the runtime level.

Every test sequences its threads with raw ``_thread`` locks and raw ``_thread`` threads,
which the detector never models, so the harness creates no edges: an epoch captured in one
thread is ordered before another thread's state only through the primitive under test.
"""

from __future__ import annotations

import _thread
import concurrent.futures as cf
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import safemap
from safemap.race import _runtime, _sync

Epoch = tuple[int, int]


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    was = _sync.installed()
    _sync.install()
    try:
        yield
    finally:
        if not was:
            _sync.uninstall()


def epoch() -> Epoch:
    return _runtime.current().epoch


def sees(e: Epoch) -> bool:
    """Whether the caller is ordered after the access named ``e``."""
    return _runtime.ordered(e, _runtime.current())


class Raw:
    """A raw thread running ``fn``; ``result()`` waits for it with a raw lock."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn()
            except BaseException as exc:
                self._error = exc
            finally:
                self._done.release()

        _thread.start_new_thread(run, ())

    def result(self) -> Any:
        self._done.acquire()
        self._done.release()
        if self._error is not None:
            raise self._error
        return self._value


def gate() -> Any:
    lock = _thread.allocate_lock()
    lock.acquire()
    return lock


# ------------------------------------------------------------------ install / uninstall


def test_uninstall_restores_everything_exactly() -> None:
    import concurrent.futures._base as base

    _sync.uninstall()
    names = {
        threading: (
            "Lock",
            "RLock",
            "Condition",
            "Semaphore",
            "BoundedSemaphore",
            "Event",
            "Barrier",
        ),
        queue: ("Queue", "LifoQueue", "PriorityQueue", "SimpleQueue"),
        cf: ("wait", "as_completed"),
        base: ("wait", "as_completed"),
    }
    classes = (
        threading.Thread,
        cf.ThreadPoolExecutor,
        cf.Future,
        safemap.RWLock,
        safemap.ConcurrentMap,
        safemap.SyncMap,
        safemap.LockedMap,
        safemap.RWLockMap,
        safemap.ActorMap,
        safemap.ConcurrentMapping,
    )

    def state() -> list[Any]:
        out: list[Any] = [(m, n, vars(m).get(n)) for m, ns in names.items() for n in ns]
        out += [(c, dict(vars(c))) for c in classes]
        return out

    before = state()
    _sync.install()
    _sync.install()  # idempotent
    assert threading.Lock is not before[0][2]
    assert "load" in vars(safemap.ConcurrentMap)  # the C method is shadowed by a wrapper
    _sync.uninstall()
    _sync.uninstall()
    assert state() == before
    assert not _sync.installed()
    _sync.install()


def test_internal_callers_get_original_objects() -> None:
    assert type(threading.Lock()) is not _thread.LockType  # user code: modelled
    q = queue.Queue()
    assert type(q.mutex) is _thread.LockType  # created inside queue.py: original
    assert type(threading.Event()._cond) is not threading.Condition.__mro__[0]
    locked = safemap.LockedMap()
    assert type(locked._lock).__module__ == "safemap.locks._rwlock"  # its own C lock: original
    rw = safemap.RWLockMap()
    assert rw._lock._race is None  # internal: not modelled
    assert safemap.RWLock()._race is not None  # a user's lock is modelled


def test_isinstance_accepts_models_and_originals() -> None:
    _sync.uninstall()
    old_event, old_queue, old_lock = threading.Event(), queue.Queue(), threading.Lock()
    _sync.install()
    assert isinstance(old_event, threading.Event)
    assert isinstance(threading.Event(), threading.Event)
    assert isinstance(old_queue, queue.Queue)
    assert isinstance(queue.LifoQueue(), queue.Queue)
    assert issubclass(queue.PriorityQueue, queue.Queue)
    assert isinstance(old_lock, threading.Lock)
    assert isinstance(threading.Lock(), threading.Lock)

    class MyQueue(queue.Queue):  # type: ignore[type-arg]
        pass

    assert not isinstance(queue.Queue(), MyQueue)
    assert isinstance(MyQueue(), queue.Queue)


def test_objects_created_before_install_create_no_edges() -> None:
    _sync.uninstall()
    lock = threading.Lock()
    _sync.install()

    def a() -> Epoch:
        with lock:
            return epoch()

    e = Raw(a).result()
    with lock:
        assert not sees(e)


# ------------------------------------------------------------------------ threading


def test_no_sync_no_edge() -> None:
    e = Raw(epoch).result()
    assert not sees(e)


@pytest.mark.parametrize("name", ["Lock", "RLock"])
def test_lock_release_orders_later_acquire(name: str) -> None:
    lock = getattr(threading, name)()
    assert type(lock).__module__ == "threading"

    def a() -> Epoch:
        lock.acquire()
        e = epoch()
        lock.release()
        return e

    e = Raw(a).result()
    assert not sees(e)
    assert lock.acquire(timeout=1)
    assert sees(e)
    lock.release()


def test_lock_failed_acquire_creates_no_edge() -> None:
    lock = threading.Lock()
    taken, release = gate(), gate()
    box: list[Epoch] = []

    def a() -> None:
        lock.acquire()
        box.append(epoch())
        taken.release()
        release.acquire()
        lock.release()

    t = Raw(a)
    taken.acquire()
    assert not lock.acquire(timeout=0.01)
    assert not lock.acquire(blocking=False)
    assert not sees(box[0])
    release.release()
    t.result()
    with lock:
        assert sees(box[0])


def test_condition_notify_orders_woken_wait_through_rlock() -> None:
    cond = threading.Condition()
    ready = gate()
    box: list[Epoch] = []

    def notifier() -> None:
        ready.acquire()  # the main thread is waiting (it holds no lock: wait released it)
        with cond:
            box.append(epoch())
            cond.notify()

    with cond:
        t = Raw(notifier)
        ready.release()
        assert cond.wait_for(lambda: bool(box), timeout=30)
        assert sees(box[0])
    t.result()


def test_condition_on_pre_install_lock_still_orders_notify_to_wait() -> None:
    _sync.uninstall()
    lock = threading.Lock()
    _sync.install()
    cond = threading.Condition(lock)
    box: list[Epoch] = []
    ready = gate()

    def notifier() -> None:
        ready.acquire()
        with cond:
            box.append(epoch())
            cond.notify_all()

    with cond:
        t = Raw(notifier)
        ready.release()
        while not box:
            assert cond.wait(30)
        assert sees(box[0])
    t.result()


@pytest.mark.parametrize("name", ["Semaphore", "BoundedSemaphore"])
def test_semaphore_release_orders_acquire(name: str) -> None:
    factory = getattr(threading, name)
    sem = factory(1)
    sem.acquire()

    def a() -> Epoch:
        e = epoch()
        sem.release()
        return e

    e = Raw(a).result()
    assert not sees(e)
    with sem:
        assert sees(e)
    assert not factory(0).acquire(timeout=0.01)


def test_event_set_orders_wait_and_is_set() -> None:
    ev = threading.Event()
    assert not ev.is_set()
    assert not ev.wait(0.01)

    def a() -> Epoch:
        e = epoch()
        ev.set()
        return e

    e = Raw(a).result()
    assert not sees(e)
    assert ev.is_set()
    assert sees(e)
    ev2 = threading.Event()

    def b() -> Epoch:
        e = epoch()
        ev2.set()
        return e

    e2 = Raw(b).result()
    assert ev2.wait(30)
    assert sees(e2)


def test_barrier_orders_everything_before_any_wait_after_every_wait() -> None:
    seen_by_action: list[bool] = []
    pre: list[Epoch] = []
    mid: list[Epoch] = []
    log_lock = _thread.allocate_lock()
    b = threading.Barrier(3, action=lambda: seen_by_action.append(all(map(sees, pre))))
    recorded = [gate(), gate()]

    def party(i: int) -> tuple[bool, bool]:
        with log_lock:
            pre.append(epoch())
        b.wait(30)
        first = all(map(sees, pre))
        with log_lock:
            mid.append(epoch())
        recorded[i].release()
        b.wait(30)
        return first, all(map(sees, mid))

    threads = [Raw(lambda: party(0)), Raw(lambda: party(1))]
    with log_lock:
        pre.append(epoch())
    b.wait(30)
    assert all(map(sees, pre))
    assert seen_by_action == [True]
    for g in recorded:
        g.acquire()
    # The others' accesses after the first wait are not ordered by the first generation.
    assert not any(map(sees, mid))
    with log_lock:
        mid.append(epoch())
    b.wait(30)
    assert all(map(sees, mid))
    assert [t.result() for t in threads] == [(True, True), (True, True)]


def test_barrier_broken_wait_creates_no_edge() -> None:
    b = threading.Barrier(2)
    box: list[Epoch] = []
    entered = gate()

    def a() -> None:
        box.append(epoch())
        entered.release()
        with pytest.raises(threading.BrokenBarrierError):
            b.wait(30)

    t = Raw(a)
    entered.acquire()
    while b.n_waiting == 0:
        _thread.allocate_lock().acquire(True, 0.001)
    b.abort()
    t.result()
    assert not sees(box[0])


def test_thread_start_and_join() -> None:
    before = epoch()
    _runtime.release(_runtime.SyncVar())  # advance our clock past ``before``
    box: list[Any] = []

    def child() -> None:
        box.append(sees(before))
        box.append(epoch())

    t = threading.Thread(target=child)
    t.start()
    t.join()
    assert box[0] is True
    assert sees(box[1])
    assert box[1][0] != before[0]


def test_thread_join_timeout_and_is_alive() -> None:
    hold = gate()
    box: list[Epoch] = []

    def child() -> None:
        box.append(epoch())
        hold.acquire()

    t = threading.Thread(target=child)
    t.start()
    t.join(0.01)
    assert t.is_alive()
    assert box and not sees(box[0])
    hold.release()
    while t.is_alive():
        _thread.allocate_lock().acquire(True, 0.001)
    assert sees(box[0])
    t.join()


def test_thread_child_is_not_ordered_before_parent_future() -> None:
    box: list[Epoch] = []
    done = gate()

    def child() -> None:
        box.append(epoch())
        done.release()
        hold.acquire()

    hold = gate()
    t = threading.Thread(target=child)
    t.start()
    done.acquire()
    assert not sees(box[0])
    hold.release()
    t.join()


def test_timer_callback_is_its_own_logical_thread() -> None:
    before = epoch()
    _runtime.release(_runtime.SyncVar())
    box: list[Any] = []
    t = threading.Timer(0.0, lambda: box.extend([sees(before), epoch()]))
    t.start()
    t.join()
    assert box[0] is True
    assert box[1][0] != before[0]
    assert sees(box[1])


# ----------------------------------------------------------------------------- queue


@pytest.mark.parametrize("kind", ["Queue", "LifoQueue", "PriorityQueue", "SimpleQueue"])
def test_queue_put_orders_only_the_get_of_that_item(kind: str) -> None:
    q = getattr(queue, kind)()
    first = Raw(lambda: (epoch(), q.put((1, "a")))[0]).result()
    second = Raw(lambda: (epoch(), q.put((2, "b")))[0]).result()
    item = q.get()
    # FIFO and priority: (1, "a") comes first; LIFO: (2, "b").
    if kind == "LifoQueue":
        assert item == (2, "b")
        assert sees(second) and not sees(first)
    else:
        assert item == (1, "a")
        assert sees(first) and not sees(second)
    q.get()
    assert sees(first) and sees(second)


def test_two_puts_do_not_order_each_other() -> None:
    q = queue.Queue()
    e = Raw(lambda: (epoch(), q.put(1))[0]).result()
    assert Raw(lambda: (q.put(2), sees(e))[1]).result() is False
    assert not sees(e)


def test_bounded_queue_kth_get_orders_k_plus_maxsize_put() -> None:
    q = queue.Queue(maxsize=2)
    q.put("a")
    q.put("b")  # puts 1 and 2 complete without any get
    e_get = Raw(lambda: (epoch(), q.get())[0]).result()  # get 1
    # put 3 needed get 1 to make room: ordered after it.
    assert Raw(lambda: (q.put("c"), sees(e_get))[1]).result() is True
    e_get2 = Raw(lambda: (epoch(), q.get())[0]).result()  # get 2 -> put 4
    assert Raw(lambda: (q.put("d"), sees(e_get2))[1]).result() is True


def test_bounded_queue_as_mutex() -> None:
    mutex = queue.Queue(maxsize=1)

    def critical() -> Epoch:
        mutex.put(None)  # acquire
        e = epoch()
        mutex.get()  # release
        return e

    e = Raw(critical).result()
    mutex.put(None)
    assert sees(e)
    mutex.get()


def test_unbounded_puts_do_not_wait_for_gets() -> None:
    q = queue.Queue()
    q.put(1)
    e = Raw(lambda: (epoch(), q.get())[0]).result()
    assert Raw(lambda: (q.put(2), sees(e))[1]).result() is False


def test_task_done_orders_join() -> None:
    q = queue.Queue()
    q.put(1)

    def worker() -> Epoch:
        q.get()
        e = epoch()
        q.task_done()
        return e

    e = Raw(worker).result()
    assert not sees(e)
    q.join()
    assert sees(e)


def test_user_subclass_with_own_storage_matches_by_identity() -> None:
    class Stack(queue.Queue):  # type: ignore[type-arg]
        def _init(self, maxsize: int) -> None:
            self.queue: list[Any] = []  # type: ignore[assignment]

        def _put(self, item: Any) -> None:
            self.queue.append(item)

        def _get(self) -> Any:
            return self.queue.pop()

    q = Stack()
    a, b = object(), object()
    ea = Raw(lambda: (epoch(), q.put(a))[0]).result()
    eb = Raw(lambda: (epoch(), q.put(b))[0]).result()
    assert q.get() is b
    assert sees(eb) and not sees(ea)


# ------------------------------------------------------------------ concurrent.futures


def test_submit_task_result_and_worker_reuse() -> None:
    before = epoch()
    _runtime.release(_runtime.SyncVar())
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        box: list[Epoch] = []
        f1 = pool.submit(lambda: (sees(before), box.append(epoch()), _thread.get_ident()))
        # Same worker thread, next task (submitted before observing the first): not
        # ordered after the first task.
        f2 = pool.submit(lambda: (sees(box[0]), epoch(), _thread.get_ident()))
        saw, _, worker1 = f1.result()
        assert saw and sees(box[0])
        saw1, e2, worker2 = f2.result()
        assert worker1 == worker2
        assert saw1 is False
        assert e2[0] != box[0][0]


def test_task_end_orders_exception_wait_as_completed_callbacks_and_shutdown() -> None:
    start = threading.Event()
    _sync.uninstall()
    hold = threading.Event()  # created uninstalled: no edges
    _sync.install()

    def task() -> Epoch:
        hold.wait()
        return epoch()

    pool = cf.ThreadPoolExecutor(max_workers=3)
    futures = [pool.submit(task) for _ in range(3)]
    hold.set()
    done, _ = cf.wait(futures[:1])
    assert sees(done.pop().result())
    for f in cf.as_completed(futures[1:2]):
        assert sees(f.result())
    callback: list[bool] = []
    futures[2].add_done_callback(lambda f: callback.append(sees(f.result())))
    pool.shutdown(wait=True)
    assert callback == [True]
    assert all(sees(f.result()) for f in futures)
    assert not start.is_set()

    def boom() -> None:
        raise ValueError(epoch())

    with cf.ThreadPoolExecutor(1) as pool2:
        exc = pool2.submit(boom).exception()
        assert isinstance(exc, ValueError) and sees(exc.args[0])
        with pytest.raises(ValueError) as info:
            pool2.submit(boom).result()
        assert sees(info.value.args[0])


def test_shutdown_wait_orders_unobserved_tasks() -> None:
    pool = cf.ThreadPoolExecutor(2)
    box: list[Epoch] = []
    pool.submit(lambda: box.append(epoch()))
    pool.shutdown(wait=True)
    assert sees(box[0])


# --------------------------------------------------------------- stdlib internal locks


def test_logging_creates_no_edges() -> None:
    log = logging.getLogger("safemap.race.test")
    handler = logging.NullHandler()
    log.addHandler(handler)
    try:
        e = Raw(lambda: (epoch(), log.warning("x"))[0]).result()
        log.warning("y")
        assert not sees(e)
    finally:
        log.removeHandler(handler)


# ----------------------------------------------------------------------- safemap maps


@pytest.mark.parametrize(
    "factory",
    [
        safemap.ConcurrentMap,
        safemap.SyncMap,
        safemap.LockedMap,
        safemap.RWLockMap,
        safemap.ActorMap,
    ],
)
def test_map_key_publishes_and_other_keys_do_not(factory: Callable[[], Any]) -> None:
    m = factory()
    try:

        def publisher() -> Epoch:
            e = epoch()
            m["k"] = 1
            return e

        e = Raw(publisher).result()
        m["other"] = 2
        assert not sees(e)
        _ = m.get("other")
        assert not sees(e)
        assert m["k"] == 1
        assert sees(e)
        # compute callbacks see the key's past and publish their own.
        e2 = Raw(lambda: (epoch(), m.store("c", 0))[0]).result()
        inside: list[Any] = []
        m.compute("c", lambda k, old: inside.append((sees(e2), epoch())) or 1)
        assert inside[0][0] is True
        e3 = inside[0][1]
        assert Raw(lambda: (m.get("c"), sees(e3))[1]).result() is True
    finally:
        if hasattr(m, "close"):
            m.close()


def test_map_whole_operations_touch_every_key() -> None:
    m = safemap.ConcurrentMap()
    e = Raw(lambda: (epoch(), m.clear())[0]).result()
    assert not sees(e)
    assert "never-seen" not in m
    assert sees(e)
    e2 = Raw(lambda: (epoch(), m.store("a", 1))[0]).result()
    assert len(m) == 1 and sees(e2)
    e3 = Raw(lambda: (epoch(), m.store("b", 1))[0]).result()
    assert sorted(m) == ["a", "b"] and sees(e3)
    e4 = Raw(lambda: (epoch(), m.transaction(lambda v: v.update(c=3)))[0]).result()
    assert m.get("c") == 3 and sees(e4)


@pytest.mark.parametrize(
    "make",
    [safemap.ConcurrentMap, safemap.SyncMap, lambda: safemap.Cache(16)],
    ids=["ConcurrentMap", "SyncMap", "Cache"],
)
def test_a_get_or_compute_hit_orders_the_reader_after_the_publisher(
    make: Callable[[], Any],
) -> None:
    # the native maps answer a hit of get_or_compute in C; with the detector on, their
    # get is its wrapper, and the hit must go through it to take the key's edge
    m = make()
    e = Raw(lambda: (epoch(), m.store("k", 1))[0]).result()
    assert not sees(e)
    assert m.get_or_compute("k", lambda _k: pytest.fail("loaded a present key")) == 1
    assert sees(e)


def test_map_key_clocks_stay_bounded_and_dropping_them_never_loses_an_edge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from safemap.race import _sync_maps

    monkeypatch.setattr(_sync_maps, "KEY_CLOCKS", 64)
    m = safemap.ConcurrentMap()
    e = Raw(lambda: (epoch(), m.store("published", 1))[0]).result()

    def churn() -> None:  # many distinct keys, far more than KEY_CLOCKS
        for i in range(1000):
            m[i] = i
            del m[i]

    Raw(churn).result()
    clocks = _sync_maps._clocks(m)
    assert clocks is not None and len(clocks.keys) <= 64
    assert "published" not in clocks.keys  # its clock was dropped...
    assert not sees(e)
    assert m.get("published") == 1
    assert sees(e)  # ...yet reading the key still orders the publisher's past first


def test_actor_map_internal_queue_does_not_order_different_keys() -> None:
    with safemap.ActorMap() as m:
        e = Raw(lambda: (epoch(), m.store("a", 1))[0]).result()
        m.store("b", 2)
        assert m.get("b") == 2
        assert not sees(e)
        box: list[Any] = []
        m.execute(lambda d: box.append(sees(e)))
        assert box == [True]  # execute touches every key


def test_rwlock_edges() -> None:
    rw = safemap.RWLock()
    ew = Raw(lambda: (rw.acquire_write(), epoch(), rw.release_write())[1]).result()
    er = Raw(lambda: (rw.acquire_read(), epoch(), rw.release_read())[1]).result()
    # write release -> read acquire; read release -> read acquire: no.
    assert Raw(
        lambda: (rw.acquire_read(), sees(ew), sees(er), rw.release_read())[1:3]
    ).result() == (True, False)
    # read release -> write acquire.
    with rw.write():
        assert sees(ew) and sees(er)


def test_rwlockmap_internal_rwlock_creates_no_edges_across_keys() -> None:
    m = safemap.RWLockMap()
    e = Raw(lambda: (epoch(), m.store("a", 1))[0]).result()
    m.store("b", 1)
    assert not sees(e)


# ------------------------------------------------------------- behaviour is unchanged


def test_models_keep_return_values_timeouts_and_exceptions() -> None:
    lock = threading.Lock()
    assert lock.acquire() is True
    assert lock.locked()
    assert lock.acquire(timeout=0.001) is False
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
    rlock = threading.RLock()
    with pytest.raises(RuntimeError):
        rlock.release()
    assert threading.Semaphore(0).acquire(timeout=0.001) is False
    bounded = threading.BoundedSemaphore(1)
    with pytest.raises(ValueError):
        bounded.release()
    assert threading.Event().wait(0.001) is False
    cond = threading.Condition()
    with cond:
        assert cond.wait(0.001) is False
        assert cond.wait_for(lambda: 42, 0.001) == 42
    with pytest.raises(RuntimeError):
        cond.notify()
    q = queue.Queue(maxsize=1)
    q.put_nowait(1)
    with pytest.raises(queue.Full):
        q.put(2, timeout=0.001)
    assert q.get_nowait() == 1
    with pytest.raises(queue.Empty):
        q.get(timeout=0.001)
    q.task_done()
    with pytest.raises(ValueError):
        q.task_done()
    q.join()
    sq = queue.SimpleQueue()
    with pytest.raises(queue.Empty):
        sq.get_nowait()
    sq.put_nowait("x")
    assert sq.qsize() == 1 and sq.get() == "x"
    b = threading.Barrier(1, action=lambda: None)
    assert b.wait() == 0
    rw = safemap.RWLock()
    with pytest.raises(RuntimeError):
        rw.release_read()
    with pytest.raises(TimeoutError), rw.write(), rw.read():
        Raw(lambda: rw.write(timeout=0.001).__enter__()).result()
    with cf.ThreadPoolExecutor(1) as pool:
        assert list(pool.map(lambda x: x * 2, range(5))) == [0, 2, 4, 6, 8]
        with pytest.raises(cf.TimeoutError):
            pool.submit(threading.Event().wait, 0.2).result(timeout=0.001)


def test_map_behaviour_is_unchanged() -> None:
    m = safemap.ConcurrentMap({"a": 1})
    with pytest.raises(KeyError):
        m["missing"]
    with pytest.raises(TypeError):
        m[[1]] = 2  # unhashable key: the map's own error
    assert m.compute("a", lambda k, old: old + 1) == 2
    assert m.setdefault("b", 3) == 3
    assert sorted(m.items()) == [("a", 2), ("b", 3)]
    assert m.snapshot() == {"a": 2, "b": 3}
    assert m.transaction(lambda v: v.pop("b")) == 3
    assert len(m) == 1 and m.popitem() == ("a", 2)
    with safemap.ActorMap({"x": 1}) as am:
        assert am.execute(lambda d, n: d["x"] + n, 1) == 2
        assert am.compute("x", lambda k, old: old * 10) == 10
        am.update({"y": 2})
        assert am.snapshot() == {"x": 10, "y": 2}


def test_subclass_defined_while_installed_is_instrumented_and_restored() -> None:
    class Mine(safemap.LockedMap):  # type: ignore[type-arg]
        def load(self, key: Any) -> Any:
            return super().load(key)

    assert hasattr(vars(Mine)["load"], "__safemap_race_orig__")
    m = Mine()
    e = Raw(lambda: (epoch(), m.store("k", 1))[0]).result()
    assert m.load("k") == (1, True)
    assert sees(e)
    _sync.uninstall()
    assert not hasattr(vars(Mine)["load"], "__safemap_race_orig__")
    _sync.install()
