"""The compute family of a Cache (compute, compute_if_absent, compute_if_present, merge):
the answers every map gives, from inside callbacks too, and what the eviction policy
learns from them (a call that leaves a present entry as it was is a use of it)."""

from __future__ import annotations

import threading

import pytest

from safemap import DELETE, Cache, RecursiveUpdateError

POLICIES = ("lru", "tinylfu")


@pytest.mark.parametrize("policy", POLICIES)
def test_compute_if_absent_on_a_present_key_is_a_use(policy: str) -> None:
    # an LRU of 2: "a" read through compute_if_absent after "b" was stored is the more
    # recently used, so the insert of "c" evicts "b"
    c: Cache[str, int] = Cache(2, policy=policy)
    c["a"] = 1
    c["b"] = 2
    for _ in range(5):
        assert c.compute_if_absent("a", lambda k: 0) == 1
    c["c"] = 3
    assert sorted(c) == ["a", "c"]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    "touch",
    [
        lambda c: c.compute("a", lambda k, v: v),
        lambda c: c.compute_if_present("a", lambda k, v: v),
        lambda c: c.merge("a", 0, lambda old, new: old),
    ],
    ids=["compute", "compute_if_present", "merge"],
)
def test_a_callback_returning_the_stored_value_is_a_use(policy: str, touch: object) -> None:
    c: Cache[str, int] = Cache(2, policy=policy)
    c["a"] = 1
    c["b"] = 2
    for _ in range(5):
        touch(c)  # type: ignore[operator]
    c["c"] = 3
    assert sorted(c) == ["a", "c"]
    assert c["a"] == 1


def test_the_compute_family_counts_no_point_reads() -> None:
    c: Cache[str, int] = Cache(8)
    c["a"] = 1
    c.compute_if_absent("a", lambda k: 0)
    c.compute_if_absent("b", lambda k: 2)
    c.compute_if_present("z", lambda k, v: v)
    c.merge("a", 1, lambda x, y: x + y)
    s = c.stats()
    assert (s.hits, s.misses) == (0, 0)
    assert c.snapshot() == {"a": 2, "b": 2}


@pytest.mark.parametrize("ttl", [None, 3600.0])
def test_reads_of_the_compute_family_are_answered_inside_a_callback(ttl: float | None) -> None:
    c: Cache[str, int] = Cache(8, ttl=ttl)
    c["a"] = 1
    seen: list[object] = []

    def fn(k: str, old: object) -> int:
        seen.append(c.compute_if_absent("a", lambda k: 99))  # present: a read
        seen.append(c.compute_if_present("zz", lambda k, v: 99))  # absent: a read
        with pytest.raises(RecursiveUpdateError):
            c.compute_if_absent("new", lambda k: 99)  # absent: a write
        with pytest.raises(RecursiveUpdateError):
            c.compute_if_present("a", lambda k, v: 99)  # present: a write
        with pytest.raises(RecursiveUpdateError):
            c.merge("a", 1, lambda x, y: x)
        return 5

    assert c.compute("b", fn) == 5
    assert seen == [1, None]
    assert c.snapshot() == {"a": 1, "b": 5}


@pytest.mark.parametrize("ttl", [None, 3600.0])
def test_load_or_store_from_a_callback_is_refused_even_when_present(ttl: float | None) -> None:
    # a write method, whatever it ends up doing: refused like every write from a callback
    c: Cache[str, int] = Cache(8, ttl=ttl)
    c["a"] = 1

    def fn(k: str, old: object) -> int:
        with pytest.raises(RecursiveUpdateError):
            c.load_or_store("a", 2)
        with pytest.raises(RecursiveUpdateError):
            c.load_or_store("new", 2)
        return 5

    assert c.compute("b", fn) == 5
    assert c.snapshot() == {"a": 1, "b": 5}


def test_compute_if_absent_returning_delete_stores_nothing() -> None:
    c: Cache[str, int] = Cache(8)
    assert c.compute_if_absent("a", lambda k: DELETE) is None
    assert "a" not in c
    assert c.compute_if_present("a", lambda k, v: 1) is None
    assert c.merge("a", 3, lambda x, y: x + y) == 3
    assert c.merge("a", 3, lambda x, y: DELETE) is None
    assert "a" not in c


def test_compute_if_absent_runs_the_factory_once_under_threads() -> None:
    c: Cache[int, object] = Cache(1024)
    calls: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)
    got: list[list[object]] = [[] for _ in range(8)]

    def factory(k: int) -> object:
        with lock:
            calls.append(k)
        return object()

    def body(t: int) -> None:
        barrier.wait()
        for k in range(300):
            got[t].append(c.compute_if_absent(k, factory))

    threads = [threading.Thread(target=body, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
        assert not th.is_alive()
    assert sorted(calls) == list(range(300))  # once per key
    for t in range(1, 8):
        assert all(a is b for a, b in zip(got[0], got[t], strict=True))  # the stored object
