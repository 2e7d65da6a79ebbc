"""AsyncActorMap: awaitable API, cancellation and deadlines, backpressure, failures,
re-entry through the threadsafe view, lifecycle, task leaks, exact counts across tasks and
threads.

asyncio runs one callback at a time in FIFO order, so the tests pin down "queued but not
started" exactly: a task that has put its request is suspended, and the owner (a callback
the put scheduled) runs only after the callbacks already ready. Each such test asserts the
queue depth it relies on, so a change in scheduling fails loudly instead of passing wrongly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import operator
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from support.actor import WAIT, Background

from safemap import DELETE, FrozenMap, MapBusyError, MapClosedError, RecursiveUpdateError
from safemap.actor import AsyncActorMap, CircuitBreaker, CircuitOpenError, ThreadsafeView
from safemap.actor._handoff import ThreadCaller


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(main(), WAIT))  # type: ignore[arg-type]


async def queued_tasks(
    m: AsyncActorMap[Any, Any], *coros: Any, depth: int | None = None
) -> list[asyncio.Task[Any]]:
    """Start one task per call and let each put its request (``depth`` of them fit in the
    queue, the others wait for a slot); the owner has not started any of them yet."""
    tasks = [asyncio.create_task(c) for c in coros]
    await asyncio.sleep(0)
    assert m.stats().mailbox.depth == (len(coros) if depth is None else depth)
    return tasks


def block_loop(d: dict[Any, Any]) -> str:
    """An ``execute`` body that keeps the loop (and so the owner) busy past short deadlines."""
    time.sleep(0.05)
    return "blocked"


# ------------------------------------------------------------------------ API


def test_awaitable_protocol_methods() -> None:
    async def main() -> None:
        async with AsyncActorMap({"a": 1}, b=2) as m:
            assert await m.get("a") == 1
            assert await m.get("zz", "dflt") == "dflt"
            assert await m.load("b") == (2, True)
            assert await m.contains("a") and not await m.contains("zz")
            await m.store("c", 3)
            assert await m.size() == 3
            assert await m.merge("a", 10, operator.add) == 11
            assert await m.compute("n", lambda k, old: 1) == 1
            assert await m.compute_if_absent("n", lambda k: 99) == 1
            assert await m.compute_if_present("n", lambda k, old: DELETE) is None
            assert await m.load_or_store("a", 0) == (11, True)
            assert await m.swap("c", 30) == (3, True)
            assert await m.compare_and_swap("c", 30, 31) is True
            assert await m.compare_and_delete("c", 0) is False
            assert await m.setdefault("d", 4) == 4
            assert await m.pop("d") == 4
            assert await m.pop("d", None) is None
            with pytest.raises(KeyError):
                await m.pop("d")
            await m.update({"e": 5}, f=6)
            assert await m.delete_if(lambda k, v: k in "ef") == 2
            await m.delete("zz")
            assert await m.load_and_delete("b") == (2, True)
            seen: list[Any] = []
            await m.range(lambda k, v: seen.append(k))
            assert sorted(seen) == ["a", "c"]
            assert await m.snapshot() == FrozenMap({"a": 11, "c": 31})
            assert await m.transaction(lambda view: view.pop("c")) == 31
            assert await m.execute(lambda d, k, v: d.setdefault(k, v), "z", 26) == 26
            assert await m.popitem() == ("z", 26)
            await m.clear()
            with pytest.raises(KeyError):
                await m.popitem()
            assert "AsyncActorMap" in repr(m)

    run(main)


def test_many_tasks_count_exactly() -> None:
    async def main() -> None:
        async with AsyncActorMap[int, int](maxsize=8) as m:  # small queue: tasks wait for slots

            async def worker(i: int) -> None:
                for j in range(100):
                    await m.merge(j % 7, 1, operator.add)

            await asyncio.gather(*(worker(i) for i in range(40)))
            assert await m.snapshot() == {
                k: sum(1 for j in range(100) if j % 7 == k) * 40 for k in range(7)
            }
            assert m.stats().mailbox.peak_depth == 8

    run(main)


def test_execute_keeps_a_multi_key_invariant_across_tasks_and_threads() -> None:
    async def main() -> None:
        async with AsyncActorMap({a: 100 for a in range(4)}) as m:
            view = m.threadsafe

            def transfer(d: dict[int, int], src: int, dst: int) -> int:
                amount = min(d[src], 3)
                d[src] -= amount
                d[dst] += amount
                return sum(d.values())

            async def task(i: int) -> set[int]:
                return {await m.execute(transfer, (i + j) % 4, (i + j + 1) % 4) for j in range(200)}

            def thread(i: int) -> set[int]:
                return {view.execute(transfer, (i + j + 2) % 4, (i + j) % 4) for j in range(200)}

            results = await asyncio.gather(
                *(task(i) for i in range(4)),
                *(asyncio.to_thread(thread, i) for i in range(3)),
            )
            assert set().union(*results) == {400}
            assert sum((await m.snapshot()).values()) == 400
            assert m.stats().mailbox.completed >= 1400

    run(main)


# ------------------------------------------------------ cancellation, deadlines


def test_task_cancelled_before_start_is_never_applied() -> None:
    async def main() -> None:
        async with AsyncActorMap[str, int]() as m:
            (task,) = await queued_tasks(m, m.store("x", 1))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await m.get("x") is None
            assert m.stats().mailbox.cancelled == 1
            assert m.stats().mailbox.depth == 0  # its slot was freed

    run(main)


def test_asyncio_timeout_before_start_is_never_applied() -> None:
    async def main() -> None:
        async with AsyncActorMap[str, int]() as m:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0):  # fires before the owner's turn
                    await m.store("x", 1)
            assert await m.get("x") is None
            assert m.stats().mailbox.cancelled == 1

    run(main)


def test_cancelled_after_the_owner_ran_it_keeps_the_effect() -> None:
    async def main() -> None:
        async with AsyncActorMap[str, int]() as m:
            (task,) = await queued_tasks(m, m.store("x", 1))
            await asyncio.sleep(0)  # the owner runs it; the task has not resumed yet
            assert m.stats().mailbox.completed == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await m.get("x") == 1
            assert m.stats().mailbox.dropped == 1

    run(main)


def test_per_call_deadline_passing_in_the_queue_is_busy_and_not_applied() -> None:
    async def main() -> None:
        async with AsyncActorMap[str, int]() as m:
            blocker, late = await queued_tasks(
                m,
                m.execute(block_loop),
                m.execute(lambda d: d.__setitem__("late", 1), timeout=0.01),
            )
            assert await blocker == "blocked"
            with pytest.raises(MapBusyError, match="not applied"):
                await late
            assert await m.get("late") is None

    run(main)


def test_full_queue_fails_nonblocking_calls_at_once() -> None:
    async def main() -> None:
        async with AsyncActorMap[str, int](maxsize=2) as m:
            queued = await queued_tasks(m, m.store("q1", 1), m.store("q2", 2))
            with pytest.raises(MapBusyError, match="non-blocking"):
                await m.execute(lambda d: d.__setitem__("nowait", 1), block=False)
            assert (m.stats().mailbox.rejected, m.stats().mailbox.depth) == (1, 2)
            await asyncio.gather(*queued)
            assert await m.snapshot() == {"q1": 1, "q2": 2}

    run(main)


def test_map_default_timeout_applies_to_every_call() -> None:
    async def main() -> None:
        async with AsyncActorMap[str, int](maxsize=1, timeout=0.01) as m:
            # The blocker occupies the owner past the others' deadlines: "late" waits in the
            # queue, "waiter" first for a slot (the queue is full), then in the queue.
            blocker, late, waiter = await queued_tasks(
                m,
                m.execute(block_loop, timeout=WAIT),
                m.store("late", 1),
                m.store("waiter", 2),
                depth=1,
            )
            assert await blocker == "blocked"
            for call in (late, waiter):
                with pytest.raises(MapBusyError):
                    await call
            assert await m.snapshot() == {}

    run(main)


def test_cancelled_while_waiting_for_a_slot_leaves_nothing_behind() -> None:
    async def main() -> None:
        async with AsyncActorMap[str, int](maxsize=1) as m:
            (first,) = await queued_tasks(m, m.store("first", 1))
            second = asyncio.create_task(m.store("second", 2))
            third = asyncio.create_task(m.store("third", 3))
            await asyncio.sleep(0)
            second.cancel()  # it was woken for a slot or still waiting: either way, gone
            await asyncio.gather(first, third)
            with pytest.raises(asyncio.CancelledError):
                await second
            assert await m.snapshot() == {"first": 1, "third": 3}

    run(main)


# ------------------------------------------------------------------- failures


class Boom(Exception):
    pass


def raise_boom(d: dict[Any, Any]) -> None:
    raise Boom("from the owner")


def test_a_raising_request_fails_only_its_caller() -> None:
    async def main() -> None:
        async with AsyncActorMap({"k": 0}) as m:

            async def counter() -> None:
                for _ in range(100):
                    await m.merge("k", 1, operator.add)

            others = asyncio.gather(counter(), counter())
            with pytest.raises(Boom) as info:
                await m.execute(raise_boom)
            names = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
            assert "raise_boom" in names
            with pytest.raises(RuntimeError):  # StopIteration cannot travel in a future
                await m.execute(lambda d: next(iter(())))
            await others
            assert await m.get("k") == 200
            assert m.stats().mailbox.failed == 2

    run(main)


# -------------------------------------------------------------------- re-entry


def test_view_calls_from_callbacks_run_inline_under_the_reentry_rules() -> None:
    async def main() -> None:
        async with AsyncActorMap({"a": 1, "b": 2}) as m:
            view = m.threadsafe
            assert await m.compute("a", lambda k, old: old + view["b"]) == 3
            with pytest.raises(RecursiveUpdateError):
                await m.compute("a", lambda k, old: view.store("b", 0))
            with pytest.raises(RecursiveUpdateError):
                await m.transaction(lambda v: view.get("a"))
            assert await m.execute(lambda d: (view.store("c", 3), dict(view))[1]) == {
                "a": 3,
                "b": 2,
                "c": 3,
            }
            # Elsewhere on the loop's thread a view call cannot wait for the loop: it runs now.
            view["d"] = 4
            assert await m.get("d") == 4
            assert m.stats().mailbox.accepted == 5  # the awaited calls, not inline ones

    run(main)


def test_map_belongs_to_one_loop() -> None:
    m: AsyncActorMap[str, int] = AsyncActorMap()  # no loop yet: binds on first use
    with pytest.raises(RuntimeError):
        ThreadsafeView(m)

    async def use() -> int | None:
        await m.store("x", 1)
        return await m.get("x")

    assert run(use) == 1
    with pytest.raises(MapClosedError):  # its loop is closed now
        run(use)

    async def other_loop(m2: AsyncActorMap[str, int]) -> None:
        with pytest.raises(RuntimeError, match="another event loop"):
            await m2.get("x")

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        m2: AsyncActorMap[str, int] = asyncio.run_coroutine_threadsafe(_make_map(), loop).result(
            WAIT
        )
        run(lambda: other_loop(m2))
        assert m2.threadsafe.execute(len) == 0
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()


async def _make_map() -> AsyncActorMap[str, int]:
    return AsyncActorMap()


# ------------------------------------------------------------------- lifecycle


def test_aclose_drains_or_rejects_and_later_calls_raise() -> None:
    async def main() -> None:
        m: AsyncActorMap[str, int] = AsyncActorMap()
        tasks = await queued_tasks(m, m.store("a", 1), m.store("b", 2))
        await m.aclose()  # drains
        await asyncio.gather(*tasks)
        assert m.closed
        with pytest.raises(MapClosedError):
            await m.get("a")

        n: AsyncActorMap[str, int] = AsyncActorMap()
        tasks = await queued_tasks(n, n.store("a", 1), n.store("b", 2))
        await n.aclose(drain=False)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, MapClosedError) for r in results)
        assert n.stats().mailbox.cancelled == 2
        assert n.stats().mailbox.completed == 0
        await n.aclose()  # idempotent

    run(main)


def test_view_close_from_another_thread_and_calls_after_close() -> None:
    async def main() -> None:
        m: AsyncActorMap[str, int] = AsyncActorMap({"a": 1})
        view = m.threadsafe
        assert await asyncio.to_thread(lambda: view["a"]) == 1
        await asyncio.to_thread(view.close)
        assert m.closed and view.closed
        with pytest.raises(MapClosedError):
            await asyncio.to_thread(lambda: view["a"])
        assert repr(view) == "ThreadsafeView(<closed>)"

    run(main)


def test_view_cannot_be_copied_or_pickled() -> None:
    import pickle

    async def main() -> None:
        async with AsyncActorMap({"a": 1}) as m:
            view = m.threadsafe
            assert view.map is m
            with pytest.raises(TypeError, match="snapshot"):
                view.copy()
            with pytest.raises(TypeError):
                pickle.dumps(view)

    run(main)


def test_idle_and_dropped_maps_leave_no_tasks_or_pending_callbacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refs: list[weakref.ref[Any]] = []

    async def main() -> None:
        before = asyncio.all_tasks()
        for i in range(5):
            m: AsyncActorMap[int, int] = AsyncActorMap({i: i})
            await m.merge(i, 1, operator.add)
            refs.append(weakref.ref(m))
            del m
        gc.collect()
        assert asyncio.all_tasks() == before
        assert all(ref() is None for ref in refs)
        kept: AsyncActorMap[int, int] = AsyncActorMap()  # left open when the loop ends
        await kept.store(1, 1)

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        run(main)
        gc.collect()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_threads_waiting_on_a_loop_that_closes_get_map_closed_error() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    m = asyncio.run_coroutine_threadsafe(_make_map(), loop).result(WAIT)
    view = m.threadsafe
    view["a"] = 1
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT)
    # The loop is stopped: a call now waits for it; then the loop closes without running
    # it. Whether the call was submitted before or after the close, it must fail, not hang.
    caller = Background(view.store, "b", 2)
    loop.close()
    caller.join()
    assert isinstance(caller.error, MapClosedError)
    with pytest.raises(MapClosedError):
        view["a"]
    view.close()
    assert view.closed


def test_circuit_breaker_sheds_calls_while_open() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=1, cooldown=5, clock=lambda: now[0])

    async def main() -> None:
        async with AsyncActorMap[str, int](maxsize=1, breaker=breaker) as m:
            tasks = await queued_tasks(m, m.store("a", 1))
            with pytest.raises(MapBusyError):
                await m.execute(len, block=False)
            with pytest.raises(CircuitOpenError):
                await m.store("c", 3)
            assert m.stats().mailbox.breaker == "open"
            now[0] += 5
            await asyncio.gather(*tasks)
            await m.store("d", 4)
            assert m.stats().mailbox.breaker == "closed"
            assert await m.snapshot() == {"a": 1, "d": 4}

    run(main)


def test_open_circuit_stays_open_while_the_owner_drains_its_backlog() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=1, cooldown=60, clock=lambda: now[0])

    async def main() -> None:
        async with AsyncActorMap[str, int](maxsize=1, breaker=breaker) as m:
            tasks = await queued_tasks(m, m.store("a", 1))
            with pytest.raises(MapBusyError):
                await m.execute(len, block=False)
            await asyncio.gather(*tasks)  # the owner started the backlog while open
            with pytest.raises(CircuitOpenError):
                await m.store("c", 3)
            assert m.stats().mailbox.breaker == "open"
            now[0] += 60
            assert m.stats().mailbox.breaker == "half-open"
            await m.store("d", 4)
            assert m.stats().mailbox.breaker == "closed"
            assert await m.snapshot() == {"a": 1, "d": 4}

    run(main)


def test_async_map_stored_in_itself_is_collected() -> None:
    refs: list[weakref.ref[Any]] = []

    async def main() -> None:
        m: AsyncActorMap[str, Any] = AsyncActorMap()
        await m.store("self", m)
        m.threadsafe["view"] = m.threadsafe
        refs.append(weakref.ref(m))
        del m
        gc.collect()
        assert refs[0]() is None

    run(main)


# ------------------------------------------------- calls from other threads: outcomes


class LoopThread:
    """An event loop run by a daemon thread, for the view tests (``stop`` and ``close``
    are the test's to call)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(BaseException):  # a test kills the loop's thread on purpose
            self.loop.run_forever()

    def new_map(self, **options: Any) -> AsyncActorMap[Any, Any]:
        async def make() -> AsyncActorMap[Any, Any]:
            return AsyncActorMap(**options)

        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(WAIT)

    def block(self) -> threading.Event:
        """Block the loop until the returned event is set."""
        entered, release = threading.Event(), threading.Event()

        def hold() -> None:
            entered.set()
            release.wait(WAIT)

        self.loop.call_soon_threadsafe(hold)
        assert entered.wait(WAIT)
        return release

    def stop_and_close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


# "error": a thread's call reaching the loop as asyncio.run shuts down once left a task
# whose coroutine never started ("coroutine 'AsyncMailbox.put' was never awaited").
@pytest.mark.filterwarnings("error")
def test_view_call_racing_asyncio_run_shutdown_reports_its_real_outcome() -> None:
    # Issue 18.5: a view call applied in the loop's last turns must not report
    # MapClosedError ("not applied"); one that did not run must not be applied.
    async def main(attempt: int) -> tuple[AsyncActorMap[str, int], Background]:
        m: AsyncActorMap[str, int] = AsyncActorMap()
        caller = Background(m.threadsafe.store, "k", attempt)
        for _ in range(attempt % 5):  # vary where in the shutdown the call lands
            await asyncio.sleep(0)
        return m, caller

    outcomes: list[str] = []
    for attempt in range(40):
        m, caller = asyncio.run(main(attempt))
        caller.join()
        data = m._owner.data
        if caller.error is None:
            assert data == {"k": attempt}, "returned normally but not applied"
            outcomes.append("applied")
        else:
            assert isinstance(caller.error, MapClosedError), caller.error
            assert data == {}, "MapClosedError ('not applied') for an applied call"
            outcomes.append("not applied")
    assert len(outcomes) == 40  # both outcomes are legitimate; each must match the data


def test_view_deadline_bounds_the_whole_call_while_the_loop_is_blocked() -> None:
    # Issue 18.7: the deadline runs from the caller's side, not from when the call reaches
    # the loop; and a call that timed out before it ran never runs.
    lt = LoopThread()
    try:
        m = lt.new_map()
        with_default = lt.new_map(timeout=0.05)
        ran: list[str] = []
        release = lt.block()
        late = Background(m.threadsafe.execute, lambda d: ran.append("late"), timeout=0.05)
        with pytest.raises(MapBusyError):
            late.value()  # answered while the loop is still blocked ...
        with pytest.raises(MapBusyError):
            Background(with_default.threadsafe.store, "never", 1).value()  # ... by default too
        release.set()
        # FIFO: everything sent before these has been handled when they return.
        assert m.threadsafe.execute(len) == 0
        # (a per-call deadline, not the map's 0.05 s: a busy machine may take longer than
        # that to run the loop once it is free)
        assert with_default.threadsafe.execute(len, timeout=30) == 0
        assert ran == []  # the timed-out calls never ran, not even once the loop was free
        for amap in (m, with_default):
            stats = amap.stats().mailbox
            assert (stats.accepted, stats.completed) == (1, 1)
    finally:
        lt.stop_and_close()


def test_view_call_on_the_loops_own_thread_while_it_is_stopped_runs_inline() -> None:
    # Issue 18.7: after run_until_complete, the loop's own thread must not wait for a loop
    # that only it would run.
    def scenario() -> list[Any]:
        loop = asyncio.new_event_loop()
        try:
            m = loop.run_until_complete(_make_map())
            view = m.threadsafe
            view["a"] = 1
            got = [view["a"], view.execute(len, timeout=0.05), dict(view)]
            got.append(loop.run_until_complete(m.get("a")))  # the loop sees it too
            return got
        finally:
            loop.close()

    assert Background(scenario).value() == [1, 1, {"a": 1}, 1]


def test_view_outcome_is_unknown_when_the_loop_dies_inside_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from safemap.actor import OutcomeUnknownError
    from safemap.actor._handoff import ThreadCaller

    lt = LoopThread()
    m = lt.new_map()
    view = m.threadsafe

    def die(self: ThreadCaller, result: Any) -> None:
        raise SystemExit  # the loop's thread ends after running, before handing back

    monkeypatch.setattr(ThreadCaller, "set_result", die)
    caller = Background(view.store, "a", 1)
    lt.thread.join(WAIT)
    assert not lt.thread.is_alive()
    lt.loop.close()
    caller.join()
    assert isinstance(caller.error, OutcomeUnknownError)
    assert not isinstance(caller.error, MapClosedError)
    assert m._owner.data == {"a": 1}  # it had run: "not applied" would have been a lie


# ------------------------------------------------------------------------ misuse


def test_awaiting_from_another_loop_is_one_clear_error_and_changes_nothing() -> None:
    lt = LoopThread()
    try:
        m = lt.new_map()
        m.threadsafe["a"] = 1
        accepted = m.stats().mailbox.accepted

        async def wrong_loop() -> None:
            for call in (m.store("b", 2), m.get("a"), m.execute(len), m.aclose()):
                with pytest.raises(RuntimeError, match=r"another event loop.*\.threadsafe"):
                    await call

        run(wrong_loop)  # asyncio.run in this thread: a second loop
        # A thread awaiting the map in a loop of its own is the same mistake.
        with pytest.raises(RuntimeError, match="another event loop"):
            Background(asyncio.run, m.store("c", 3)).value()
        assert m.stats().mailbox.accepted == accepted  # nothing was queued ...
        assert not m.closed
        assert m.threadsafe.snapshot() == {"a": 1}  # ... nothing applied, nothing lost
        # What works from a thread: the view, or handing the coroutine to the map's loop.
        m.threadsafe["b"] = 2
        asyncio.run_coroutine_threadsafe(m.store("c", 3), lt.loop).result(WAIT)
        assert m.threadsafe.snapshot() == {"a": 1, "b": 2, "c": 3}
    finally:
        lt.stop_and_close()


def test_after_its_loop_closed_the_map_says_closed_and_every_call_raises_map_closed() -> None:
    lt = LoopThread()
    m = lt.new_map()
    view = m.threadsafe
    view["a"] = 1
    lt.stop_and_close()
    assert m.closed and view.closed
    assert m.stats().mailbox.closed
    assert repr(view) == "ThreadsafeView(<closed>)"
    with pytest.raises(MapClosedError):
        view["a"]
    with pytest.raises(MapClosedError):
        view.store("b", 2)
    with pytest.raises(MapClosedError):
        m.threadsafe.execute(len, timeout=0.05)

    async def later() -> None:
        with pytest.raises(MapClosedError):
            await m.get("a")
        with pytest.raises(MapClosedError):
            await m.store("b", 2)
        await m.aclose()  # closing is still fine (idempotent)

    run(later)
    view.close()
    assert m._owner.data == {"a": 1}  # nothing half-applied


def test_async_map_options_are_maxsize_name_timeout_breaker_and_nothing_else() -> None:
    async def main() -> None:
        async with AsyncActorMap({"name": 1, "maxsize": 2}, daemon=3) as m:
            # daemon is not an option of AsyncActorMap: an ordinary keyword item.
            assert await m.snapshot() == {"name": 1, "maxsize": 2, "daemon": 3}
            assert m.stats().mailbox.capacity == 1024
        for bad in ({"name": 1}, {"breaker": "x"}, {"timeout": "1"}):
            with pytest.raises(TypeError):
                AsyncActorMap(**bad)

    run(main)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
def test_interrupted_view_call_never_runs() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT is delivered to the main thread only")
    lt = LoopThread()
    try:
        m = lt.new_map()
        release = lt.block()
        main = threading.main_thread().ident
        assert main is not None
        waiting = threading.Event()
        original = ThreadCaller.wait

        def wait(self: ThreadCaller, timeout: float) -> bool:
            waiting.set()
            return original(self, timeout)

        def interrupt() -> None:
            assert waiting.wait(WAIT)
            signal.pthread_kill(main, signal.SIGINT)

        ThreadCaller.wait = wait  # type: ignore[method-assign]
        try:
            helper = Background(interrupt)
            with pytest.raises(KeyboardInterrupt):
                m.threadsafe.store("interrupted", 1)  # waits for the blocked loop
            helper.value()
        finally:
            ThreadCaller.wait = original  # type: ignore[method-assign]
        release.set()
        assert m.threadsafe.execute(len) == 0  # FIFO: the interrupted call was handled
        assert m.stats().mailbox.accepted == 1  # ... and never admitted
        assert "interrupted" not in m.threadsafe
    finally:
        lt.stop_and_close()
