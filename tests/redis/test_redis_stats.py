"""RedisMap statistics (``_collect_stats``, behind ``stats()``): exact counts of this
handle's operations from many threads, the size from the server, iterations and writes
during them, the in-process locks."""

from __future__ import annotations

import operator
import threading
import time
from typing import Any

import pytest

from safemap import DELETE, MISSING
from safemap.redis import RedisMap

pytestmark = pytest.mark.timeout(60)

THREADS = 4
ROUNDS = 25


def _run(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    _run_joined(threads)


def _run_joined(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(50)
    assert not any(t.is_alive() for t in threads), "a worker hung"


def test_counts_are_exact_from_many_threads(url: str) -> None:
    m: RedisMap[str, int] = RedisMap(url=url)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(ROUNDS):
                k = f"{t}-{i}"
                m[k] = 1  # insert
                m[k] = 2  # update
                assert m[k] == 2 and m.get(k + "x") is None  # hit, miss
                assert k in m and m.load(k + "x") == (None, False)  # hit, miss
                m.compute(k + "c", lambda _k, old: 1 if old is MISSING else old + 1)  # insert
                m.compute(k + "c", lambda _k, old: old + 1)  # update
                m.merge(k + "m", 1, operator.add)  # insert
                m.merge(k + "m", 1, operator.add)  # update
                m.load_or_store(k + "s", 1)  # insert
                m.load_or_store(k + "s", 2)  # nothing
                m.swap(k + "s", 3)  # update
                assert m.compare_and_swap(k + "s", 3, 4)  # update
                assert not m.compare_and_swap(k + "s", 3, 5)  # nothing
                m.transaction(lambda v, k=k: v.update({k + "t": 1, k: 3}))  # insert + update
                m.compute_if_absent(k + "a", lambda _k: 1)  # insert
                m.compute_if_absent(k + "a", lambda _k: 2)  # nothing
                del m[k]  # delete
                m.delete(k)  # nothing
                m.pop(k + "c")  # delete
                m.compute(k + "m", lambda _k, _old: DELETE)  # delete
                assert m.compare_and_delete(k + "s", 4)  # delete
        except BaseException as exc:
            errors.append(exc)

    _run([threading.Thread(target=work, args=(t,)) for t in range(THREADS)])
    assert not errors, errors[0]
    n = THREADS * ROUNDS
    stats = m._collect_stats()
    assert (stats.hits, stats.misses) == (2 * n, 2 * n)
    assert (stats.inserts, stats.updates, stats.deletes) == (6 * n, 6 * n, 4 * n)
    assert stats.size == len(m) == 2 * n  # each round leaves k+"t" and k+"a"
    assert stats.kind == "RedisMap" and not stats.inexact
    m.clear()
    after = m._collect_stats()
    assert after.deletes == 6 * n and after.size == 0  # clear() counts each entry


def test_counts_are_this_handles_size_is_the_servers(url: str) -> None:
    m: RedisMap[str, int] = RedisMap({"a": 1}, url=url)
    other: RedisMap[str, int] = RedisMap(url=url, name=m.name)
    other["b"] = 2
    other["b"] = 3
    stats, theirs = m._collect_stats(), other._collect_stats()
    assert (stats.inserts, stats.updates, stats.size) == (1, 0, 2)
    assert (theirs.inserts, theirs.updates, theirs.size) == (1, 1, 2)
    assert any("this handle" in note for note in stats.notes)
    assert stats.minus(stats).inserts == 0


def test_iterations_and_writes_during_them(url: str) -> None:
    m: RedisMap[str, int] = RedisMap({"a": 1, "b": 2}, url=url)
    list(m)
    list(m.items())
    m.range(lambda _k, _v: None)
    assert m._collect_stats().iterations == 3
    it = iter(m)
    next(it)
    m["c"] = 3  # while an iteration is in progress
    del m["c"]
    list(it)
    m["d"] = 4  # after it ended
    stats = m._collect_stats()
    assert stats.iterations == 4 and stats.writes_during_iteration == 2


def test_lock_acquisitions_and_contentions(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    m: RedisMap[str, int] = RedisMap({"k": 0}, url=url)
    m.compute("k", lambda _k, old: old + 1)
    m.transaction(lambda v: None)
    stats = m._collect_stats()
    assert stats.lock_acquisitions == 3 and stats.lock_contentions == 0  # 2 + 1
    inside, release, waiting = threading.Event(), threading.Event(), threading.Event()
    wait = RedisMap._wait

    def signalling_wait(cell: Any, acquire: Any) -> None:
        waiting.set()  # the waiter found the stripe held
        wait(cell, acquire)

    monkeypatch.setattr(RedisMap, "_wait", staticmethod(signalling_wait))

    def slow(_k: str, old: int) -> int:
        inside.set()
        release.wait(10)
        return old + 1

    holder = threading.Thread(target=m.compute, args=("k", slow))
    holder.start()
    assert inside.wait(10)
    waiter = threading.Thread(target=m.compute, args=("k", lambda _k, old: old + 1))
    waiter.start()
    assert waiting.wait(10)
    release.set()
    _run_joined([holder, waiter])
    stats = m._collect_stats()
    assert stats.lock_acquisitions == 7
    assert stats.lock_contentions == 1 and stats.lock_wait_seconds > 0
    assert m["k"] == 3


def test_counts_of_finished_threads_are_kept(url: str) -> None:
    m: RedisMap[str, int] = RedisMap(url=url)

    def one_write(i: int) -> None:
        m[f"k{i}"] = i

    for batch in range(5):
        _run([threading.Thread(target=one_write, args=(batch * 10 + i,)) for i in range(10)])
    assert m._collect_stats().inserts == 50
    deadline = time.monotonic() + 10  # a deadlock guard, not a timing assertion
    while m._counters._cells:  # finished threads' cells are folded into the base
        assert time.monotonic() < deadline, "cells of finished threads were never folded"
        time.sleep(0.01)
    assert m._collect_stats().inserts == 50


def test_statistics_do_not_run_python_code_of_the_map_values(url: str, raw: Any) -> None:
    m: RedisMap[str, Any] = RedisMap(url=url)
    raw.hset(m.name, b'"x"', b"not json")  # size counts it; nothing is decoded
    assert m._collect_stats().size == 1
