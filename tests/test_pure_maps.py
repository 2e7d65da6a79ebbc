"""LockedMap and RWLockMap: a single-key write made by the thread that is inside one of the
map's plain operations (as a finalizer, a ``__del__`` or a key's ``__eq__`` may) lands; only
inside a compute-family call or a transaction is it refused; and an interrupt (a signal
handler's exception) landing anywhere in a read or a store leaves no lock held."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.interrupts import interrupted_while_contending, needs_main_thread_signals

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


ROUNDS = 8
"""Rounds of the interrupt test below, each on a new map."""


@needs_main_thread_signals
@pytest.mark.timeout(180)
@PURE
def test_interrupts_during_reads_and_stores_leave_no_lock_held(
    pure_type: type[Any], fast_switch: None
) -> None:
    # A SIGINT handler raises in the main thread, many times, while it reads and stores
    # and three other threads do the same, so that the main thread's calls often find the
    # lock taken and wait for it (the slow path, which counts and times the wait): wherever
    # the exception lands, no hold is left behind (the workers finish, another thread can
    # still write) and the counts stay exact for the calls that completed. On 3.14 a
    # `with lock:` in that path was left holding its lock when the exception landed right
    # after `__enter__` (python/cpython#148874): the next contended call of any thread hung.
    contentions = 0
    for _ in range(ROUNDS):
        m = pure_type(n=0)
        per_round = itertools.count()

        def main_op(m: Any = m, r: Iterator[int] = per_round) -> None:
            i = next(r)
            m.get("n")
            m[("main", i % 8)] = i
            _ = m["n"]
            m.load("n")

        def worker_op(m: Any = m) -> None:
            m.get("n")
            m[(threading.get_ident(), 0)] = 1
            _ = "n" in m

        interrupted_while_contending(main_op, worker_op, workers=3, per_worker=20000)
        assert not m._lock.held_by_current_thread()
        writer = threading.Thread(target=m.__setitem__, args=("after", 1))
        writer.start()
        writer.join(30)
        assert not writer.is_alive() and m["after"] == 1
        s = m.stats()
        assert s.size == len(m) and s.inserts - s.deletes == s.size
        contentions += s.lock_contentions
    assert contentions > 0, "no call waited for the lock: the slow path was not exercised"
