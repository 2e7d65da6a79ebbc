"""@safemap.cached: lru_cache compatibility, single-flight per argument tuple across
threads, event loops and cancellation (docs/cache.md, "@cached")."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import Counter
from typing import Any

import pytest

import safemap


def test_drop_in_for_lru_cache() -> None:
    calls = Counter[Any]()

    @safemap.cached(maxsize=2)
    def square(x: int) -> int:
        """Square it."""
        calls[x] += 1
        return x * x

    assert square.__name__ == "square" and square.__doc__ == "Square it."
    assert [square(2), square(2), square(3)] == [4, 4, 9]
    assert square.cache_info() == safemap.CacheInfo(hits=1, misses=2, maxsize=2, currsize=2)
    assert square.cache_info()._fields == functools.lru_cache(abs).cache_info()._fields
    square.cache_clear()
    assert square.cache_info() == (0, 0, 2, 0)
    assert square(2) == 4 and calls[2] == 2
    assert square.cache_parameters()["maxsize"] == 2


def test_bare_decorator_keywords_and_typed() -> None:
    seen: list[Any] = []

    @safemap.cached
    def f(a: Any, b: Any = 0) -> Any:
        seen.append((a, b))
        return (a, b)

    f(1, b=2)
    f(1, b=2)
    f(1, 2)  # positional and keyword calls are different keys, as in lru_cache
    assert seen == [(1, 2), (1, 2)]
    assert f.cache_info().maxsize == 128

    @safemap.cached(typed=True)
    def g(x: Any) -> Any:
        seen.append(x)
        return x

    g(1)
    g(1.0)
    assert seen[-2:] == [1, 1.0]
    with pytest.raises(TypeError):
        f([1])  # unhashable arguments


def test_methods_are_cached_per_instance() -> None:
    class A:
        def __init__(self, n: int) -> None:
            self.n = n
            self.calls = 0

        @safemap.cached(maxsize=16)
        def double(self) -> int:
            self.calls += 1
            return 2 * self.n

    a, b = A(1), A(5)
    assert [a.double(), a.double(), b.double()] == [2, 2, 10]
    assert (a.calls, b.calls) == (1, 1)


def test_exceptions_are_not_cached() -> None:
    outcomes = iter([ValueError("first"), 7])

    @safemap.cached
    def f() -> int:
        o = next(outcomes)
        if isinstance(o, Exception):
            raise o
        return o

    with pytest.raises(ValueError):
        f()
    assert f() == 7 and f() == 7
    assert f.cache_info().misses == 2 and f.cache_info().hits == 1


def test_threads_stampede_runs_the_function_once(run_threads: Any) -> None:
    calls = Counter[int]()
    gate = threading.Event()

    @safemap.cached(maxsize=8)
    def slow(x: int) -> list[int]:
        calls[x] += 1
        gate.wait(30)
        return [x]

    def work(i: int) -> list[int]:
        if i == 0:
            threading.Timer(0.2, gate.set).start()
        return slow(i % 2)

    out = run_threads(work, 200, timeout=120)
    assert calls == Counter({0: 1, 1: 1})
    assert len({id(r) for r in out}) == 2  # every caller got one of the two objects
    info = slow.cache_info()
    assert (info.hits, info.misses) == (198, 2)


def test_async_coalesces_across_event_loops_and_threads() -> None:
    calls = Counter[int]()
    started = threading.Event()
    gate = threading.Event()

    @safemap.cached(maxsize=8)
    async def fetch(x: int) -> list[int]:
        calls[x] += 1
        started.set()
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 30)
        return [x]

    results: list[Any] = []
    lock = threading.Lock()

    def loop_thread() -> None:
        async def main() -> list[Any]:
            return list(await asyncio.gather(*(fetch(1) for _ in range(5))))

        r = asyncio.run(main())
        with lock:
            results.extend(r)

    threads = [threading.Thread(target=loop_thread, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    assert started.wait(30)
    threading.Timer(0.2, gate.set).start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert calls == Counter({1: 1})
    assert len(results) == 20 and all(r is results[0] for r in results)


def test_async_cancelled_waiter_does_not_cancel_the_load() -> None:
    calls = Counter[int]()

    @safemap.cached
    async def fetch(x: int) -> int:
        calls[x] += 1
        await asyncio.sleep(0.05)
        return x * 10

    async def main() -> tuple[int, int]:
        first = asyncio.ensure_future(fetch(3))
        second = asyncio.ensure_future(fetch(3))
        await asyncio.sleep(0)
        first.cancel()  # the caller that started the load gives up
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second, await fetch(3)

    assert asyncio.run(asyncio.wait_for(main(), 30)) == (30, 30)
    assert calls == Counter({3: 1})


def test_ttl_and_lru_options() -> None:
    @safemap.cached(maxsize=1, policy="lru", ttl=60)
    def ident(x: int) -> int:
        return x

    ident(1)
    ident(2)
    assert ident.cache_info().currsize == 1
    assert ident.cache.ttl == 60 and ident.cache.policy == "lru"
