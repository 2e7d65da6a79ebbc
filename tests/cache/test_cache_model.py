"""State-machine tests of safemap.Cache against a model: exact for policy="lru" (an
OrderedDict LRU), invariants for W-TinyLFU (bound, values, statistics)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import safemap

KEYS = st.integers(0, 12)
VALUES = st.integers(0, 3)


class LRUModel(RuleBasedStateMachine):
    """Single-threaded, every recorded read reaches the policy before the next write, so
    the cache is exactly an LRU of maxsize entries."""

    def __init__(self) -> None:
        super().__init__()
        self.maxsize = 4
        self.evicted: list[tuple[Any, Any, str]] = []
        self.cache: safemap.Cache[int, Any] = safemap.Cache(
            self.maxsize, policy="lru", on_evict=lambda *a: self.evicted.append(a)
        )
        self.model: OrderedDict[int, Any] = OrderedDict()
        self.expected_evicted: list[tuple[Any, Any, str]] = []
        self.hits = self.misses = 0

    def _put(self, k: int, v: Any) -> None:
        if k in self.model and self.model[k] is v:
            return  # the very object: nothing changes (not even the recency)
        self.model[k] = v
        self.model.move_to_end(k)
        while len(self.model) > self.maxsize:
            ek, ev = self.model.popitem(last=False)
            self.expected_evicted.append((ek, ev, "size"))

    @rule(k=KEYS, v=VALUES)
    def store(self, k: int, v: int) -> None:
        value = ("v", v)  # a fresh object per store
        self.cache[k] = value
        self._put(k, value)

    @rule(k=KEYS)
    def get(self, k: int) -> None:
        got = self.cache.get(k, "absent")
        if k in self.model:
            assert got is self.model[k]
            self.model.move_to_end(k)
            self.hits += 1
        else:
            assert got == "absent"
            self.misses += 1

    @rule(k=KEYS)
    def delete(self, k: int) -> None:
        got = self.cache.pop(k, "absent")
        assert got is self.model.pop(k, "absent")

    @rule(k=KEYS, v=VALUES)
    def compute(self, k: int, v: int) -> None:
        made: list[Any] = []

        def fn(_: int, old: Any) -> Any:
            assert old is self.model.get(k, safemap.MISSING)
            made.append(safemap.DELETE if v == 0 else ("c", v, old))
            return made[0]

        self.cache.compute(k, fn)
        if v == 0:
            self.model.pop(k, None)
        else:
            self._put(k, made[0])

    @rule(k=KEYS, v=VALUES)
    def compute_if_absent(self, k: int, v: int) -> None:
        # present: a use of the entry, like a hit (but not a point read: no statistic)
        made = safemap.DELETE if v == 0 else ("a", v)
        got = self.cache.compute_if_absent(k, lambda _: made)
        if k in self.model:
            assert got is self.model[k]
            self.model.move_to_end(k)
        elif v == 0:
            assert got is None
        else:
            assert got is made
            self._put(k, made)

    @rule(k=KEYS)
    def compute_keeping(self, k: int) -> None:
        # a callback returning the very value stored leaves the entry: a use of it
        def keep(_: int, old: Any) -> Any:
            return safemap.DELETE if old is safemap.MISSING else old

        self.cache.compute(k, keep)
        if k in self.model:
            self.model.move_to_end(k)

    @rule(k=KEYS, v=VALUES)
    def compute_if_present(self, k: int, v: int) -> None:
        made = ("p", v)
        got = self.cache.compute_if_present(k, lambda _, old: old if v == 0 else made)
        if k not in self.model:
            assert got is None
        elif v == 0:
            assert got is self.model[k]
            self.model.move_to_end(k)
        else:
            assert got is made
            self._put(k, made)

    @rule(k=KEYS, v=VALUES)
    def merge(self, k: int, v: int) -> None:
        given = ("m", v)
        got = self.cache.merge(k, given, lambda old, new: old if v == 0 else ("m2", old))
        if k not in self.model:
            assert got is given
            self._put(k, given)
        elif v == 0:
            assert got is self.model[k]
            self.model.move_to_end(k)
        else:
            assert got[0] == "m2" and got[1] is self.model[k]
            self._put(k, got)

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self) -> None:
        self.cache.clear()
        self.model.clear()

    @invariant()
    def same_contents_and_evictions(self) -> None:
        assert dict(self.cache.items()) == dict(self.model)
        assert len(self.cache) == len(self.model) <= self.maxsize
        assert self.evicted == self.expected_evicted
        s = self.cache.stats()
        assert (s.hits, s.misses) == (self.hits, self.misses)
        assert s.evictions_size == len(self.expected_evicted)


class TinyLFUInvariants(RuleBasedStateMachine):
    """W-TinyLFU decides by frequency: the model checks what must hold whatever it keeps."""

    def __init__(self) -> None:
        super().__init__()
        self.maxsize = 5
        self.evicted: list[tuple[Any, Any, str]] = []
        self.cache: safemap.Cache[int, Any] = safemap.Cache(
            self.maxsize, on_evict=lambda *a: self.evicted.append(a)
        )
        self.latest: dict[int, Any] = {}  # last value written per key (not deleted)

    @rule(k=KEYS, v=VALUES)
    def store(self, k: int, v: int) -> None:
        value = ("v", v)
        self.cache[k] = value
        self.latest[k] = value

    @rule(k=KEYS)
    def get(self, k: int) -> None:
        got = self.cache.get(k, "absent")
        assert got == "absent" or got is self.latest[k]

    @rule(k=KEYS)
    def delete(self, k: int) -> None:
        self.cache.pop(k, None)
        self.latest.pop(k, None)

    @invariant()
    def bounded_and_current(self) -> None:
        items = dict(self.cache.items())
        assert len(items) == len(self.cache) <= self.maxsize
        assert all(v is self.latest[k] for k, v in items.items())
        s = self.cache.stats()
        assert s.inserts - s.deletes == len(items)
        assert s.evictions_size == len(self.evicted)
        # each eviction removed a value that was current when evicted, once
        assert len({id(v) for _, v, _ in self.evicted}) == len(self.evicted)


TestLRUModel = LRUModel.TestCase
TestLRUModel.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
TestTinyLFUInvariants = TinyLFUInvariants.TestCase
TestTinyLFUInvariants.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
