"""A watched map is exactly as safe as the map it wraps, whatever the detector's state:
an operation that is one atomic call on the flavor (``popitem``, ``pop``, ``setdefault``,
``update``, a ``defaultdict`` miss) stays one on the watched map, under real threads.

Each test runs with the detector off and on (``detect()`` collects, and then ignores, the
races the hammering itself creates: they are real races, just not the point here)."""

from __future__ import annotations

import sys
import threading
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest

from safemap import race

THREADS = 4
JOIN_TIMEOUT = 60.0

pytestmark = pytest.mark.safemap_race_expected  # the hammering races on purpose


@pytest.fixture(autouse=True)
def _fast_switches() -> Iterator[None]:
    # On the GIL build, switch threads as often as possible so that a non-atomic
    # sequence is interleaved (free-threaded builds interleave anyway).
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.fixture(params=["off", "on"])
def detector_state(request: pytest.FixtureRequest) -> Callable[[], AbstractContextManager[Any]]:
    was = race.enabled()
    race.disable()
    yield (lambda: race.detect()) if request.param == "on" else nullcontext
    if was:
        race.enable()


def hammer(*bodies: Callable[[], None]) -> None:
    """Run each body in its own thread; re-raise the first exception any of them hit."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(bodies))

    def run(body: Callable[[], None]) -> None:
        try:
            start.wait()
            body()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
        assert not t.is_alive(), "deadlock guard: a thread did not finish"
    if errors:
        raise errors[0]


FLAVORS = [dict, OrderedDict]


@pytest.mark.parametrize("flavor", FLAVORS, ids=lambda f: f.__name__)
def test_concurrent_popitem_never_fails_on_a_non_empty_map(
    flavor: type, detector_state: Callable[[], AbstractContextManager[Any]]
) -> None:
    per_thread, rounds = 200, 10
    with detector_state():
        for _ in range(rounds):
            d = race.watch(flavor((i, i) for i in range(THREADS * per_thread)))
            popped: list[list[Any]] = [[] for _ in range(THREADS)]

            def body(out: list[Any], d: Any = d) -> None:
                for _ in range(per_thread):
                    out.append(d.popitem())  # the map never runs dry: never a KeyError

            hammer(*(lambda out=out: body(out) for out in popped))
            pairs = [p for out in popped for p in out]
            assert len(d) == 0
            assert sorted(pairs) == [(i, i) for i in range(THREADS * per_thread)]


def test_ordereddict_popitem_last_false_and_pop_are_atomic(
    detector_state: Callable[[], AbstractContextManager[Any]],
) -> None:
    n = 400
    with detector_state():
        for _ in range(10):
            od = race.watch(OrderedDict((i, i) for i in range(2 * n)))
            got: list[Any] = []

            def front(od: Any = od, got: list[Any] = got) -> None:
                for _ in range(n // 2):
                    got.append(od.popitem(last=False)[0])

            def by_key(od: Any = od, got: list[Any] = got) -> None:
                for k in range(n, 2 * n):  # the back half: the front never runs dry
                    v = od.pop(k, None)  # never a KeyError, whoever took it first
                    if v is not None:
                        got.append(v)

            hammer(front, front, by_key, by_key)
            assert len(od) == 0 and sorted(got) == list(range(2 * n))


@pytest.mark.parametrize("flavor", FLAVORS, ids=lambda f: f.__name__)
def test_setdefault_inserts_once_whoever_wins(
    flavor: type, detector_state: Callable[[], AbstractContextManager[Any]]
) -> None:
    keys = 300
    with detector_state():
        for _ in range(10):
            d = race.watch(flavor())
            seen: list[list[Any]] = [[] for _ in range(THREADS)]

            def body(me: int, d: Any = d, seen: list[list[Any]] = seen) -> None:
                for k in range(keys):
                    seen[me].append(d.setdefault(k, me))

            hammer(*(lambda me=me: body(me) for me in range(THREADS)))
            for k in range(keys):
                # Every caller got the one value that was stored: none was overwritten.
                assert {seen[me][k] for me in range(THREADS)} == {d[k]}


def test_defaultdict_miss_keeps_a_value_stored_meanwhile(
    detector_state: Callable[[], AbstractContextManager[Any]],
) -> None:
    keys = 300
    with detector_state():
        for _ in range(10):
            dd = race.watch(defaultdict(lambda: object()))
            seen: list[list[Any]] = [[] for _ in range(THREADS)]

            def body(me: int, dd: Any = dd, seen: list[list[Any]] = seen) -> None:
                for k in range(keys):
                    seen[me].append(dd[k])

            hammer(*(lambda me=me: body(me) for me in range(THREADS)))
            for k in range(keys):
                assert all(seen[me][k] is dd[k] for me in range(THREADS))


def test_update_is_one_step_for_a_snapshot(
    detector_state: Callable[[], AbstractContextManager[Any]],
) -> None:
    # dict.update is one C call; OrderedDict.update of a subclass is a Python-level loop
    # of __setitem__ calls, for a plain subclass too (documented in docs/race.md).
    n = 3000
    with detector_state():
        d = race.watch(dict(a=0, b=0, c=0))
        stop = threading.Event()

        def writer() -> None:
            try:
                for i in range(n):
                    d.update({"a": i, "b": i, "c": i})
            finally:
                stop.set()

        torn: list[dict[str, int]] = []

        def reader() -> None:
            while not stop.is_set():
                snap = d.copy()  # one C-level read of the whole map
                if len(set(snap.values())) != 1:
                    torn.append(snap)

        hammer(writer, reader)
        assert torn == []


def test_counter_merges_keep_their_multiset_meaning() -> None:
    c = race.watch(Counter(a=5, b=1))
    c |= Counter(a=3, c=2)
    assert c == Counter(a=5, b=1, c=2) and race.is_watched(c)
    assert c | Counter(a=9) == Counter(a=9, b=1, c=2)
    assert Counter(b=4) | c == Counter(a=5, b=4, c=2)
    empty = race.watch(Counter())
    empty.update({"x": 2})
    empty.update("xy")
    assert empty == Counter(x=3, y=1)


def test_items_view_membership_never_fails_while_the_key_comes_and_goes(
    detector_state: Callable[[], AbstractContextManager[Any]],
) -> None:
    n = 20000
    with detector_state():
        d = race.watch({"k": 1})
        stop = threading.Event()

        def toggler() -> None:
            try:
                for _ in range(n):
                    d.pop("k", None)
                    d["k"] = 1
            finally:
                stop.set()

        def member() -> None:
            while not stop.is_set():
                ("k", 1) in d.items()  # noqa: B015 - True or False, never KeyError

        hammer(toggler, member)


def test_values_view_membership_never_fails_while_keys_come_and_go(
    detector_state: Callable[[], AbstractContextManager[Any]],
) -> None:
    n = 20000
    with detector_state():
        d = race.watch({i: i for i in range(50)})
        stop = threading.Event()

        def toggler() -> None:
            try:
                for i in range(n):
                    d.pop(i % 50, None)
                    d[i % 50] = i % 50
            finally:
                stop.set()

        def member() -> None:
            while not stop.is_set():
                -1 in d.values()  # noqa: B015 - always False, never an exception

        hammer(toggler, member)
