"""LockedMap and RWLockMap: a single-key write made by the thread that is inside one of the
map's plain operations (as a finalizer, a ``__del__`` or a key's ``__eq__`` may) lands; only
inside a compute-family call or a transaction is it refused; and an interrupt (a signal
handler's exception) landing anywhere in a read or a store leaves no lock held."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import safemap
from safemap import RecursiveUpdateError

PURE = pytest.mark.parametrize("pure_type", [safemap.LockedMap, safemap.RWLockMap])


class Hook:
    """Hashes to 7; comparing it with another Hook runs ``hook()`` once."""

    def __init__(self) -> None:
        self.hook: Callable[[], None] | None = None

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return other is self


def _getitem(m: Any, key: Any) -> object:
    try:
        return m[key]
    except KeyError:
        return None


# Plain operations that compare ``probe`` with the stored Hook while holding the lock.
PLAIN_OPS: list[tuple[str, Callable[[Any, Any], object]]] = [
    ("get", lambda m, k: m.get(k)),
    ("getitem", lambda m, k: _getitem(m, k)),
    ("contains", lambda m, k: k in m),
    ("load", lambda m, k: m.load(k)),
    ("setitem", lambda m, k: m.__setitem__(k, "new")),
    ("store", lambda m, k: m.store(k, "new")),
    ("pop", lambda m, k: m.pop(k, None)),
    ("load_and_delete", lambda m, k: m.load_and_delete(k)),
]

NESTED_WRITES: list[tuple[str, Callable[[Any], object], dict[Any, Any]]] = [
    ("setitem", lambda m: m.__setitem__("w", 1), {"x": 0, "w": 1}),
    ("pop", lambda m: m.pop("x"), {}),
    ("delete", lambda m: m.delete("x"), {}),
]


@PURE
@pytest.mark.parametrize("op", [o for _, o in PLAIN_OPS], ids=[n for n, _ in PLAIN_OPS])
@pytest.mark.parametrize("nested", NESTED_WRITES, ids=[n for n, _, _ in NESTED_WRITES])
def test_nested_single_key_write_from_a_plain_operation_lands(
    pure_type: type, op: Callable[[Any, Any], object], nested: tuple[str, Any, Any]
) -> None:
    _, write, effect = nested  # effect: the plain keys after the nested write
    stored, probe = Hook(), Hook()
    m = pure_type({"x": 0})
    m[stored] = "s"
    outcome: list[object] = []

    def hook() -> None:
        try:
            write(m)
            outcome.append("landed")
        except RecursiveUpdateError as exc:
            outcome.append(exc)

    stored.hook = hook
    op(m, probe)
    assert outcome == ["landed"]
    expected = {**effect, stored: "s"}
    got = dict(m.items())
    got.pop(probe, None)
    assert got == expected


@PURE
def test_nested_write_inside_compute_or_transaction_is_refused(pure_type: type) -> None:
    stored, probe = Hook(), Hook()
    m = pure_type({"x": 0})
    m[stored] = "s"
    outcome: list[object] = []

    def hook() -> None:
        try:
            m["w"] = 1
        except RecursiveUpdateError as exc:
            outcome.append(type(exc))

    stored.hook = hook
    m.compute(probe, lambda k, old: "c")
    stored.hook = hook
    m.transaction(lambda view: view.__setitem__(probe, "t"))
    assert outcome == [RecursiveUpdateError, RecursiveUpdateError]
    assert "w" not in m and m[probe] == "t"


class _Interrupt(Exception):
    pass


@pytest.mark.skipif(
    not hasattr(signal, "pthread_kill")
    or threading.current_thread() is not threading.main_thread(),
    reason="needs POSIX signals delivered to the main thread",
)
@pytest.mark.timeout(120)
@PURE
def test_interrupts_during_reads_and_stores_leave_no_lock_held(
    pure_type: type[Any], fast_switch: None
) -> None:
    # A SIGINT handler raises in the main thread, many times, while it reads and stores
    # (the calls that release in the C call making their dict operation) and other threads
    # do the same: wherever the exception lands, no hold is left behind (the workers
    # finish, another thread can still write) and the counts stay exact for the calls
    # that completed.
    m = pure_type(n=0)
    workers_n, rounds = 3, 2000
    armed = [False]
    interrupts = sent = 0

    def handler(signum: int, frame: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise _Interrupt

    def worker(i: int) -> None:
        for r in range(rounds):
            m.get("n")
            m[(i, r % 8)] = r
            _ = "n" in m

    def interrupter() -> None:
        nonlocal sent
        for _ in range(100):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            sent += 1
            time.sleep(0.002)

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers_n)]
    sender = threading.Thread(target=interrupter, daemon=True)
    previous = signal.signal(signal.SIGINT, handler)
    try:
        for t in [*workers, sender]:
            t.start()
        r = 0
        while sender.is_alive():
            try:
                armed[0] = True
                m.get("n")
                m[("main", r % 8)] = r
                _ = m["n"]
                m.load("n")
                armed[0] = False
            except _Interrupt:
                interrupts += 1
            r += 1
    finally:
        armed[0] = False
        sender.join(30)
        signal.signal(signal.SIGINT, previous)
    for t in workers:
        t.join(30)
    assert not any(t.is_alive() for t in workers), "a worker hung: a lock was left held"
    assert interrupts > 0 and sent == 100
    assert not m._lock.held_by_current_thread()
    writer = threading.Thread(target=m.__setitem__, args=("after", 1))
    writer.start()
    writer.join(30)
    assert not writer.is_alive() and m["after"] == 1
    s = m.stats()
    assert s.size == len(m) and s.inserts - s.deletes == s.size
