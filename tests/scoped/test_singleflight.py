"""``get_or_compute`` / ``aget_or_compute``: a missing key is loaded once, with no lock held,
while other callers for it wait (docs/scoped.md)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from support.actor import wait_until

from safemap import ConcurrentMap, RecursiveUpdateError

WAIT = 30.0


def test_hit_returns_the_stored_value_without_loading(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type(k=[1]))
    assert m.get_or_compute("k", lambda _k: pytest.fail("loaded a present key")) == [1]


def test_sixteen_threads_one_load(
    map_type: type[Any], closing: Callable[[Any], Any], run_threads: Any
) -> None:
    m = closing(map_type())
    calls: list[str] = []
    release = threading.Event()

    def loader(key: str) -> list[str]:
        calls.append(key)
        assert release.wait(WAIT)
        return ["loaded", key]

    def caller(i: int) -> Any:
        if i == 0:  # let every other caller arrive while the loader is blocked
            wait_until(lambda: len(calls) == 1, "the loader runs")
            release.set()
            return None
        return m.get_or_compute("k", loader)

    results = run_threads(caller, 17)[1:]
    assert calls == ["k"]
    assert all(r == ["loaded", "k"] for r in results) and len(results) == 16
    if map_type.__name__ not in ("RedisMap",):  # the very object stored, for everyone
        assert all(r is m["k"] for r in results)


def test_writers_and_other_keys_are_not_blocked_by_a_loader() -> None:
    """ConcurrentMap(shards=1): every key is in the loader's shard; writes to it, and loads of
    other keys, complete while the loader is blocked."""
    m: ConcurrentMap[str, Any] = ConcurrentMap(shards=1)
    entered, release = threading.Event(), threading.Event()

    def slow(_key: str) -> str:
        entered.set()
        assert release.wait(WAIT)
        return "slow"

    t = threading.Thread(target=lambda: m.get_or_compute("slow", slow))
    t.start()
    try:
        assert entered.wait(WAIT)
        done = threading.Event()

        def write() -> None:
            m["other"] = 1
            m.compute("other", lambda _k, old: old + 1)
            assert m.get_or_compute("fast", lambda _k: "fast") == "fast"
            done.set()

        w = threading.Thread(target=write)
        w.start()
        assert done.wait(WAIT), "a writer waited for the loader"
        w.join(WAIT)
        assert t.is_alive()  # the loader is still blocked meanwhile
        assert m.snapshot() == {"other": 2, "fast": "fast"}
    finally:
        release.set()
        t.join(WAIT)
    assert m["slow"] == "slow"


def test_a_failing_loader_fails_every_waiter_and_stores_nothing(
    map_type: type[Any], closing: Callable[[Any], Any], run_threads: Any
) -> None:
    m = closing(map_type())
    calls: list[int] = []
    release = threading.Event()

    def loader(_key: str) -> Any:
        calls.append(1)
        assert release.wait(WAIT)
        raise LookupError("backend down")

    def caller(i: int) -> Any:
        if i == 0:
            wait_until(lambda: len(calls) == 1, "the loader runs")
            wait_until(lambda: _waiting(m) >= 1, "some callers wait")
            release.set()
            return None
        with pytest.raises(LookupError, match="backend down"):
            m.get_or_compute("k", loader)
        return True

    assert all(run_threads(caller, 9)[1:])
    assert "k" not in m and len(m) == 0
    assert m.get_or_compute("k", lambda _k: "second") == "second"  # failures are not kept


def _waiting(m: Any) -> int:
    from safemap.protocol.sidecar import existing_sidecar

    sc = existing_sidecar(m)
    flights = getattr(sc, "flights", {}) if sc is not None else {}
    return sum(len(f.waiters) for f in list(flights.values()))


def test_a_loader_asking_for_its_own_key_gets_recursive_update_error(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())
    with pytest.raises(RecursiveUpdateError):
        m.get_or_compute("k", lambda k: m.get_or_compute(k, lambda _k: "inner"))
    assert "k" not in m
    # Another key from inside a loader is fine.
    assert m.get_or_compute("a", lambda _k: m.get_or_compute("b", lambda _k: "b") + "a") == "ba"


def test_a_value_stored_during_the_load_wins_for_everyone(
    map_type: type[Any], closing: Callable[[Any], Any], run_threads: Any
) -> None:
    m = closing(map_type())
    calls: list[int] = []

    def loader(key: str) -> str:
        calls.append(1)
        wait_until(lambda: _waiting(m) >= 3, "the waiters are waiting")
        m[key] = "written"  # a writer stores the key while the loader runs
        return "loaded"

    results = run_threads(lambda _i: m.get_or_compute("k", loader), 4)
    assert results == ["written"] * 4 and m["k"] == "written" and calls == [1]


def test_a_waiter_times_out_and_the_load_goes_on(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())
    entered, release = threading.Event(), threading.Event()

    def loader(_key: str) -> str:
        entered.set()
        assert release.wait(WAIT)
        return "late"

    t = threading.Thread(target=lambda: m.get_or_compute("k", loader))
    t.start()
    try:
        assert entered.wait(WAIT)
        with pytest.raises(TimeoutError):
            m.get_or_compute("k", loader, timeout=0)
    finally:
        release.set()
        t.join(WAIT)
    assert m["k"] == "late"
    with pytest.raises(ValueError, match="timeout"):
        m.get_or_compute("x", loader, timeout=-1)


# --------------------------------------------------------------------------- asyncio


def test_async_many_waiters_one_load(map_type: type[Any], closing: Callable[[Any], Any]) -> None:
    m = closing(map_type())
    calls: list[str] = []

    async def main() -> list[Any]:
        release = asyncio.Event()

        async def loader(key: str) -> list[str]:
            calls.append(key)
            await release.wait()
            return ["loaded", key]

        tasks = [asyncio.create_task(m.aget_or_compute("k", loader)) for _ in range(16)]
        while not calls:
            await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert calls == ["k"] and results == [["loaded", "k"]] * 16


def test_cancelled_first_caller_does_not_cancel_the_load(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())

    async def main() -> Any:
        release = asyncio.Event()
        started = asyncio.Event()

        async def loader(_key: str) -> str:
            started.set()
            await release.wait()
            return "loaded"

        first = asyncio.create_task(m.aget_or_compute("k", loader))
        await started.wait()
        second = asyncio.create_task(m.aget_or_compute("k", loader))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(TimeoutError):
            await m.aget_or_compute("k", loader, timeout=0)
        release.set()
        return await second

    assert asyncio.run(main()) == "loaded"
    assert m["k"] == "loaded"


def test_async_load_serves_other_loops_and_sync_callers(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    """One async load; waiters on another event loop (another thread) and a sync caller in
    a third thread get its result; a sync caller on the loading loop's thread gets a clear
    error instead of blocking that loop."""
    m = closing(map_type())
    results: list[Any] = []
    started, checked, release = threading.Event(), threading.Event(), threading.Event()

    async def loader(_key: str) -> str:
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.001)
        return "loaded"

    async def first() -> Any:
        task = asyncio.create_task(m.aget_or_compute("k", loader))
        await asyncio.sleep(0)
        await asyncio.to_thread(started.wait, WAIT)
        with pytest.raises(RuntimeError, match="event loop"):
            m.get_or_compute("k", lambda _k: "sync")
        checked.set()
        return await task

    async def other_loop() -> Any:
        return await m.aget_or_compute("k", loader)

    def run(fn: Callable[[], Any]) -> threading.Thread:
        t = threading.Thread(target=lambda: results.append(fn()))
        t.start()
        return t

    threads = [run(lambda: asyncio.run(first()))]
    assert started.wait(WAIT)
    threads.append(run(lambda: asyncio.run(other_loop())))
    threads.append(run(lambda: m.get_or_compute("k", lambda _k: "sync")))
    wait_until(lambda: _waiting(m) >= 2 and checked.is_set(), "the other callers wait")
    release.set()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert results == ["loaded"] * 3


def test_async_failure_and_recursion(map_type: type[Any], closing: Callable[[Any], Any]) -> None:
    m = closing(map_type())

    async def main() -> None:
        async def failing(_key: str) -> str:
            await asyncio.sleep(0)
            raise LookupError("backend down")

        outcomes = await asyncio.gather(
            *(m.aget_or_compute("k", failing) for _ in range(4)), return_exceptions=True
        )
        assert all(isinstance(o, LookupError) for o in outcomes)
        assert "k" not in m

        async def recursive(key: str) -> str:
            return await m.aget_or_compute(key, recursive)

        with pytest.raises(RecursiveUpdateError):
            await m.aget_or_compute("r", recursive)
        assert "r" not in m

    asyncio.run(main())


def test_async_actor_map_through_its_view_on_its_own_loop() -> None:
    """On the loop that owns an AsyncActorMap, its threadsafe view runs calls inline, so
    ``await amap.threadsafe.aget_or_compute(...)`` loads once for many tasks there."""
    from safemap import AsyncActorMap

    calls: list[str] = []

    async def main() -> list[Any]:
        async with AsyncActorMap[str, str]() as amap:

            async def loader(key: str) -> str:
                calls.append(key)
                await asyncio.sleep(0)
                return key * 2

            view = amap.threadsafe
            got = await asyncio.gather(*(view.aget_or_compute("k", loader) for _ in range(8)))
            assert await amap.get("k") == "kk"
            return list(got)

    assert asyncio.run(main()) == ["kk"] * 8 and calls == ["k"]


def test_async_actor_map_aget_or_compute_shares_one_load_with_threads() -> None:
    """``AsyncActorMap.aget_or_compute`` on the map's loop and ``get_or_compute`` through
    ``m.threadsafe`` in another thread share one load (one view per live map)."""
    from safemap import AsyncActorMap

    calls: list[str] = []

    async def main() -> tuple[list[Any], list[Any]]:
        async with AsyncActorMap[str, str]() as amap:
            view = amap.threadsafe
            assert amap.threadsafe is view  # one view while it is alive
            release = asyncio.Event()

            async def loader(key: str) -> str:
                calls.append(key)
                await release.wait()
                return key * 2

            first = asyncio.ensure_future(amap.aget_or_compute("k", loader))
            await asyncio.sleep(0)  # the load has started and is waiting on `release`
            from_thread: list[Any] = []
            thread = threading.Thread(
                target=lambda: from_thread.append(view.get_or_compute("k", lambda k: "other"))
            )
            thread.start()
            await asyncio.to_thread(wait_until, lambda: _waiting(view) == 1, "the thread waits")
            on_loop = [amap.aget_or_compute("k", loader) for _ in range(4)]
            release.set()
            got = [await first, *await asyncio.gather(*on_loop)]
            await asyncio.to_thread(thread.join, 30)
            assert await amap.get("k") == "kk"
            return got, from_thread

    got, from_thread = asyncio.run(main())
    assert got == ["kk"] * 5 and from_thread == ["kk"] and calls == ["k"]


def test_async_actor_map_aget_or_compute_failure_stores_nothing() -> None:
    from safemap import AsyncActorMap

    async def main() -> None:
        async with AsyncActorMap[str, int]() as amap:

            async def failing(key: str) -> int:
                await asyncio.sleep(0)
                raise LookupError(key)

            results = await asyncio.gather(
                *(amap.aget_or_compute("k", failing) for _ in range(3)), return_exceptions=True
            )
            assert all(isinstance(r, LookupError) for r in results)
            assert await amap.load("k") == (None, False)

    asyncio.run(main())


# ------------------------------------------------- landing a flight (protocol/_flight.c)


def _flight_with_waiters(*wakes: Callable[[], object]) -> Any:
    from safemap.protocol.singleflight import _Flight

    flight = _Flight()
    flight.thread = 0
    flight.loop = None
    flight.extend(wakes)
    return flight


def test_landing_finishes_every_step_even_when_a_wake_up_raises() -> None:
    from safemap.protocol.singleflight import _DONE, _land, _outcome

    woken: list[int] = []

    def bad() -> None:
        raise KeyboardInterrupt  # as a signal handler would, inside a waiter's wake-up

    flight = _flight_with_waiters(lambda: woken.append(1), bad, lambda: woken.append(3))
    table = {"k": flight}
    with pytest.raises(KeyboardInterrupt):
        _land(table, "k", flight, "value", True)
    # The exception reached the owner only after every step: out of the table, outcome
    # published, every other waiter woken.
    assert table == {} and woken == [1, 3] and flight[-1] is _DONE
    assert _outcome(flight) == "value"
    # Landing again publishes nothing more (an owner may retry after an interrupt).
    _land(table, "k", flight, "other", False)
    assert _outcome(flight) == "value" and flight.count(_DONE) == 1 and woken == [1, 3]


def test_landing_survives_a_key_whose_eq_raises_once() -> None:
    from safemap.protocol.singleflight import _land, _outcome

    class Flaky:
        raised = False

        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            if not Flaky.raised:
                Flaky.raised = True
                raise KeyboardInterrupt  # in the table lookup, as an interrupt would
            return isinstance(other, Flaky)

    stored, probe = Flaky(), Flaky()  # equal, not identical: the lookup compares them
    woken: list[str] = []
    flight = _flight_with_waiters(lambda: woken.append("w"))
    table: dict[Any, Any] = {stored: flight}
    with pytest.raises(KeyboardInterrupt):  # raised after the landing, not instead of it
        _land(table, probe, flight, ValueError("x"), False)
    assert Flaky.raised and table == {} and woken == ["w"]
    with pytest.raises(ValueError):
        _outcome(flight)


def test_landing_a_flight_that_never_entered_the_table_leaves_the_table_alone() -> None:
    from safemap.protocol.singleflight import _land

    others = _flight_with_waiters()
    mine = _flight_with_waiters()
    table = {"k": others}
    _land(table, "k", mine, RuntimeError("interrupted"), False)
    assert table == {"k": others} and len(others) == 0  # the other load goes on


def test_landing_primitives_refuse_bad_arguments() -> None:
    from safemap.protocol import _flight

    with pytest.raises(TypeError):
        _flight.land({}, "k", [], None)
    with pytest.raises(TypeError):
        _flight.land([], "k", [], None, True)
    with pytest.raises(RuntimeError):  # the markers are set once, by singleflight
        _flight.set_markers(object(), object())


def test_arguments_bind_as_the_protocol_s_signature(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    # (key, loader, *, timeout=None) on every map: the native maps' get_or_compute is C
    m = closing(map_type(a=1))
    assert m.get_or_compute(key="a", loader=str) == 1
    assert m.get_or_compute("b", loader=lambda k: k * 2, timeout=5) == "bb"
    assert m.get_or_compute("c", lambda k: k * 3, timeout=None) == "ccc"
    for call in (
        lambda: m.get_or_compute("a"),
        lambda: m.get_or_compute(loader=str),
        lambda: m.get_or_compute("a", str, 5),
        lambda: m.get_or_compute("a", str, ttl=1),
        lambda: m.get_or_compute("a", str, key="a"),
        lambda: m.get_or_compute("a", str, loader=str),
    ):
        with pytest.raises(TypeError):
            call()
    with pytest.raises(ValueError):
        m.get_or_compute("d", str, timeout=-1)  # checked on a miss
    assert dict(m.items()) == {"a": 1, "b": "bb", "c": "ccc"}


@pytest.mark.parametrize("policy", [None, "tinylfu", "lru"], ids=["ConcurrentMap", "Cache", "lru"])
def test_a_subclass_get_is_what_a_hit_reads(policy: str | None) -> None:
    # the native maps answer a hit in C only while get is their own: a class that
    # overrides get (a subclass here; a feature's mixin, the race detector) is read
    # through it, hit and miss alike
    from safemap import Cache

    base: type[Any] = ConcurrentMap if policy is None else Cache
    reads: list[Any] = []

    class Counting(base):  # type: ignore[valid-type, misc]
        def get(self, key: Any, default: Any = None) -> Any:
            reads.append(key)
            value = super().get(key, default)
            return value * 10 if isinstance(value, int) else value

    m = Counting() if policy is None else Counting(8, policy=policy)
    m["a"] = 1
    assert m.get_or_compute("a", lambda _k: pytest.fail("loaded a present key")) == 10
    assert m.get_or_compute("b", lambda _k: 2) == 2  # the loaded value, as stored
    assert reads == ["a", "b", "b"]  # the first looks, and the load's re-check
    assert m.get_or_compute("b", str) == 20
    base_map = base() if policy is None else base(8, policy=policy)
    base_map["a"] = 1
    assert base_map.get_or_compute("a", str) == 1  # the plain class: its own read
