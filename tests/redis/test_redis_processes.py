"""Several processes on one map: exact counts and linearizable histories."""

from __future__ import annotations

import dataclasses
import multiprocessing
import operator
from typing import Any

import pytest

from safemap.redis import RedisMap
from safemap.testing import History, check_linearizable

pytestmark = pytest.mark.timeout(120)

PROCESSES = 4


def _count(url: str, name: str, n: int, kind: str) -> None:
    m: RedisMap[str, int] = RedisMap(url=url, name=name)
    for _ in range(n):
        if kind == "merge":
            m.merge("hits", 1, operator.add)  # HINCRBY
        elif kind == "compute":
            m.compute("hits", lambda _k, old: old + 1)  # optimistic, retried on conflict
        else:
            m.transaction(_move)
    m.close()


def _move(view: Any) -> None:
    view["hits"] += 1
    view["other"] -= 1


def _spawn(target: Any, args_for: Any) -> None:
    ctx = multiprocessing.get_context("spawn")  # no fork: the parent has threads
    procs = [ctx.Process(target=target, args=args_for(i)) for i in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a worker process hung"
    assert [p.exitcode for p in procs] == [0] * PROCESSES


@pytest.mark.parametrize(("kind", "per_process"), [("merge", 500), ("compute", 150), ("txn", 60)])
def test_exact_counts_from_four_processes(url: str, kind: str, per_process: int) -> None:
    m: RedisMap[str, int] = RedisMap({"hits": 0, "other": 0}, url=url)
    _spawn(_count, lambda _i: (url, m.name, per_process, kind))
    assert m["hits"] == PROCESSES * per_process
    assert m["other"] == (-PROCESSES * per_process if kind == "txn" else 0)


def _record(url: str, name: str, seed: int, queue: Any) -> None:
    import random

    rng = random.Random(seed)
    m: RedisMap[str, int] = RedisMap(url=url, name=name)
    history = History()
    rec = history.recorder(m)
    for _ in range(25):
        key = rng.choice("ab")
        op = rng.randrange(6)
        if op == 0:
            rec.get(key)
        elif op == 1:
            rec.store(key, rng.randrange(3))
        elif op == 2:
            rec.compare_and_swap(key, rng.randrange(3), rng.randrange(3))
        elif op == 3:
            rec.merge(key, 1, operator.add)
        elif op == 4:
            rec.load_and_delete(key)
        else:
            rec.load_or_store(key, rng.randrange(3))
    queue.put(history.operations())
    m.close()


def test_linearizable_across_four_processes(url: str) -> None:
    m: RedisMap[str, int] = RedisMap(url=url)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_record, args=(url, m.name, i, queue)) for i in range(PROCESSES)]
    for p in procs:
        p.start()
    lanes = [queue.get(timeout=90) for _ in procs]
    for p in procs:
        p.join(30)
    # One history of the four processes' lanes (perf_counter is CLOCK_MONOTONIC on Linux:
    # one clock for every process on the machine, so real-time order is comparable).
    # Each process numbered its own operations from 0 in thread 0: renumber them so every
    # process is its own thread and every id is unique.
    ids = iter(range(10**6))
    merged = History()
    merged._lanes = {
        i: [dataclasses.replace(op, thread=i, id=next(ids)) for op in ops]
        for i, ops in enumerate(lanes)
    }
    assert len(merged) == PROCESSES * 25
    result = check_linearizable(merged, time_budget=60)
    assert result.ok is True, result.counterexample


def test_linearizable_across_threads(url: str) -> None:
    from safemap.testing import stress

    result = stress(lambda: RedisMap(url=url), threads=4, ops=40, histories=4, seed=7)
    assert result.ok is True, result.counterexample
