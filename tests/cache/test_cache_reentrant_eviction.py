"""A full Cache written to from the places eviction runs user code: ``on_evict``, the
``__del__`` of the values it releases, a key's ``__eq__`` and the ``weigher``. Hypothesis
generates the programs; whatever they do, the cache keeps its guarantees: never more than
``maxsize`` entries as seen from anywhere (the hooks included), ``on_evict`` once per
evicted value, exact statistics, no reference kept to what left, and no error but the
``RecursiveUpdateError`` of a write from inside a write."""

from __future__ import annotations

import gc
import sys
import weakref
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safemap import Cache, RecursiveUpdateError

MAXSIZE = 3
NKEYS = 6
OPS = ("store", "get", "delete", "load_or_store", "compute", "compute_if_absent", "swap")
# what a hook does to the cache: nothing, a read, or a write of a key
ACTIONS = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from(("get", "store", "delete", "len", "iter")), st.integers(0, NKEYS - 1)
    ),
)


@dataclass
class Step:
    op: str
    key: int
    eq_action: Any  # run by the key's __eq__ (when compared)
    del_action: Any  # run by the __del__ of the value this step stores
    policy_lru: bool = False


class Watch:
    """What the hooks saw and did."""

    def __init__(self) -> None:
        self.cache: Cache[Any, Any] | None = None
        self.evicted: list[int] = []  # serial numbers of the values on_evict got
        self.sizes: list[int] = []  # len() seen from inside hooks
        self.errors: list[BaseException] = []
        self.refused = 0
        self.depth = 0

    def act(self, action: Any) -> None:
        c = self.cache
        if action is None or c is None or self.depth > 2:
            return
        kind, k = action
        self.depth += 1
        try:
            if kind == "get":
                c.get(K(k, None))
            elif kind == "store":
                c[K(k, None)] = V(None, self)
            elif kind == "delete":
                c.pop(K(k, None), None)
            elif kind == "len":
                self.sizes.append(len(c))
            else:
                self.sizes.append(sum(1 for _ in c))
        except RecursiveUpdateError:
            self.refused += 1  # a write from inside one of the cache's writes
        except BaseException as exc:  # anything else is a failure, reported below
            self.errors.append(exc)
        finally:
            self.depth -= 1


WATCH: Watch | None = None


class K:
    """A key equal to the other keys of its number; its __eq__ may act on the cache."""

    def __init__(self, i: int, action: Any) -> None:
        self.i, self.action = i, action

    def __hash__(self) -> int:
        return self.i % 2  # collisions: lookups compare keys

    def __eq__(self, other: object) -> bool:
        if self.action is not None and WATCH is not None:
            action, self.action = self.action, None  # once
            WATCH.act(action)
        return isinstance(other, K) and other.i == self.i


class V:
    """A value whose __del__ may act on the cache."""

    made = 0

    def __init__(self, action: Any, watch: Watch) -> None:
        self.action, self.watch = action, watch
        V.made += 1
        self.n = V.made  # not id(): a freed value's id is reused

    def __del__(self) -> None:
        if self.action is not None:
            self.watch.act(self.action)


@st.composite
def programs(draw: st.DrawFn) -> tuple[bool, list[Step], Any]:
    lru = draw(st.booleans())
    steps = draw(
        st.lists(
            st.builds(
                Step,
                op=st.sampled_from(OPS),
                key=st.integers(0, NKEYS - 1),
                eq_action=ACTIONS,
                del_action=ACTIONS,
            ),
            min_size=1,
            max_size=25,
        )
    )
    on_evict_action = draw(ACTIONS)
    return lru, steps, on_evict_action


# frozen_heap spans the examples on purpose: each ends with a full collection.
@pytest.mark.usefixtures("frozen_heap")
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(prog=programs())
def test_hooks_writing_to_a_full_cache_keep_its_guarantees(
    prog: tuple[bool, list[Step], Any],
) -> None:
    global WATCH
    lru, steps, on_evict_action = prog
    watch = Watch()

    def on_evict(key: Any, value: Any, cause: str) -> None:
        assert cause == "size"
        watch.evicted.append(value.n)
        watch.sizes.append(len(watch.cache))  # type: ignore[arg-type]
        watch.act(on_evict_action)

    c: Cache[Any, Any] = Cache(MAXSIZE, policy="lru" if lru else "tinylfu", on_evict=on_evict)
    watch.cache = c
    WATCH = watch
    refs: list[weakref.ref[V]] = []
    old_hook = sys.unraisablehook
    unraisable: list[Any] = []
    sys.unraisablehook = lambda u: unraisable.append(u.exc_value)
    try:
        for s in steps:
            key = K(s.key, s.eq_action)
            value = V(s.del_action, watch)
            refs.append(weakref.ref(value))
            try:
                if s.op == "store":
                    c[key] = value
                elif s.op == "get":
                    c.get(key)
                elif s.op == "delete":
                    c.pop(key, None)
                elif s.op == "load_or_store":
                    c.load_or_store(key, value)
                elif s.op == "compute":
                    c.compute(key, lambda k, old, value=value: value)
                elif s.op == "compute_if_absent":
                    c.compute_if_absent(key, lambda k, value=value: value)
                else:
                    c.swap(key, value)
            except RecursiveUpdateError:
                watch.refused += 1  # from a key's __eq__ during the write
            del value, key
            assert len(c) <= MAXSIZE
    finally:
        WATCH = None
        sys.unraisablehook = old_hook
    assert not unraisable, unraisable
    assert not watch.errors, watch.errors
    assert all(n <= MAXSIZE for n in watch.sizes)
    # on_evict once per evicted value
    assert len(set(watch.evicted)) == len(watch.evicted)
    s = c.stats()
    assert s.evictions_size == len(watch.evicted)
    items = dict(c.items())
    assert len(items) == len(c) <= MAXSIZE
    assert s.inserts - s.deletes == len(items)
    del items
    # no reference kept to what left: once the cache is cleared, every value is gone
    # (values stored while clearing are cleared by the second call)
    watch.cache = None
    c.clear()
    c.clear()
    gc.collect()
    assert [r for r in refs if r() is not None] == []


def test_the_program_runner_sees_an_on_evict_hook_write() -> None:
    """The harness itself: a store from on_evict lands (so the property test's hooks do
    run and write)."""
    stored: list[Any] = []

    def on_evict(key: Any, value: Any, cause: str) -> None:
        if not stored:
            stored.append(key)
            c["extra"] = 1

    c: Cache[Any, Any] = Cache(2, policy="lru", on_evict=on_evict)
    for k in range(3):
        c[k] = k
    assert stored == [0]
    assert "extra" in c and len(c) == 2


@pytest.mark.parametrize("policy", ["lru", "tinylfu"])
def test_a_value_del_writing_to_the_cache_during_eviction(policy: str) -> None:
    watch = Watch()
    c: Cache[Any, Any] = Cache(2, policy=policy)
    watch.cache = c
    for k in range(2):
        c[K(k, None)] = V(("store", 5), watch)
    for k in range(2, 8):
        c[K(k, None)] = V(None, watch)
        assert len(c) <= 2
    assert not watch.errors
    assert watch.refused == 0  # __del__ runs after the write released the lock
