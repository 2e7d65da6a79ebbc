"""Opt-in tracking (``m.track``): hot keys (Space-Saving) and sampled latency, on every map
type, from several threads."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import safemap
from safemap.protocol.stats import LatencyHistogram
from safemap.protocol.tracking import (
    LATENCY_BOUNDS,
    LatencySampler,
    SpaceSaving,
    Tracking,
    tracked,
)
from safemap.protocol.variants import features_of, plain_class

JOIN = 60.0


def _close(m: Any) -> None:
    close = getattr(m, "close", None)
    if close is not None:
        close()


def test_hot_key_is_first_on_every_map_type(map_type: type[Any]) -> None:
    m = map_type({i: i for i in range(50)})
    try:
        m.track(hot_keys=10)
        order = [7] * 1000 + list(range(50))
        random.Random(1).shuffle(order)
        for key in order:
            m.get(key)
        hot, _ = tracked(m)
        assert hot[0][0] == 7
        assert 1000 <= hot[0][1] <= 1000 + len(order) // 10
        assert sum(count for _, count in hot) == len(order)  # Space-Saving keeps the total
        assert len(hot) == 10
    finally:
        _close(m)


def test_track_off_restores_the_plain_class(map_type: type[Any]) -> None:
    m = map_type(a=1)
    try:
        m.track(hot_keys=4, latency_every=1)
        assert Tracking in features_of(m) and isinstance(m, map_type)
        m["a"] = 2
        m.track(hot_keys=0)  # latency stays on
        assert Tracking in features_of(m)
        m.track(latency_every=0)
        assert type(m) is plain_class(type(m))
        assert tracked(m) == ((), {})
    finally:
        _close(m)


@pytest.mark.parametrize("cls", [safemap.LockedMap, safemap.RWLockMap, safemap.ActorMap])
def test_stats_carry_hot_keys_and_latency(cls: type[Any]) -> None:
    m = cls()
    try:
        assert m.stats().hot_keys == () and m.stats().latency == {}
        m.track(hot_keys=3, latency_every=1)
        m["a"] = 1
        m["a"] = 2
        m.get("a")
        m.get("b")  # a miss is a use of the key too
        "a" in m  # noqa: B015
        m.pop("a")
        s = m.stats()
        assert s.hot_keys == (("a", 5), ("b", 1))
        assert set(s.latency) == {"get", "set", "delete"}
        assert [sum(s.latency[k].counts) for k in ("get", "set", "delete")] == [3, 2, 1]
        h = s.latency["get"]
        assert isinstance(h, LatencyHistogram) and h.bounds == LATENCY_BOUNDS
        assert h.sample_every == 1 and h.sum_seconds > 0
        assert (s.hits, s.misses) == (2, 1)  # tracking does not change the counts
    finally:
        _close(m)


def test_nested_calls_count_once() -> None:
    # ConcurrentMapping.get calls load; pop calls load_and_delete: each counts as one use.
    m = safemap.ActorMap(a=1, b=2)
    try:
        m.track(hot_keys=5, latency_every=1)
        m.get("a")
        m.pop("b")
        s = m.stats()
        assert dict(s.hot_keys) == {"a": 1, "b": 1}
        assert {k: sum(h.counts) for k, h in s.latency.items()} == {"get": 1, "delete": 1}
    finally:
        _close(m)


def test_latency_samples_one_in_every() -> None:
    m = safemap.LockedMap(a=1)
    m.track(latency_every=4)
    for _ in range(10):
        m.get("a")
    assert sum(m.stats().latency["get"].counts) == 3  # the 1st, 5th and 9th


@pytest.mark.parametrize(
    ("ns", "bucket"),
    [(0, 0), (63, 0), (64, 1), (127, 1), (128, 2), (2**19, 14), (2**20 - 1, 14), (2**20, 15)],
)
def test_latency_buckets(ns: int, bucket: int) -> None:
    sampler = LatencySampler(1)
    sampler.add("get", ns)
    h = sampler.histograms()["get"]
    assert h.counts[bucket] == 1 and sum(h.counts) == 1
    assert len(h.counts) == len(h.bounds) + 1
    if bucket < len(h.bounds):
        assert ns / 1e9 < h.bounds[bucket]
    if bucket:
        assert ns / 1e9 >= h.bounds[bucket - 1]


def test_track_rejects_bad_arguments() -> None:
    m = safemap.LockedMap()
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError):
            m.track(hot_keys=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            m.track(latency_every=bad)  # type: ignore[arg-type]
    assert type(m) is safemap.LockedMap


@settings(max_examples=200, deadline=None)
@given(
    stream=st.lists(st.integers(min_value=0, max_value=30), max_size=300),
    k=st.integers(min_value=1, max_value=12),
)
def test_space_saving_guarantees(stream: list[int], k: int) -> None:
    summary = SpaceSaving(k)
    for key in stream:
        summary.offer(key)
    top = dict(summary.top())
    true = Counter(stream)
    n = len(stream)
    assert len(top) <= k
    assert sum(top.values()) == n
    for key, estimate in top.items():
        assert true[key] <= estimate <= true[key] + n // k
    for key, count in true.items():
        if count > n / k:
            assert key in top  # every key used more than N/k times is listed


@pytest.mark.parametrize("cls", [safemap.LockedMap, safemap.RWLockMap])
def test_tracking_from_threads_loses_nothing(cls: type[Any]) -> None:
    threads, rounds = 4, 1000
    m = cls({i: i for i in range(8)})
    m.track(hot_keys=16, latency_every=1)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for r in range(rounds):
                m.get(r % 8)
                m[i] = r
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(JOIN)
        assert not t.is_alive()
    assert not errors
    s = m.stats()
    assert sum(count for _, count in s.hot_keys) == 2 * threads * rounds
    assert dict(s.hot_keys)[0] == threads * rounds // 8 + rounds  # reads of 0, writes by 0
    assert sum(s.latency["get"].counts) == threads * rounds
    assert sum(s.latency["set"].counts) == threads * rounds
