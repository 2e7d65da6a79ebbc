"""@safemap.cached's C call path (CachedFunction, docs/cache.md "@cached"): the same keys
as lru_cache's key function, counts that stay exact under threads, function-like binding,
pickling by reference, single-flight through the C miss path."""

from __future__ import annotations

import copy
import functools
import gc
import pickle
import sys
import threading
import time
import weakref
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import safemap
from safemap import RecursiveUpdateError
from safemap.native._core import CachedFunction
from safemap.protocol.singleflight import flights

# Arguments whose equalities cross types (1 == 1.0 == True, "a" != b"a"), plus tuples,
# None and frozensets, in positional and keyword position.
ATOMS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 2.5, True, False, None, "a", "b", b"a", (1,), (1, 2)]),
    st.frozensets(st.integers(0, 2), max_size=2),
)
CALLS = st.lists(
    st.tuples(
        st.lists(ATOMS, max_size=3),
        st.dictionaries(st.sampled_from(["x", "y", "z"]), ATOMS, max_size=2),
    ),
    max_size=25,
)


def _lru_key(args: tuple[Any, ...], kwargs: dict[str, Any], typed: bool) -> Any:
    # lru_cache's own key function, without its int/str shortcut (which makes f(1) and
    # f(1.0) two entries there, by accident of the shortcut: docs/cache.md).
    return functools._make_key(args, kwargs, typed, fasttypes=frozenset())  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None)
@given(calls=CALLS, typed=st.booleans())
def test_hits_and_misses_are_those_of_lru_caches_key(
    calls: list[tuple[list[Any], dict[str, Any]]], typed: bool
) -> None:
    ran: list[Any] = []

    @safemap.cached(maxsize=None, typed=typed)
    def f(*args: Any, **kwargs: Any) -> Any:
        ran.append((args, kwargs))
        return len(ran)

    assert type(f) is CachedFunction
    seen: dict[Any, int] = {}
    for args, kwargs in calls:
        key = _lru_key(tuple(args), kwargs, typed)
        expected_miss = key not in seen
        before = len(ran)
        result = f(*args, **kwargs)
        assert (len(ran) > before) == expected_miss, (args, kwargs, typed)
        seen.setdefault(key, result)
        assert result == seen[key]
    info = f.cache_info()
    assert (info.hits, info.misses, info.currsize) == (
        len(calls) - len(seen),
        len(seen),
        len(seen),
    )


def test_make_key_agrees_with_the_call_path() -> None:
    """The async wrapper keys by CachedFunction._make_key: the same keys as the C calls."""

    @safemap.cached(maxsize=None)
    def f(*args: Any, **kwargs: Any) -> Any:
        return args, kwargs

    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1,), {}),
        ((1, "a"), {}),
        ((), {"x": 1}),
        ((2,), {"y": (1,), "x": 3}),
        (((1,),), {}),
    ]
    for args, kwargs in cases:
        f(*args, **kwargs)
    assert set(f.cache.keys()) == {CachedFunction._make_key(a, k, False) for a, k in cases}


def test_unhashable_arguments_raise_and_are_not_counted() -> None:
    """lru_cache counts nothing for a call it cannot key; the Python wrapper before this
    counted it as a hit."""

    @safemap.cached
    def f(*args: Any, **kwargs: Any) -> int:
        return 1

    with pytest.raises(TypeError):
        f([1])
    with pytest.raises(TypeError):
        f(1, x={})
    assert f.cache_info() == safemap.CacheInfo(0, 0, 128, 0)
    assert f(1) == 1 and f(1) == 1
    assert f.cache_info() == safemap.CacheInfo(1, 1, 128, 1)


def test_wrapper_attributes_binding_pickling_and_copies() -> None:
    @safemap.cached(maxsize=4)
    def square(x: int) -> int:
        """Square it."""
        return x * x

    square.extra = "kept"  # type: ignore[attr-defined]
    assert square.__wrapped__(3) == 9 and square.__name__ == "square"
    assert square.__doc__ == "Square it." and square.__qualname__.endswith("square")
    for name in functools.WRAPPER_ASSIGNMENTS:  # what update_wrapper copies on this version
        if hasattr(square.__wrapped__, name):
            assert getattr(square, name) == getattr(square.__wrapped__, name), name
    assert square.extra == "kept"  # type: ignore[attr-defined]
    assert copy.copy(square) is square and copy.deepcopy(square) is square
    assert square.cache_parameters() == {
        "maxsize": 4,
        "typed": False,
        "ttl": None,
        "policy": "tinylfu",
    }

    class A:
        def __init__(self, n: int) -> None:
            self.n = n
            self.runs = 0

        @safemap.cached(maxsize=8)
        def double(self, k: int = 1) -> int:
            self.runs += 1
            return 2 * self.n * k

    a, b = A(1), A(5)
    assert A.double is A.__dict__["double"]  # looked up on the class: the function itself
    bound = a.double
    assert bound.__self__ is a and bound() == 2
    assert [a.double(), a.double(k=1), b.double(), A.double(a)] == [2, 2, 10, 2]
    assert (a.runs, b.runs) == (2, 1)  # a.double() and a.double(k=1) are two keys
    assert A.double.cache_info().hits == 2


def double_it(x: int) -> int:
    return 2 * x


cached_double_it = safemap.cached(double_it)


def test_pickles_by_reference_as_lru_cache_wrappers_do() -> None:
    global double_it
    original = double_it
    double_it = cached_double_it  # type: ignore[assignment]
    try:
        assert pickle.loads(pickle.dumps(cached_double_it)) is cached_double_it
    finally:
        double_it = original


def test_recursion_on_the_same_arguments_is_refused() -> None:
    @safemap.cached
    def f(n: int) -> int:
        return f(n) if n == 0 else (f(n - 1) + 1 if n > 0 else 0)

    with pytest.raises(RecursiveUpdateError):
        f(0)
    assert f(-1) == 0
    assert f.cache_info().currsize == 1  # the failed call stored nothing


def test_exceptions_are_not_cached_and_counted_as_runs() -> None:
    outcomes = iter([KeyError("first"), ValueError("second"), 3])

    @safemap.cached
    def f(x: int) -> int:
        o = next(outcomes)
        if isinstance(o, Exception):
            raise o
        return o

    with pytest.raises(KeyError):
        f(1)
    with pytest.raises(ValueError):
        f(x=1)
    assert f(1) == 3 and f(1) == 3
    assert f.cache_info() == safemap.CacheInfo(1, 3, 128, 1)
    stats = f.cache.stats()
    assert (stats.loads, stats.load_failures) == (1, 2)


def test_cache_info_is_exact_under_eight_threads(run_threads: Any) -> None:
    """8 threads, hits and misses (a small cache evicts, so keys miss again): hits + misses
    is every call, misses is every run of the function."""
    runs = Counter[int]()
    lock = threading.Lock()
    calls_per_thread = 3000

    @safemap.cached(maxsize=16)
    def f(x: int) -> int:
        with lock:
            runs[x] += 1
        return x * 3

    def work(i: int) -> int:
        wrong = 0
        for j in range(calls_per_thread):
            x = (j * (i + 1)) % 40 if j % 3 else j % 4
            wrong += f(x) != x * 3
        return wrong

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        assert run_threads(work, 8, timeout=120) == [0] * 8
    finally:
        sys.setswitchinterval(old)
    info = f.cache_info()
    assert info.hits + info.misses == 8 * calls_per_thread
    assert info.misses == sum(runs.values())
    assert info.currsize <= 16


def test_a_stampede_of_1000_threads_runs_the_function_once(run_threads: Any) -> None:
    runs: list[int] = []
    entered = threading.Event()
    release = threading.Event()

    @safemap.cached(maxsize=8)
    def slow(x: int) -> list[int]:
        runs.append(x)
        entered.set()
        assert release.wait(60)
        return [x]

    def work(i: int) -> list[int]:
        if i == 0:
            assert entered.wait(60)
            # every other thread is either waiting for the flight or about to find the value
            threading.Timer(0.2, release.set).start()
        return slow(7)

    out = run_threads(work, 1000, timeout=180)
    assert runs == [7]
    assert all(r is out[0] for r in out)
    info = slow.cache_info()
    assert (info.hits, info.misses) == (999, 1)


def test_a_failure_reaches_every_waiter_and_is_not_cached(run_threads: Any) -> None:
    runs: list[int] = []
    entered = threading.Event()
    release = threading.Event()

    @safemap.cached
    def fail(x: int) -> int:
        runs.append(x)
        entered.set()
        assert release.wait(60)
        raise LookupError("backend down")

    def work(i: int) -> str:
        if i == 0:
            assert entered.wait(60)
            threading.Timer(0.2, release.set).start()
        try:
            fail(1)
        except LookupError as exc:
            return str(exc)
        return "no error"

    out = run_threads(work, 16, timeout=120)
    assert len(runs) >= 1 and out == ["backend down"] * 16
    assert len(fail.cache) == 0
    info = fail.cache_info()
    assert info.misses == len(runs) and info.hits == 16 - len(runs)


def test_a_miss_brings_in_no_futures_or_asyncio() -> None:
    """A flight is a list of wake-ups, not a concurrent.futures.Future: loading through
    @cached or get_or_compute imports neither concurrent.futures nor asyncio."""
    import json
    import subprocess

    probe = (
        "import sys, json, safemap\n"
        "f = safemap.cached(maxsize=4)(lambda x: x)\n"
        "assert [f(1), f(1), f(x=2)] == [1, 1, 2]\n"
        "c = safemap.Cache(4)\n"
        "assert c.get_or_compute('k', str.upper) == 'K'\n"
        "m = safemap.ConcurrentMap()\n"
        "assert m.get_or_compute('k', str.upper) == 'K'\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded = json.loads(out.splitlines()[-1])
    assert [name for name in ("concurrent.futures", "asyncio") if name in loaded] == []


def test_async_wrapper_keys_and_counts_like_the_sync_one() -> None:
    import asyncio

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1,), {}),
        ((1.0,), {}),
        ((1,), {"x": 2}),
        ((), {"x": 2, "y": 3}),
        ((), {"y": 3, "x": 2}),
        ((1,), {}),
    ]

    def sync_f(*args: Any, **kwargs: Any) -> int:
        return 0

    async def async_f(*args: Any, **kwargs: Any) -> int:
        return 0

    for typed in (False, True):
        s = safemap.cached(maxsize=None, typed=typed)(sync_f)
        a = safemap.cached(maxsize=None, typed=typed)(async_f)

        async def main(a: Any = a) -> None:
            for args, kwargs in calls:
                await a(*args, **kwargs)
            with pytest.raises(TypeError):
                await a([1])

        asyncio.run(main())
        for args, kwargs in calls:
            s(*args, **kwargs)
        with pytest.raises(TypeError):
            s([1])
        assert set(a.cache.keys()) == set(s.cache.keys())
        assert a.cache_info() == s.cache_info()
        assert s.cache_info().hits == (1 if typed else 2)  # f(1.0) hits f(1) unless typed


def test_a_miss_keeps_no_reference_to_the_value_it_loaded() -> None:
    # the sync wrapper's miss path reuses its flight objects (GIL builds): a reused flight
    # must not hold the last value it carried, or an evicted value would stay alive
    class Box:
        pass

    made: list[weakref.ref[Box]] = []

    @safemap.cached(maxsize=1)
    def f(k: int) -> Box:
        b = Box()
        made.append(weakref.ref(b))
        return b

    f(1)
    f(2)  # evicts f(1)'s value
    f(3)  # evicts f(2)'s value
    gc.collect()
    assert [r() is None for r in made] == [True, True, False]
    f.cache_clear()
    gc.collect()
    assert made[2]() is None


def test_a_waiter_on_a_load_owned_by_the_native_path_gets_its_value() -> None:
    # the owner runs in C; a caller arriving during its run waits through the Python
    # single-flight code on the same flight: both get the one value, the function ran once
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    @safemap.cached(maxsize=8)
    def slow(k: int) -> object:
        runs.append(k)
        started.set()
        assert release.wait(30)
        return object()

    got: list[object] = []

    def owner() -> None:
        got.append(slow(7))

    def waiter() -> None:
        assert started.wait(30)
        got.append(slow(7))

    t1 = threading.Thread(target=owner)
    t2 = threading.Thread(target=waiter)
    t1.start()
    t2.start()
    assert started.wait(30)
    table = flights(slow.cache)
    deadline = time.monotonic() + 30
    while not table[7].waiters:  # the waiter is waiting on the owner's flight
        assert time.monotonic() < deadline, "the waiter never reached the flight"
        time.sleep(0.001)
    release.set()
    t1.join(30)
    t2.join(30)
    assert not t1.is_alive() and not t2.is_alive()
    assert runs == [7]
    assert len(got) == 2 and got[0] is got[1]
    assert slow.cache_info().misses == 1 and slow.cache_info().hits == 1


def test_a_flight_reused_on_another_thread_is_that_thread_s_load() -> None:
    # GIL builds reuse a landed flight for the next miss (and keep its owner's identity
    # when the same thread misses again): reused on another thread, the flight must name
    # that thread, or the first thread, waiting for it, would take the load for its own
    # and be refused as a recursive call
    started, release = threading.Event(), threading.Event()

    @safemap.cached(maxsize=8)
    def f(k: int) -> object:
        if k == 2:
            started.set()
            assert release.wait(30)
        return object()

    f(1)  # a miss on this thread: its flight is kept for the next miss
    got: dict[str, object] = {}
    loader = threading.Thread(target=lambda: got.setdefault("loader", f(2)))
    loader.start()
    assert started.wait(30)
    flight = flights(f.cache)[2]
    assert flight.thread == loader.ident
    waiting = threading.Timer(0.05, release.set)
    waiting.start()
    got["waiter"] = f(2)  # waits for the loader's load, then shares its value
    loader.join(30)
    waiting.join(30)
    assert not loader.is_alive()
    assert got["waiter"] is got["loader"]
    assert f.cache_info().misses == 2 and f.cache_info().hits == 1
