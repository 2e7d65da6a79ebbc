"""Tests of ``safemap.checked`` (CheckedDict, Go's fail-fast map check).

Every overlap below is forced deterministically: a key whose ``__eq__`` signals an Event
and then blocks on another keeps one thread inside a dict operation while the test runs
the other thread's operation. No sleeps, no timing assertions; every wait has a generous
timeout so a bug fails instead of hanging.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import pickle
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from safemap.failfast import (
    CheckedDict,
    ConcurrentIterationError,
    ConcurrentMapMisuse,
    ConcurrentReadWriteError,
    ConcurrentWriteError,
    ThreadConfinementError,
    _core,
    checked,
)

WAIT = 60.0  # a deadlock guard, not a timing assertion: generous for loaded machines
FREE_THREADED = bool(_core.FREE_THREADED)


# ------------------------------------------------------------------------ helpers


class Gate:
    """``entered`` is set when a blocking __eq__ starts; it returns once ``release`` is."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


class BKey:
    """A key whose hash collides with every other BKey. Comparing a key with a gated
    probe blocks on the probe's gate (then runs ``after``, then answers False), so the
    thread doing the lookup stays inside the dict operation."""

    def __init__(
        self, label: str, gate: Gate | None = None, after: Callable[[], None] | None = None
    ) -> None:
        self.label = label
        self.gate = gate
        self.after = after

    def __hash__(self) -> int:
        return 42

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BKey):
            return NotImplemented
        for k in (self, other):
            if k.gate is not None:
                k.gate.entered.set()
                assert k.gate.release.wait(WAIT), "gate never released"
                if k.after is not None:
                    k.after()
                return False
        return self is other

    def __repr__(self) -> str:
        return f"BKey({self.label})"


class Runner:
    """A thread running ``fn``; ``join()`` returns its result or re-raises its error."""

    def __init__(self, fn: Callable[[], Any], name: str = "other") -> None:
        self.value: Any = None
        self.exc: BaseException | None = None
        self.thread = threading.Thread(target=self._body, args=(fn,), name=name, daemon=True)
        self.thread.start()

    def _body(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as e:
            self.exc = e

    def join(self) -> Any:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "thread still running"
        if self.exc is not None:
            raise self.exc
        return self.value


def in_thread(fn: Callable[[], Any], name: str = "other") -> Any:
    return Runner(fn, name).join()


def blocked(fn: Callable[[Gate], Any], name: str = "holder") -> tuple[Runner, Gate]:
    """Start ``fn(gate)`` in a thread and wait until it is blocked inside the map."""
    gate = Gate()
    r = Runner(lambda: fn(gate), name)
    assert gate.entered.wait(WAIT), "the holder never reached the blocking __eq__"
    return r, gate


def new_map(**kw: Any) -> tuple[CheckedDict[Any, Any], BKey]:
    stored = BKey("stored")
    return checked({stored: "s", 1: "one", 2: "two"}, **kw), stored


# ------------------------------------------------------------------- the holders


def _getitem_or_none(d: CheckedDict[Any, Any], key: Any) -> Any:
    try:
        return d[key]
    except KeyError:
        return None


# Operations that stay inside the map while blocked (the "other thread"'s operation).
WRITE_HOLDERS: dict[str, Callable[[CheckedDict[Any, Any], Gate], Any]] = {
    "setitem": lambda d, g: d.__setitem__(BKey("p", g), 1),
    "setdefault": lambda d, g: d.setdefault(BKey("p", g), 1),
    "pop": lambda d, g: d.pop(BKey("p", g), None),
    "update": lambda d, g: d.update({BKey("p", g): 1}),
    "ior": lambda d, g: d.__ior__({BKey("p", g): 1}),
}
READ_HOLDERS: dict[str, Callable[[CheckedDict[Any, Any], Gate], Any]] = {
    "get": lambda d, g: d.get(BKey("p", g)),
    "contains": lambda d, g: BKey("p", g) in d,
    "getitem": lambda d, g: _getitem_or_none(d, BKey("p", g)),
}

# Operations of the detecting thread.
WRITES: dict[str, Callable[[CheckedDict[Any, Any]], Any]] = {
    "setitem new": lambda d: d.__setitem__(100, 1),
    "setitem existing": lambda d: d.__setitem__(1, "ONE"),
    "delitem": lambda d: d.__delitem__(1),
    "pop": lambda d: d.pop(1),
    "popitem": lambda d: d.popitem(),
    "setdefault": lambda d: d.setdefault(100, 1),
    "update": lambda d: d.update({100: 1}),
    "ior": lambda d: d.__ior__({100: 1}),
    "clear": lambda d: d.clear(),
    "init": lambda d: d.__init__({100: 1}),
}
READS: dict[str, Callable[[CheckedDict[Any, Any]], Any]] = {
    "getitem": lambda d: d[1],
    "get": lambda d: d.get(1),
    "contains": lambda d: 1 in d,
    "len": lambda d: len(d),
    "eq": lambda d: d == {},
    "repr": lambda d: repr(d),
    "copy": lambda d: d.copy(),
    "or": lambda d: d | {},
    # A CheckedDict as the source of a copy or an update: one read of it.
    "ror": lambda d: {} | d,
    "checked or": lambda d: checked() | d,
    "update from": lambda d: checked().update(d),
    "checked from": lambda d: checked(d),
}
ITERATIONS: dict[str, Callable[[CheckedDict[Any, Any]], Any]] = {
    # Comprehensions, not list(): list() asks len() first, which is a read of its own.
    "iter": lambda d: [x for x in d],
    "keys": lambda d: [x for x in d.keys()],  # noqa: SIM118
    "values": lambda d: [x for x in d.values()],
    "items": lambda d: [x for x in d.items()],
    "reversed": lambda d: [x for x in reversed(d)],
    "reversed items": lambda d: [x for x in reversed(d.items())],
}


def snapshot(d: CheckedDict[Any, Any]) -> dict[Any, Any]:
    return {k: v for k, v in dict.items(d)}  # unchecked: the test's own view


# ------------------------------------------------------------------ basic facts


def test_is_a_dict_subclass() -> None:
    d = checked({"a": 1}, name="cache")
    assert isinstance(d, dict)
    assert isinstance(d, CheckedDict)
    assert type(d) is CheckedDict
    assert d.name == "cache"
    assert d.confined is False
    assert checked().name is None
    assert CheckedDict(a=1) == {"a": 1}
    assert CheckedDict([(1, 2)], b=3) == {1: 2, "b": 3}
    assert checked([(1, 2)]) == {1: 2}
    assert CheckedDict[str, int] is not None  # generic alias, as dict[str, int]


def test_all_dict_methods_behave_like_dict() -> None:
    plain: dict[Any, Any] = {"a": 1, "b": 2, 3: [4]}
    d = checked(plain)
    assert d == plain and plain == d and (d != plain) is False
    assert d["a"] == 1 and d.get("zz") is None and d.get("zz", 5) == 5
    assert "a" in d and "zz" not in d
    assert len(d) == 3
    assert list(d) == list(plain)
    assert list(d.keys()) == list(plain.keys())
    assert list(d.values()) == list(plain.values())
    assert list(d.items()) == list(plain.items())
    assert list(reversed(d)) == list(reversed(plain))
    assert list(reversed(d.keys())) == list(reversed(plain.keys()))
    assert list(reversed(d.values())) == list(reversed(plain.values()))
    assert list(reversed(d.items())) == list(reversed(plain.items()))
    assert repr(d) == repr(plain)
    assert d.keys() == plain.keys() and plain.keys() == d.keys()
    assert d.items() == plain.items()
    assert d.keys() | {9} == plain.keys() | {9}
    assert d.keys() & {"a", 9} == {"a"}
    assert d.keys() - {"a"} == {"b", 3}
    assert d.keys() ^ {"a", 9} == {"b", 3, 9}
    assert {"a", 9} - d.keys() == {9}
    assert d.keys().isdisjoint({7})
    assert ("a", 1) in d.items() and ("a", 2) not in d.items()
    assert 2 in d.values() and [4] in d.values() and 99 not in d.values()
    assert len(d.keys()) == len(d.values()) == len(d.items()) == 3
    assert d.keys().mapping == plain and d.items().mapping["a"] == 1
    assert d.values().mapping["b"] == 2
    assert d.setdefault("c", 5) == 5 and d.setdefault("c", 6) == 5
    assert d.pop("c") == 5 and d.pop("c", None) is None
    with pytest.raises(KeyError):
        d.pop("c")
    with pytest.raises(KeyError):
        d["zz"]
    with pytest.raises(KeyError):
        del d["zz"]
    d["d"] = 4
    assert d.popitem() == ("d", 4)
    d.update({"e": 5}, f=6)
    d.update([("g", 7)])
    d |= {"h": 8}
    assert (d | {"i": 9})["i"] == 9 and "i" not in d
    assert ({"i": 9} | d)["a"] == 1
    assert type({"i": 9} | d) is dict
    assert type(d | {}) is CheckedDict
    assert CheckedDict.fromkeys([1, 2], 0) == {1: 0, 2: 0}
    assert type(CheckedDict.fromkeys([1])) is CheckedDict
    assert dict(d) == d and {**d} == d
    assert sys.getsizeof(d) > 0
    d.clear()
    assert d == {} and len(d) == 0
    with pytest.raises(KeyError):
        d.popitem()
    with pytest.raises(TypeError):
        d.get()  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        d.clear(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        hash(d)
    it = iter(checked({1: 2, 3: 4}))
    assert it.__length_hint__() == 2  # type: ignore[attr-defined]
    assert iter(it) is it


def test_same_thread_changes_during_iteration_keep_dict_behaviour() -> None:
    d = checked({1: 1, 2: 2})
    for k in d:  # same size: allowed, as for dict
        d[k] = k + 10
    assert d == {1: 11, 2: 12}
    with pytest.raises(RuntimeError, match="changed size") as ei:
        for k in d:
            d[k + 100] = 0
    assert not isinstance(ei.value, ConcurrentMapMisuse)


# ----------------------------------------------------- deterministic detection


@pytest.mark.parametrize("holder", list(WRITE_HOLDERS))
@pytest.mark.parametrize("op", list(WRITES))
def test_write_during_write(holder: str, op: str) -> None:
    d, _ = new_map(name="m")
    r, gate = blocked(lambda g: WRITE_HOLDERS[holder](d, g))
    before = snapshot(d)
    with pytest.raises(ConcurrentWriteError, match=r"^concurrent map writes"):
        WRITES[op](d)
    assert snapshot(d) == before  # the refused write changed nothing
    gate.release.set()
    r.join()


@pytest.mark.parametrize("holder", list(WRITE_HOLDERS))
@pytest.mark.parametrize("op", list(READS))
def test_read_during_write(holder: str, op: str) -> None:
    d, _ = new_map()
    r, gate = blocked(lambda g: WRITE_HOLDERS[holder](d, g))
    with pytest.raises(ConcurrentReadWriteError, match=r"^concurrent map read and map write"):
        READS[op](d)
    gate.release.set()
    r.join()
    READS[op](d)  # and fine once the write is over


@pytest.mark.parametrize("holder", list(WRITE_HOLDERS))
@pytest.mark.parametrize("op", list(ITERATIONS))
def test_iteration_during_write(holder: str, op: str) -> None:
    d, _ = new_map()
    r, gate = blocked(lambda g: WRITE_HOLDERS[holder](d, g))
    with pytest.raises(ConcurrentIterationError, match=r"^concurrent map iteration and map write"):
        ITERATIONS[op](d)
    gate.release.set()
    r.join()
    ITERATIONS[op](d)


@pytest.mark.parametrize("holder", list(READ_HOLDERS))
@pytest.mark.parametrize("op", list(WRITES))
def test_write_during_read(holder: str, op: str) -> None:
    d, _ = new_map()
    r, gate = blocked(lambda g: READ_HOLDERS[holder](d, g))
    before = snapshot(d)
    with pytest.raises(ConcurrentReadWriteError, match=r"^concurrent map read and map write"):
        WRITES[op](d)
    assert snapshot(d) == before
    gate.release.set()
    r.join()
    WRITES[op](d)


@pytest.mark.parametrize("holder", list(READ_HOLDERS))
@pytest.mark.parametrize("op", list(READS) + list(ITERATIONS))
def test_reads_overlap_freely(holder: str, op: str) -> None:
    d, _ = new_map()
    r, gate = blocked(lambda g: READ_HOLDERS[holder](d, g))
    (READS | ITERATIONS)[op](d)
    gate.release.set()
    r.join()


ITER_STARTS: dict[str, Callable[[CheckedDict[Any, Any]], Iterator[Any]]] = {
    "iter": iter,
    "keys": lambda d: iter(d.keys()),
    "values": lambda d: iter(d.values()),
    "items": lambda d: iter(d.items()),
    "reversed": reversed,
    "reversed values": lambda d: reversed(d.values()),
}


@pytest.mark.parametrize("start", list(ITER_STARTS))
@pytest.mark.parametrize("op", list(WRITES))
def test_write_during_iteration_from_another_thread(start: str, op: str) -> None:
    """Size-changing and size-keeping writes alike (plain dict misses the latter)."""
    d, _ = new_map(name="it")
    it = ITER_STARTS[start](d)
    next(it)  # the iteration is now in progress
    before = snapshot(d)
    with pytest.raises(ConcurrentIterationError, match=r"^concurrent map iteration and map write"):
        in_thread(lambda: WRITES[op](d))
    assert snapshot(d) == before
    list(it)  # the iteration goes on undisturbed, then is over
    in_thread(lambda: WRITES[op](d))


def test_size_keeping_write_is_what_plain_dict_misses() -> None:
    plain = {1: 1, 2: 2}
    it = iter(plain)
    next(it)
    in_thread(lambda: plain.__setitem__(1, 5))
    list(it)  # plain dict: no error at all
    d = checked({1: 1, 2: 2})
    it2 = iter(d)
    next(it2)
    with pytest.raises(ConcurrentIterationError):
        in_thread(lambda: d.__setitem__(1, 5))


def test_iteration_span_is_first_next_to_exhaustion_or_drop() -> None:
    d = checked({1: 1, 2: 2})
    it = iter(d)
    in_thread(lambda: d.__setitem__(1, 0))  # not started: no iteration in progress
    in_thread(lambda: d.__setitem__(3, 0))  # even a size change
    assert list(iter(d)) == [1, 2, 3]
    assert next(it) == 1  # the iteration begins here (no "changed size" error)
    assert list(it) == [2, 3]
    del d[3]
    it = iter(d)
    next(it)
    with pytest.raises(ConcurrentIterationError):
        in_thread(lambda: d.__setitem__(1, 0))
    del it  # dropped: over
    in_thread(lambda: d.__setitem__(1, 0))
    it = iter(d.items())
    next(it)
    next(it)
    with pytest.raises(ConcurrentIterationError):
        in_thread(lambda: d.__setitem__(1, 0))
    with pytest.raises(StopIteration):
        next(it)  # exhausted: over
    in_thread(lambda: d.__setitem__(1, 0))
    for _ in d:  # `break` drops the loop's iterator
        break
    in_thread(lambda: d.__setitem__(1, 0))
    assert next(iter(d)) == 1  # a temporary iterator is dropped at once
    in_thread(lambda: d.__setitem__(2, 0))


def test_generator_keeps_iteration_in_progress() -> None:
    d = checked({1: 1, 2: 2})
    gen = (k for k in d)
    next(gen)
    with pytest.raises(ConcurrentIterationError):
        in_thread(lambda: d.pop(2))
    gen.close()
    assert in_thread(lambda: d.pop(2)) == 2


def test_iterations_of_several_threads_are_tracked_precisely() -> None:
    d = checked({1: 1, 2: 2, 3: 3})
    mine = iter(d)
    next(mine)
    started = threading.Event()
    finish = threading.Event()
    errors: list[BaseException] = []

    def other() -> None:
        it = iter(d)
        next(it)
        started.set()
        assert finish.wait(WAIT)
        try:
            d[1] = 10  # its own iteration is in progress, and mine too
        except ConcurrentIterationError as e:
            errors.append(e)
        del it

    r = Runner(other, "iterating")
    assert started.wait(WAIT)
    with pytest.raises(ConcurrentIterationError, match="'iterating'"):
        d[1] = 5  # the other thread's iteration is in progress
    finish.set()
    r.join()
    assert len(errors) == 1  # mine was still in progress
    del mine
    d[1] = 5  # nothing in progress any more
    it2 = iter(d)
    next(it2)
    with pytest.raises(ConcurrentIterationError):
        in_thread(lambda: d.__setitem__(1, 6))
    del it2
    assert in_thread(lambda: d.__setitem__(1, 6)) is None


def test_write_by_the_last_remaining_iterator_thread_is_fine() -> None:
    """Two threads iterate; the first one finishes; the second writes: no false alarm."""
    d = checked({1: 1, 2: 2})
    a_started, b_started, a_done = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        it = iter(d)
        next(it)
        a_started.set()
        assert b_started.wait(WAIT)
        del it
        a_done.set()

    def b() -> None:
        assert a_started.wait(WAIT)
        it = iter(d)
        next(it)
        b_started.set()
        assert a_done.wait(WAIT)
        d[1] = 100  # only b's own iteration is in progress
        assert list(it) == [2]

    ra, rb = Runner(a, "a"), Runner(b, "b")
    ra.join()
    rb.join()
    assert d[1] == 100


@pytest.mark.parametrize("first_finishes", ["owner", "second"])
def test_write_inside_own_read_after_other_reader_left(first_finishes: str) -> None:
    """Two threads inside reads at once; one leaves; the other writes from inside its
    read (a key's __eq__): that is re-entry, not misuse."""
    d, _ = new_map()
    wrote: list[str] = []

    def write_back(who: str) -> Callable[[], None]:
        def f() -> None:
            d[who] = 1
            wrote.append(who)

        return f

    after_a = write_back("a") if first_finishes == "second" else None
    after_b = write_back("b") if first_finishes == "owner" else None
    r1, g1 = blocked(lambda g: d.get(BKey("a", g, after_a)), "a")
    r2, g2 = blocked(lambda g: d.get(BKey("b", g, after_b)), "b")
    if first_finishes == "owner":
        g1.release.set()
        r1.join()
        g2.release.set()
        r2.join()
        assert wrote == ["b"]
    else:
        g2.release.set()
        r2.join()
        g1.release.set()
        r1.join()
        assert wrote == ["a"]


def test_write_while_two_threads_read() -> None:
    d, _ = new_map()
    r1, g1 = blocked(lambda g: d.get(BKey("a", g)), "reader-1")
    r2, g2 = blocked(lambda g: d.get(BKey("b", g)), "reader-2")
    with pytest.raises(ConcurrentReadWriteError):
        d[5] = 5
    g1.release.set()
    r1.join()
    with pytest.raises(ConcurrentReadWriteError, match="'reader-2'"):
        d[5] = 5  # reader-2 (not the owner slot) is still inside its read
    g2.release.set()
    r2.join()
    d[5] = 5


def test_eq_of_two_checked_dicts_reads_both() -> None:
    d, _ = new_map()
    e = checked({1: 1})
    r, gate = blocked(lambda g: WRITE_HOLDERS["setitem"](d, g))
    with pytest.raises(ConcurrentReadWriteError):
        _ = e == d
    with pytest.raises(ConcurrentReadWriteError):
        _ = {1: 1} == d  # noqa: SIM300 - the reflected comparison is the point
    gate.release.set()
    r.join()


# ------------------------------------------------------------- no false alarm


def test_same_thread_reentry_is_fine() -> None:
    d: CheckedDict[Any, Any] = checked()

    class Reentrant:
        def __hash__(self) -> int:
            return 7

        def __eq__(self, other: object) -> bool:
            _ = d.get(1), 1 in d, len(d), list(d)  # reads inside my own write/read
            d[1] = 1  # and a write inside my own write/read
            return self is other

    k1, k2 = Reentrant(), Reentrant()
    d[k1] = "a"
    d[k2] = "b"  # comparing k1 with k2 runs the re-entrant __eq__ inside the write
    assert d.get(k2) == "b"  # ... and inside a read
    assert k2 in d
    for a in d:  # nested loops
        for b in d:
            _ = d[a], d[b]
    for k in list(d):
        d[k] = d[k]


def test_sequential_use_from_many_threads_is_fine(run_threads: Any) -> None:
    d: CheckedDict[Any, Any] = checked(name="shared")
    lock = threading.Lock()
    n, per = 4, 300

    def work(i: int) -> int:
        done = 0
        for j in range(per):
            with lock:
                d[(i, j)] = j
                assert d[(i, j)] == j
                _ = d.get((i, j - 1)), (i, j) in d, len(d)
                if j % 50 == 0:
                    assert sum(1 for _ in d.items()) == len(d)
                    _ = d.copy(), d == {}, repr(d)[:10]
                if j % 3 == 0:
                    del d[(i, j)]
                d.setdefault(("x", i), 0)
                d.update({("u", i): j})
            done += 1
        return done

    assert run_threads(work, n) == [per] * n
    expect = n * (per - len(range(0, per, 3))) + 2 * n
    assert len(d) == expect


def test_strict_hand_off_without_lock() -> None:
    """Threads take turns through Events (ordered, never overlapping): no error."""
    d: CheckedDict[Any, Any] = checked({0: 0})
    turns = [threading.Event() for _ in range(4)]
    rounds = 50

    def player(i: int) -> None:
        for r in range(rounds):
            assert turns[i].wait(WAIT)
            turns[i].clear()
            d[0] += 1
            for _ in d.items():
                pass
            d[(i, r)] = r
            turns[(i + 1) % 4].set()

    runners = [Runner(lambda i=i: player(i), f"p{i}") for i in range(4)]
    turns[0].set()
    for r in runners:
        r.join()
    assert d[0] == 4 * rounds


def test_unlocked_int_key_writers_never_false_alarm(fast_switch: None, run_threads: Any) -> None:
    """On a GIL build an int-key operation runs no Python code: two of them never
    overlap, so no error may be raised however often the GIL switches."""
    if FREE_THREADED:
        pytest.skip("free-threaded: these operations really overlap")
    d: CheckedDict[Any, Any] = checked({k: 0 for k in range(64)})

    def work(i: int) -> None:
        for j in range(3000):
            k = (i * 17 + j) % 64
            d[k] = j
            d.get(k)
            if j % 7 == 0:
                d.pop(k, None)
                d.setdefault(k, 0)

    run_threads(work, 4)
    assert len(d) == 64


def test_concurrent_iteration_and_writes_invariants(fast_switch: None) -> None:
    """Real threads: one iterates in a loop, others write. Every error is one of ours
    (never dict's "changed size during iteration": another thread's write is refused
    before it changes anything), and the dict stays consistent."""
    d: CheckedDict[Any, Any] = checked({k: k for k in range(200)}, name="stress")
    stop = threading.Event()
    seen: dict[str, int] = {"iter_errors": 0, "write_errors": 0, "writes": 0, "loops": 0}
    lock = threading.Lock()

    def iterate() -> None:
        while not stop.is_set():
            try:
                total = sum(1 for _ in d.items())
                assert total <= 400
                with lock:
                    seen["loops"] += 1
            except ConcurrentIterationError:
                with lock:
                    seen["iter_errors"] += 1

    writers = threading.Lock()  # writers are ordered among themselves, not with iterations

    def write(i: int) -> None:
        for j in range(2000):
            k = 1000 + i * 10_000 + j
            with writers:
                try:
                    d[k] = j
                    del d[k]
                    d[j % 200] = j  # size-keeping
                    with lock:
                        seen["writes"] += 1
                except ConcurrentMapMisuse as e:
                    assert isinstance(e, ConcurrentIterationError), e
                    with lock:
                        seen["write_errors"] += 1
                    with contextlib.suppress(KeyError, ConcurrentMapMisuse):
                        del d[k]

    its = [Runner(iterate, f"iter-{i}") for i in range(2)]
    ws = [Runner(lambda i=i: write(i), f"writer-{i}") for i in range(2)]
    for w in ws:
        w.join()
    stop.set()
    for it in its:
        it.join()
    assert seen["loops"] > 0
    assert seen["writes"] + seen["write_errors"] == 4000
    assert all(type(k) is int for k in d)
    assert len(d) >= 200


# ------------------------------------------------------------------ confinement


def test_confined_map_pins_the_first_user() -> None:
    d = checked({1: 1}, name="conf", confined=True)
    assert d.confined
    assert d[1] == 1  # pins the main thread (filling in checked() did not)
    for op in list(READS.values()) + list(WRITES.values()) + list(ITERATIONS.values()):
        with pytest.raises(ThreadConfinementError, match=r"^map confined to thread") as ei:
            in_thread(lambda op=op: op(d), "intruder")
        assert "'MainThread'" in str(ei.value) and "'intruder'" in str(ei.value)
        assert ei.value.other_thread == "MainThread"
        assert ei.value.map_name == "conf"
    d[2] = 2
    assert list(d) == [1, 2]


def test_confined_map_created_elsewhere_pins_its_first_user() -> None:
    d = checked({1: 1}, confined=True)
    in_thread(lambda: d.__setitem__(2, 2), "owner")
    # The owner has exited: it is named by its ident, with no stack.
    with pytest.raises(ThreadConfinementError, match=r"^map confined to thread ident \d+") as ei:
        d.get(1)
    assert ei.value.other_thread is None and ei.value.other_stack is None
    it = in_thread(lambda: iter(d), "owner2")  # creating an iterator is not a use
    with pytest.raises(ThreadConfinementError):
        next(it)


def test_unconfined_map_allows_sequential_threads() -> None:
    d = checked({1: 1})
    in_thread(lambda: d.__setitem__(2, 2))
    d[3] = 3
    assert d == {1: 1, 2: 2, 3: 3}


# -------------------------------------------------------------------- messages


def test_message_names_map_other_thread_and_its_stack() -> None:
    d, _ = new_map(name="user-cache")

    def writer_body_for_the_stack(g: Gate) -> None:
        d[BKey("p", g)] = 1

    r, gate = blocked(writer_body_for_the_stack, "writer-7")
    try:
        with pytest.raises(ConcurrentWriteError) as ei:
            d[3] = 3
    finally:
        gate.release.set()
        r.join()
    e = ei.value
    msg = str(e)
    assert msg.startswith("concurrent map writes")
    assert "'user-cache'" in msg
    assert "'writer-7'" in msg
    assert "'MainThread'" in msg
    assert "writer_body_for_the_stack" in msg
    assert e.map_name == "user-cache"
    assert e.other_thread == "writer-7"
    assert e.other_stack is not None and "writer_body_for_the_stack" in e.other_stack
    assert "__eq__" in e.other_stack  # it was still inside the overlapping operation
    assert isinstance(e, RuntimeError) and isinstance(e, ConcurrentMapMisuse)


def test_message_uses_id_without_a_name_and_reports_iteration() -> None:
    d = checked({1: 1, 2: 2})

    def iterate_somewhere(ready: threading.Event, done: threading.Event) -> None:
        it = iter(d)
        next(it)
        ready.set()
        assert done.wait(WAIT)

    ready, done = threading.Event(), threading.Event()
    r = Runner(lambda: iterate_somewhere(ready, done), "looper")
    assert ready.wait(WAIT)
    try:
        with pytest.raises(ConcurrentIterationError) as ei:
            d[1] = 5
    finally:
        done.set()
        r.join()
    e = ei.value
    assert e.map_name == f"0x{id(d):x}"
    assert f"0x{id(d):x}" in str(e)
    assert e.other_thread == "looper"
    assert e.other_stack is not None and "iterate_somewhere" in e.other_stack


def test_errors_pickle() -> None:
    e = ConcurrentWriteError("concurrent map writes: x", "m", "t", "stack")
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is ConcurrentWriteError
    assert str(e2) == str(e) and e2.map_name == "m" and e2.other_stack == "stack"


# ------------------------------------------------------------ copy and pickle


def test_copy_pickle_deepcopy() -> None:
    d = checked({"a": [1], "b": 2}, name="n", confined=True)
    for c in (d.copy(), copy.copy(d), copy.deepcopy(d), pickle.loads(pickle.dumps(d))):
        assert type(c) is CheckedDict
        in_thread(lambda c=c: c.get("a"))  # the copy was not pinned to this thread
        with pytest.raises(ThreadConfinementError):
            c.get("a")  # ... but to the first one that used it
        assert c.name == "n" and c.confined
        assert dict.__eq__(c, {"a": [1], "b": 2})
    assert copy.copy(d)["a"] is d["a"]
    assert copy.deepcopy(d)["a"] is not d["a"]
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(checked({1: 2}), proto)) == {1: 2}


def test_self_containing_map_copies_and_pickles() -> None:
    d: CheckedDict[Any, Any] = checked({1: 1})
    d["self"] = d
    for c in (copy.deepcopy(d), pickle.loads(pickle.dumps(d))):
        assert c["self"] is c and c[1] == 1
    assert repr(d) == "{1: 1, 'self': {...}}"
    s = copy.copy(d)
    assert s["self"] is d


def test_gc_of_self_containing_map() -> None:
    freed = threading.Event()

    class Canary:
        def __del__(self) -> None:
            freed.set()

    d: CheckedDict[Any, Any] = checked()
    d["self"] = d
    d["canary"] = Canary()
    it = iter(d)
    next(it)
    d["it"] = it  # a started iterator in the cycle too
    del d, it
    gc.collect()
    assert freed.is_set()


# ------------------------------------------------------------------------ leaks


def _every_op_once(d: Any, pinned: Any, i: int) -> None:
    k, k2 = i % 97, f"s{i % 89}"
    d[k] = i
    d[k2] = [i]
    _ = d[k], d.get(k2), d.get(-1), k in d, len(d)
    d.setdefault(("d", i % 3), [])
    d.pop(("d", i % 3), None)
    d.update({("u", i % 5): i})
    d |= {("o", i % 5): i}
    with contextlib.suppress(KeyError):
        del d[-5]
    del d[k]
    if i % 50 == 0:
        _ = list(d), list(d.items()), list(d.values()), list(reversed(d)), d == {}
        _ = d.copy(), d | {}, repr(d), pickle.dumps(d)
        it = iter(d)
        next(it)
        del it
    if i % 400 == 0:
        d.clear()
        d.popitem() if d else None
    with contextlib.suppress(ThreadConfinementError):
        pinned[1] = i  # the error path


@pytest.mark.usefixtures("frozen_heap")
def test_no_reference_leak_over_many_operations() -> None:
    """About 20 operations per round; 50,000 rounds by default (a million operations),
    SAFEMAP_REFLEAK_ROUNDS overrides it; traced memory stays flat."""
    rounds = int(os.environ.get("SAFEMAP_REFLEAK_ROUNDS", "50000"))
    d: CheckedDict[Any, Any] = checked(name="leak")
    pinned = checked({1: 1}, confined=True)
    in_thread(lambda: pinned.get(1))  # pinned to a thread that is gone
    for i in range(200):
        _every_op_once(d, pinned, i)  # warm up caches (exception classes, stacks...)
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(rounds // 2):
            _every_op_once(d, pinned, i)
        gc.collect()
        mid, _ = tracemalloc.get_traced_memory()
        for i in range(rounds // 2):
            _every_op_once(d, pinned, i)
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A leak of one object per round would be >= rounds/2 * 16 bytes.
    assert end - mid < 64 * 1024, (mid, end)


def test_refcounts_stay_put() -> None:
    key, value = object(), object()
    d: CheckedDict[Any, Any] = checked()
    base_k, base_v = sys.getrefcount(key), sys.getrefcount(value)
    for _ in range(1000):
        d[key] = value
        assert d[key] is value and d.get(key) is value and key in d
        assert len(list(d.items())) == 1
        d.setdefault(key, value)
        d.pop(key)
    assert sys.getrefcount(key) == base_k and sys.getrefcount(value) == base_v
