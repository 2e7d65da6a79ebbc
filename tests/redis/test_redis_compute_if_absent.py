"""compute_if_absent's at-most-once promise across handles and processes: the lease, its
renewal while the factory runs, and the fence at commit."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest
import redis

import safemap.redis.map as redis_map
from safemap.redis import RedisMap

pytestmark = pytest.mark.timeout(60)


def _race(url: str, name: str, counter: str, out: Any) -> None:
    m: RedisMap[str, Any] = RedisMap(url=url, name=name)
    raw = redis.Redis.from_url(url)

    def factory(key: str) -> list[int]:
        runs = int(raw.incr(counter))  # counts factory runs across every process
        time.sleep(0.2)
        return [runs]

    out.put(m.compute_if_absent("k", factory))
    m.close()


def test_factory_runs_once_across_four_processes(url: str, raw: Any) -> None:
    m: RedisMap[str, Any] = RedisMap(url=url)
    counter = m.name + ":runs"
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(url, m.name, counter, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=50) for _ in procs]
    for p in procs:
        p.join(10)
    assert raw.get(counter) == b"1"
    assert results == [[1]] * 4  # every caller got the one stored value
    assert m["k"] == [1]


def test_lease_is_renewed_while_a_slow_factory_runs(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_map, "_LEASE_MS", 300)  # renewed every 100 ms
    first: RedisMap[str, Any] = RedisMap(url=url)
    second: RedisMap[str, Any] = RedisMap(url=url, name=first.name)
    runs: list[str] = []
    started = threading.Event()

    def slow(_key: str) -> str:
        runs.append("slow")
        started.set()
        time.sleep(1.0)  # three lease lifetimes
        return "slow"

    results: list[Any] = []
    t = threading.Thread(target=lambda: results.append(first.compute_if_absent("k", slow)))
    t.start()
    assert started.wait(10)
    # Would run its own factory if the lease had expired.
    assert second.compute_if_absent("k", lambda _k: runs.append("other") or "other") == "slow"
    t.join(10)
    assert results == ["slow"] and runs == ["slow"]


def test_commit_is_fenced_when_the_lease_was_lost(url: str, raw: Any) -> None:
    m: RedisMap[str, Any] = RedisMap(url=url)
    other: RedisMap[str, Any] = RedisMap(url=url, name=m.name)
    field = m.codec.encode_key("k")
    lease = f"{m.name}:lease:{field.hex()}"

    def new_holder() -> None:
        time.sleep(0.3)  # still running its factory ...
        other["k"] = "theirs"  # ... then stores and releases the lease
        raw.delete(lease)

    holder = threading.Thread(target=new_holder)

    def partitioned(_key: str) -> str:
        # As if this caller were cut off past its lease: the lease expired and another
        # caller took it. This caller's commit must be refused although "k" is still absent.
        raw.set(lease, "another caller's token")
        holder.start()
        return "mine"

    assert m.compute_if_absent("k", partitioned) == "theirs"
    assert m["k"] == "theirs"
    holder.join(10)  # it may still be releasing the lease: not past this test's clients
    assert not holder.is_alive()
