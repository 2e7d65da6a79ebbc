"""safemap.Cache's write path (docs/cache.md, "Measured"): what an insert into a full
cache does -- expire, install, evict, release after the unlock -- checked against an exact
model (write order and expiry with a ttl, without one), with evictions that outgrow the
write's inline storage, and under racing writers. Each test asserts what the path's fast
cases (the write-order links touched only with a ttl, the on_evict bookkeeping skipped
without a callback, the grave's room checked inline) must not change."""

from __future__ import annotations

import gc
import threading
import weakref
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import safemap

TTL = 5
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("store"), st.integers(0, 7), st.integers(0, 2)),
        st.tuples(st.just("delete"), st.integers(0, 7), st.just(0)),
        st.tuples(st.just("tick"), st.integers(1, 4), st.just(0)),
    ),
    max_size=60,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("ttl", [None, TTL])
@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_writes_match_a_write_order_model(ttl: int | None, ops: list[tuple[str, int, int]]) -> None:
    """policy="lru" with writes only is exactly a bounded list in write order: every write
    first removes what expired (oldest first, cause "expired"), a store of a new value
    moves its key to the newest end with a new deadline (the very same object changes
    nothing), and the oldest entries leave (cause "size") until maxsize fits. Contents,
    on_evict calls (each entry once, in order) and eviction counts are exact."""
    clock = Clock()
    evicted: list[tuple[Any, Any, str]] = []
    m: safemap.Cache[int, Any] = safemap.Cache(
        3, policy="lru", ttl=ttl, timer=clock, on_evict=lambda *a: evicted.append(a)
    )
    values = [object(), object(), object()]  # distinct objects: a store is a change
    model: OrderedDict[int, tuple[Any, float]] = OrderedDict()  # key -> (value, deadline)
    expected: list[tuple[Any, Any, str]] = []

    def expire(key: int | None = None) -> None:
        """Remove what expired: all of it (a store), or only `key` (a delete's lookup)."""
        if ttl is None:
            return
        for k, (v, deadline) in list(model.items()):
            if clock.now >= deadline and (key is None or k == key):
                del model[k]
                expected.append((k, v, "expired"))

    for op, a, b in ops:
        if op == "tick":
            clock.now += a
        elif op == "store":
            expire()
            value = values[b]
            m.store(a, value)
            if a in model and model[a][0] is value:
                continue
            model.pop(a, None)
            model[a] = (value, clock.now + (ttl or 0))
            while len(model) > 3:
                k, (v, _) = model.popitem(last=False)
                expected.append((k, v, "size"))
        else:
            expire(a)
            present = a in model
            if present:
                del model[a]
                del m[a]
            else:
                with pytest.raises(KeyError):
                    del m[a]
        assert evicted == expected
    live = {k: v for k, (v, deadline) in model.items() if ttl is None or clock.now < deadline}
    assert dict(m.snapshot()) == live
    st_ = m.stats()
    assert st_.evictions_size == sum(1 for e in expected if e[2] == "size")
    assert st_.evictions_expired == sum(1 for e in expected if e[2] == "expired")


class Value:
    """A value whose release a weak reference observes."""


@pytest.mark.parametrize("policy", ["lru", "tinylfu"])
@pytest.mark.parametrize("callback", [True, False])
def test_one_insert_evicting_many_entries(policy: str, callback: bool) -> None:
    """An entry as heavy as maxsize evicts every other entry in one write under "lru"
    (far more removed references than a write keeps without allocating); under
    "tinylfu" it is admitted or not. Either way each evicted entry is reported once
    (with a callback), the bound holds, and once the write has returned the cache holds
    no reference to what it removed."""
    evicted: list[tuple[int, str]] = []  # not the values: their release is checked
    weights: dict[int, int] = {}
    m: safemap.Cache[int, Any] = safemap.Cache(
        40,
        policy=policy,
        weigher=lambda k, v: weights[k],
        on_evict=(lambda k, v, cause: evicted.append((k, cause))) if callback else None,
    )
    refs = []
    for k in range(40):
        weights[k] = 1
        v = Value()
        refs.append(weakref.ref(v))
        m.store(k, v)
        del v
    assert len(m) == 40
    for round_ in range(3):
        heavy = 100 + round_
        weights[heavy] = 40
        m.store(heavy, Value())
        live = dict(m.snapshot())
        assert sum(weights[k] for k in live) <= 40
        if heavy in live:
            assert set(live) == {heavy}
    gc.collect()
    gone = [k for k, r in enumerate(refs) if r() is None]
    assert sorted(gone) == [k for k in range(40) if k not in dict(m.snapshot())]
    if policy == "lru":
        assert len(gone) == 40  # the first heavy entry evicted all 40 in one write
    if callback:
        keys = [k for k, _ in evicted]
        assert len(keys) == len(set(keys))  # once per entry
        assert set(gone) <= set(keys)
        assert set(keys) == set(range(40)) - set(dict(m.snapshot())) | (
            {100, 101, 102} - set(dict(m.snapshot()))
        )
        assert all(cause == "size" for _, cause in evicted)
    assert m.stats().evictions_size == 40 + 3 - len(m)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ttl", [None, 1000.0])
@pytest.mark.parametrize("policy", ["lru", "tinylfu"])
def test_racing_misses_each_entry_ends_live_or_evicted_once(policy: str, ttl: float | None) -> None:
    """Four threads insert keys of their own into one full cache (each insert evicts):
    afterwards every key inserted is either still in the cache or was passed to on_evict,
    exactly once, never both; the eviction count equals the callbacks and the size never
    exceeded maxsize for a reader meanwhile."""
    maxsize, threads, per = 64, 4, 3000
    evicted: list[int] = []
    lock = threading.Lock()

    def on_evict(k: int, v: int, cause: str) -> None:
        assert cause == "size" and v == k
        with lock:
            evicted.append(k)

    m: safemap.Cache[int, int] = safemap.Cache(maxsize, policy=policy, ttl=ttl, on_evict=on_evict)
    over: list[int] = []
    start = threading.Barrier(threads + 1)
    done = threading.Event()

    def writer(t: int) -> None:
        start.wait()
        for k in range(t * per, (t + 1) * per):
            if m.get(k) is None:
                m.store(k, k)

    def reader() -> None:
        start.wait()
        while not done.is_set():
            n = len(m)
            if n > maxsize:
                over.append(n)

    ws = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    r = threading.Thread(target=reader)
    for th in [*ws, r]:
        th.start()
    for th in ws:
        th.join(timeout=50)
    done.set()
    r.join(timeout=5)
    assert not any(th.is_alive() for th in [*ws, r])
    assert over == []
    live = set(dict(m.snapshot()))
    assert len(evicted) == len(set(evicted))
    assert live.isdisjoint(evicted)
    assert live | set(evicted) == set(range(threads * per))
    assert m.stats().evictions_size == len(evicted)


def test_updates_of_a_full_cache_keep_write_order_with_a_ttl() -> None:
    """Updating keys of a full cache with a ttl relinks them at the newest end of the
    write order: what expires first is what was written first, whatever the updates."""
    clock = Clock()
    evicted: list[tuple[Any, Any, str]] = []
    m: safemap.Cache[int, int] = safemap.Cache(
        4, policy="lru", ttl=10, timer=clock, on_evict=lambda *a: evicted.append(a)
    )
    for k in range(4):  # key k written at time k: deadline 10 + k
        clock.now = k
        m.store(k, k)
    clock.now = 5
    m.store(0, 100)  # deadlines 15: write order 1, 3, 0, 2
    m.store(2, 200)
    clock.now = 11.5
    m.store(9, 9)
    assert evicted == [(1, 1, "expired")]
    clock.now = 13
    m.store(8, 8)
    assert evicted[1:] == [(3, 3, "expired")]
    clock.now = 15
    m.store(7, 7)
    assert evicted[2:] == [(0, 100, "expired"), (2, 200, "expired")]
    assert dict(m.snapshot()) == {9: 9, 8: 8, 7: 7}
