"""The C iterator of iteration spans (``safemap.race._fastiter``, made by
``_shadow.iterate``): the same checks as the spec's iteration span, per ``next()``.

Threads are ordered only with Thread.start/join; ``concurrently(child, parent)`` runs the
child first in real time with no happens-before edge to the parent's access."""

from __future__ import annotations

import gc
import pickle
import sys
import threading
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from support.race import concurrently, in_thread, run_thread

from safemap import race
from safemap.race import _fastiter, _runtime, _shadow

pytestmark = pytest.mark.usefixtures("detector")  # tests/race/conftest.py


def kinds() -> list[str]:
    return sorted(r.kind for r in race.reports())


def read_by(d: Any, key: Any, st: _runtime.ThreadState) -> bool:
    """Whether the shadow of ``d`` holds a read of ``key`` by ``st`` at its current clock."""
    loc = d._race.keys.get(key)
    if loc is None or loc[1] is None:
        return False
    r = loc[1]
    rec = r if type(r) is tuple else r.get(st.tid)
    return rec is not None and rec[1] is st and rec[0] == st.vc[st.tid]


MODES: dict[str, Callable[[Any], Iterator[Any]]] = {
    "iter": iter,
    "keys": lambda d: iter(d.keys()),
    "items": lambda d: iter(d.items()),
    "values": lambda d: iter(d.values()),
    "reversed": reversed,
    "reversed-keys": lambda d: reversed(d.keys()),
    "reversed-items": lambda d: reversed(d.items()),
    "reversed-values": lambda d: reversed(d.values()),
}


# ------------------------------------------------------------------------ the type


def test_iterate_returns_the_c_span() -> None:
    d = race.watch({"a": 1}, name="m")
    for make in MODES.values():
        it = make(d)
        assert type(it) is _fastiter.Span and iter(it) is it
    with pytest.raises(TypeError):
        _fastiter.Span()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        pickle.dumps(iter(d))


@pytest.mark.parametrize("mode", list(MODES))
def test_item_modes_yield_what_dict_yields(mode: str) -> None:
    plain = {"a": 1, "b": 2, 3: "c"}
    d = race.watch(plain, name="m")
    assert list(MODES[mode](d)) == list(MODES[mode](plain))
    assert race.reports() == []


# ---------------------------------------------------------------- the shape check


@pytest.mark.parametrize("mode", list(MODES))
def test_shape_change_before_the_span_by_unordered_thread(mode: str) -> None:
    d = race.watch({"k": 1}, name="m")
    concurrently(lambda: d.__setitem__("new", 1), lambda: list(MODES[mode](d)))
    assert kinds() == ["iteration/write"]


def test_shape_change_before_the_span_by_ordered_thread_is_fine() -> None:
    d = race.watch({"k": 1}, name="m")
    run_thread(lambda: d.__setitem__("new", 1))
    assert list(d) == ["k", "new"]
    assert race.reports() == []


def test_shape_change_during_the_span_caught_at_next_next() -> None:
    # The changer starts after the first next() (so the span's start is ordered before
    # it) and is not joined: the next next() is in a new epoch and must check again.
    d = race.watch({"a": 1, "b": 2, "c": 3}, name="m")
    it = iter(d.items())
    assert next(it) == ("a", 1)
    done: list[bool] = []
    t = in_thread(lambda: (d.pop("c"), d.__setitem__("z", 26), done.append(True)))
    while not done:
        pass
    try:
        rest = list(it)
    except RuntimeError:  # dict may notice the keys changed; the check came first
        rest = None
    t.join()
    assert rest in (None, [("b", 2), ("z", 26)])
    assert "iteration/write" in kinds()


def test_each_next_in_one_epoch_checks_nothing_new() -> None:
    # Many next() in one epoch: one observation record, one read per key, no report.
    d = race.watch({i: i for i in range(100)}, name="m")
    st = _runtime.current()
    assert sum(1 for _ in d) == 100
    o = d._race.shape[0]
    assert type(o) is tuple and o[1] is st and o[4] == "iteration"
    assert all(read_by(d, k, st) for k in range(100))
    assert race.reports() == []


# -------------------------------------------------------------------- key reads


@pytest.mark.parametrize("mode", list(MODES))
def test_each_yielded_key_is_read(mode: str) -> None:
    d = race.watch({"a": 1, "b": 2, "c": 3}, name="m")
    it = MODES[mode](d)
    next(it)
    next(it)
    st = _runtime.current()
    reversed_mode = mode.startswith("reversed")
    first_two = ["c", "b"] if reversed_mode else ["a", "b"]
    not_yet = "a" if reversed_mode else "c"
    assert all(read_by(d, k, st) for k in first_two)
    assert not read_by(d, not_yet, st)
    list(it)
    assert read_by(d, not_yet, st)


@pytest.mark.parametrize("mode", list(MODES))
def test_key_read_races_with_unordered_write(mode: str) -> None:
    d = race.watch({"k": 1}, name="m")
    concurrently(lambda: d.__setitem__("k", 2), lambda: list(MODES[mode](d)))
    assert kinds() == ["read/write"]


def test_logical_thread_switch_between_nexts() -> None:
    # An executor task runs as its own logical thread on the same OS thread: the span
    # must read _local.state again on every next().
    d = race.watch({"a": 1, "b": 2, "c": 3}, name="m")
    main = _runtime.current()
    task = _runtime.fork("task", None)
    it = iter(d)
    assert next(it) == "a"
    with _runtime.activate(task):
        assert next(it) == "b"
        assert read_by(d, "b", task) and not read_by(d, "b", main)
    assert next(it) == "c"
    assert read_by(d, "c", main) and read_by(d, "a", main)


def test_span_continued_on_another_os_thread() -> None:
    d = race.watch({"a": 1, "b": 2}, name="m")
    it = iter(d)
    assert next(it) == "a"
    got: list[Any] = []
    states: list[_runtime.ThreadState] = []

    def body() -> None:
        got.append(next(it))
        states.append(_runtime.current())
        got.append(read_by(d, "b", states[0]))

    run_thread(body)
    assert got == ["b", True]
    assert states[0] is not _runtime.current()


# --------------------------------------------------------------------- early end


def test_span_ends_at_its_last_step_not_at_the_drop() -> None:
    # Stepped only under a lock, dropped after the unlock, while another thread changes
    # the shape under the same lock: every step is ordered with the change, so no race
    # (the span used to end at the drop, on the dropper's later clock).
    d = race.watch({"a": 1, "b": 2}, name="m")
    lock = threading.Lock()
    changed: list[bool] = []  # polled: no edge from the change to the drop
    with lock:
        it = iter(d.items())
        assert next(it) == ("a", 1)

    def body() -> None:
        with lock:
            d["c"] = 3
        changed.append(True)

    t = threading.Thread(target=body)  # start() and the lock order the step before the change
    with lock:
        t.start()
    while not changed:
        pass
    del it  # after the unlock, and after the other thread's change
    t.join(60)
    assert race.reports() == []


def test_drop_on_another_thread_is_no_access() -> None:
    d = race.watch({"a": 1, "b": 2}, name="m")
    box: list[Any] = [iter(d)]
    next(box[0])

    def body() -> None:  # ordered after main's step by start()
        d.pop("b")
        box.clear()  # the drop runs here, on the changer's thread

    t = in_thread(body)
    t.join(60)
    assert race.reports() == []


def test_change_between_two_steps_is_still_a_race() -> None:
    d = race.watch({"a": 1, "b": 2, "c": 3}, name="m")
    it = iter(d)
    next(it)
    done: list[bool] = []
    t = in_thread(lambda: (d.__setitem__("b", 20), d.pop("c"), done.append(True)))
    while not done:
        pass
    # The pop is ordered after the first step (start), not before the second one.
    with pytest.raises(RuntimeError):
        next(it)
    t.join(60)
    assert kinds() == ["iteration/write"]


def test_unstarted_or_exhausted_span_does_not_check_on_drop() -> None:
    d = race.watch({"a": 1}, name="m")
    it = iter(d)
    assert list(it) == ["a"]
    unstarted = iter(d)
    done: list[bool] = []
    t = in_thread(lambda: (d.__setitem__("b", 2), done.append(True)))
    while not done:
        pass
    del it, unstarted
    t.join()
    assert race.reports() == []


def test_exception_from_the_underlying_iterator_passes_through() -> None:
    d = race.watch({"a": 1, "b": 2}, name="m")
    it = iter(d)
    assert next(it) == "a"
    d["c"] = 3  # same thread: no race, but dict's own check fires
    with pytest.raises(RuntimeError, match="dictionary changed size during iteration") as info:
        next(it)
    assert type(info.value) is RuntimeError and info.value.__context__ is None
    # Sticky, as a plain dict's iterator: a loop that catches the error does not end
    # silently on the next next() (it used to raise StopIteration).
    for _ in range(2):
        with pytest.raises(RuntimeError, match="dictionary changed size during iteration"):
            next(it)
    assert race.reports() == []


def test_error_is_sticky_with_the_detector_on_and_off_like_a_dict() -> None:
    for on in (True, False):
        plain, d = {"a": 1, "b": 2}, race.watch({"a": 1, "b": 2}, name="m")
        outcomes = []
        for m in (plain, d):
            it = iter(m)
            next(it)
            m["c"] = 3  # type: ignore[index]
            _shadow.on = on
            try:
                outcomes.append([_outcome(it) for _ in range(3)])
            finally:
                _shadow.on = True
        assert outcomes[0] == outcomes[1] == ["RuntimeError"] * 3


def _outcome(it: Iterator[Any]) -> str:
    try:
        next(it)
    except Exception as e:
        return type(e).__name__
    return "item"


def test_cleared_span_raises_stop_iteration_instead_of_crashing() -> None:
    # tp_clear (run by the GC on a cycle) drops the span's fields; a next() after it
    # (from a weakref callback or finalizer of the cycle) must find it done. Called
    # directly through the type's slot, in a subprocess: the old code crashed there.
    code = """
import ctypes
from safemap import race
from safemap.race import _fastiter
get = ctypes.pythonapi.PyType_GetSlot
get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_int]
Py_tp_clear = 51
clear = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object)(get(_fastiter.Span, Py_tp_clear))
race.enable()
it = iter(race.watch({"a": 1, "b": 2}))
assert next(it) == "a"
assert clear(it) == 0
try:
    next(it)
except StopIteration:
    print("stopped")
"""
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "stopped"


class Colliding:
    """Keys with one hash whose ``__eq__`` raises on demand (a dict lookup that meets
    another key of the same hash calls it)."""

    explode = False

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        return 42

    def __eq__(self, other: object) -> bool:
        if Colliding.explode:
            raise KeyError("boom from __eq__")
        return self is other

    def __repr__(self) -> str:
        return self.name


def test_exception_from_a_keys_eq_in_the_shadow_lookup_ends_the_span() -> None:
    k1, k2 = Colliding("k1"), Colliding("k2")
    d = race.watch({k1: 1, k2: 2}, name="m")
    assert list(d) == [k1, k2]  # both keys now have locations in the shadow
    it = iter(d)
    assert next(it) is k1
    Colliding.explode = True
    try:
        with pytest.raises(KeyError, match="boom"):
            next(it)  # k2's lookup in ms.keys meets k1 first: k1 == k2 raises
    finally:
        Colliding.explode = False
    with pytest.raises(StopIteration):
        next(it)


class Reentrant:
    """Keys with one hash whose ``__eq__`` calls ``next()`` on the span being stepped."""

    span: ClassVar[Any] = None
    seen: ClassVar[list[BaseException]] = []

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        if Reentrant.span is not None:
            try:
                next(Reentrant.span)
            except ValueError as e:
                Reentrant.seen.append(e)
        return self is other


def test_reentrant_next_is_refused() -> None:
    k1, k2 = Reentrant(), Reentrant()
    d = race.watch({k1: 1, k2: 2}, name="m")
    list(d)
    it = iter(d)
    assert next(it) is k1
    Reentrant.span = it
    try:
        assert next(it) is k2  # k2's shadow lookup meets k1: __eq__ re-enters next()
    finally:
        Reentrant.span = None
    assert Reentrant.seen and "already executing" in str(Reentrant.seen[0])
    with pytest.raises(StopIteration):
        next(it)


# --------------------------------------------------------------- detector on/off


def test_detector_turned_off_mid_iteration_passes_items_through() -> None:
    d = race.watch({"a": 1, "b": 2, "c": 3}, name="m")
    it = iter(d.values())
    assert next(it) == 1
    st = _runtime.current()
    race.disable()
    try:
        assert next(it) == 2  # values, still: only the checks stop
        assert not read_by(d, "b", st)
        race.enable()  # a new generation: the next step checks again
        assert next(it) == 3
        assert read_by(d, "c", st)
        with pytest.raises(StopIteration):
            next(it)
    finally:
        race.enable()


def test_span_made_while_off_checks_once_turned_on() -> None:
    d = race.watch({"a": 1, "b": 2}, name="m")
    _shadow.on = False
    try:
        it = _shadow.iterate(d, d._race, "items", iter(dict.items(d)), 2)
        assert next(it) == 1
    finally:
        _shadow.on = True
    st = _runtime.current()
    assert not read_by(d, "a", st)
    assert next(it) == 2 and read_by(d, "b", st)


# ------------------------------------------------------------ references and GC


@pytest.mark.usefixtures("frozen_heap")
def test_no_reference_leak_over_a_million_items() -> None:
    d = race.watch({i: object() for i in range(1000)}, name="m")
    st = _runtime.current()
    values = list(d.values())
    before_refs = [sys.getrefcount(v) for v in values[:10]]

    def rounds(n: int) -> None:
        for r in range(n):
            mode = r % 4
            if mode == 0:
                for _ in d:
                    pass
            elif mode == 1:
                for _ in d.items():
                    pass
            elif mode == 2:
                for _ in d.values():
                    pass
            else:
                it = iter(d.items())
                next(it)
                del it  # early drop
            if r % 8 == 0:
                st.tick()  # a new epoch: the slow paths run too

    rounds(100)
    tracemalloc.start()
    try:
        rounds(100)
        gc.collect()
        first = tracemalloc.get_traced_memory()[0]
        rounds(1000)  # about a million items
        gc.collect()
        second = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert second - first < 64 * 1024, (first, second)
    assert [sys.getrefcount(v) for v in values[:10]] == before_refs
    assert race.reports() == []


def test_span_in_a_reference_cycle_is_collected_and_finalized() -> None:
    class Holder:
        it: Any

    d = race.watch({"a": 1, "b": 2}, name="m")
    h = Holder()
    h.it = iter(d)
    next(h.it)
    d["h"] = h  # d -> h -> span -> d
    assert d in gc.get_referents(h.it)
    unraisable: list[Any] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        ref = weakref.ref(h)
        del h, d
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert ref() is None
    assert unraisable == []
    assert race.reports() == []


def test_span_garbage_collected_on_another_thread_state() -> None:
    # A cycle holding a started span, collected while a worker runs: whichever thread
    # collects, the drop is no access (no report, no error).
    class Holder:
        it: Any

    d = race.watch({"a": 1, "b": 2}, name="m")
    h = Holder()
    h.it = iter(d)
    next(h.it)
    h.self = h  # type: ignore[attr-defined]
    ref = weakref.ref(h)
    del h
    errors: list[BaseException] = []

    def body() -> None:
        try:
            gc.collect()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    gc.collect()
    assert ref() is None and errors == []
    assert race.reports() == []
