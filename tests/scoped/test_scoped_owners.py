"""``bind(k, v, owner=...)``: the entry lives as long as its owner (a thread, an asyncio
task, any weak-referenceable object), on every map type (docs/scoped.md)."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from support.actor import wait_until

from safemap import MISSING, LockedMap
from safemap.protocol import expiry

from .helpers import count_removals


def test_thread_owned_entries_are_gone_when_join_returns(
    map_type: type[Any], closing: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = closing(map_type())
    removals = count_removals(monkeypatch)
    n_threads, n_keys = 8, 5

    def body(i: int) -> None:
        me = threading.current_thread()
        for j in range(n_keys):
            m.bind(f"t{i}-{j}", [i, j], owner=me)
        assert len([k for k in m if k.startswith(f"t{i}-")]) == n_keys

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    # No waiting: every entry was removed before its thread's join() returned.
    assert len(m) == 0 and m.snapshot() == {}
    assert sorted(removals) == sorted(f"t{i}-{j}" for i in range(n_threads) for j in range(n_keys))


def test_thread_ending_by_an_exception_removes_its_entries(
    map_type: type[Any], closing: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = closing(map_type())
    monkeypatch.setattr(threading, "excepthook", lambda args: None)

    def body() -> None:
        m.bind("k", 1, owner=threading.current_thread())
        raise RuntimeError("the thread dies")

    t = threading.Thread(target=body)
    t.start()
    t.join(30)
    assert "k" not in m


def test_newer_value_survives_the_owner_thread(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())

    def body() -> None:
        m.bind("k", ["old"], owner=threading.current_thread())
        m["k"] = ["new"]

    t = threading.Thread(target=body)
    t.start()
    t.join(30)
    assert m["k"] == ["new"]


def test_binding_to_another_thread(map_type: type[Any], closing: Callable[[Any], Any]) -> None:
    m = closing(map_type())
    go = threading.Event()
    t = threading.Thread(target=go.wait, args=(30,))
    t.start()
    m.bind("k", 1, owner=t)
    assert m["k"] == 1
    go.set()
    t.join(30)
    wait_until(lambda: "k" not in m, "the entry of a thread that ended is removed")


def test_binding_to_another_thread_with_a_hook_is_done_by_join(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    """A thread that bound an entry to itself has a hook: entries other threads bind to it
    are removed before its join() returns too."""
    m = closing(map_type())
    bound, go = threading.Event(), threading.Event()

    def body() -> None:
        m.bind("own", 1, owner=threading.current_thread())
        bound.set()
        go.wait(30)

    t = threading.Thread(target=body)
    t.start()
    assert bound.wait(30)
    m.bind("given", 2, owner=t)
    go.set()
    t.join(30)
    assert "own" not in m and "given" not in m


def test_binding_to_a_finished_thread_removes_at_once(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join(30)
    b = m.bind("k", 1, owner=t)
    assert "k" not in m and not b.active


@pytest.mark.parametrize("end", ["return", "raise", "cancel"])
def test_task_owned_entry_is_removed_when_the_task_is_done(
    map_type: type[Any], closing: Callable[[Any], Any], end: str
) -> None:
    m = closing(map_type())

    async def main() -> None:
        started = asyncio.Event()

        async def work() -> None:
            m.bind("k", 1, owner=asyncio.current_task())
            started.set()
            await asyncio.sleep(3600 if end == "cancel" else 0)
            if end == "raise":
                raise ValueError("task failed")

        task = asyncio.create_task(work())
        await started.wait()
        assert m["k"] == 1
        if end == "cancel":
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # the done callback runs next on the loop
        assert "k" not in m

    asyncio.run(main())


def test_binding_to_a_done_task_removes_at_once(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())

    async def main() -> None:
        task = asyncio.create_task(asyncio.sleep(0))
        await task
        b = m.bind("k", 1, owner=task)
        assert "k" not in m and not b.active

    asyncio.run(main())


def test_object_owned_entry_is_removed_when_the_owner_is_collected(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())

    class Session:
        pass

    owner = Session()
    m.bind("k", 1, owner=owner)
    gc.collect()
    assert m["k"] == 1
    del owner
    gc.collect()
    wait_until(lambda: "k" not in m, "the entry of a collected owner is removed")


def test_bad_owner_or_ttl_is_refused_before_storing(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())
    with pytest.raises(TypeError, match="weak references"):
        m.bind("k", 1, owner=42)
    for ttl in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="ttl"):
            m.bind("k", 1, ttl=ttl)
    for ttl in ("1", True, [1]):
        with pytest.raises(TypeError, match="ttl"):
            m.bind("k", 1, ttl=ttl)
    assert "k" not in m and len(m) == 0
    assert type(m) is map_type  # a refused ttl switches nothing


def test_failing_removal_at_thread_end_is_reported_not_raised(
    unraisable: list[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Failing(LockedMap[Any, Any]):
        __slots__ = ()

        def compute(self, key: Any, fn: Any) -> Any:
            raise OSError("store unreachable")

    hook_errors: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", hook_errors.append)
    m = Failing()

    def body() -> None:
        m.bind("k", 1, owner=threading.current_thread())

    t = threading.Thread(target=body)
    t.start()
    t.join(30)
    assert hook_errors == []  # nothing raised into the owner thread
    assert [type(e) for e in unraisable] == [OSError]
    assert any("k" in note for note in getattr(unraisable[0], "__notes__", []))


def test_no_thread_left_behind_when_the_map_is_dropped() -> None:
    """Pending bindings of every kind keep the one sweeper thread; dropping the map ends
    them, and the sweeper exits."""
    go = threading.Event()
    waiter = threading.Thread(target=go.wait, args=(30,))
    waiter.start()
    try:
        m: LockedMap[str, int] = LockedMap()

        class Owner:
            pass

        owner = Owner()
        m.bind("ttl", 1, ttl=3600)
        m.bind("thread", 2, owner=waiter)
        m.bind("object", 3, owner=owner)
        sweeper = expiry.sweeper_thread()
        assert sweeper is not None and sweeper.daemon
        assert [t for t in threading.enumerate() if t.name == "safemap-sweeper"] == [sweeper]
        del m
        gc.collect()
        wait_until(lambda: expiry.sweeper_thread() is None, "the sweeper exits")
        sweeper.join(30)
        assert not sweeper.is_alive()
        assert not [t for t in threading.enumerate() if t.name == "safemap-sweeper"]
    finally:
        go.set()
        waiter.join(30)


def test_owner_collected_inside_a_compute_callback_removes_after_the_lock(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    """The collector runs weak reference callbacks wherever it triggers, here inside a
    compute callback that holds the map's lock: the removal waits for the sweeper thread
    instead of running (and deadlocking or failing) there."""
    m = closing(map_type())

    class Owner:
        pass

    owner = Owner()
    m.bind("k", 1, owner=owner)
    holder = [owner]
    del owner

    def callback(_key: str, old: Any) -> int:
        holder.clear()
        gc.collect()  # the owner dies here, under the map's lock
        return 1 if old is MISSING else old + 1

    assert m.compute("x", callback) == 1
    wait_until(lambda: "k" not in m, "the sweeper removes the collected owner's entry")
    assert m["x"] == 1


def test_an_ended_binding_keeps_nothing_alive(
    map_type: type[Any], closing: Callable[[Any], Any], clock: expiry.ManualClock
) -> None:
    if map_type.__name__ == "RedisMap":
        pytest.skip("RedisMap: values are stored encoded, the map holds no Python object")
    m = closing(map_type())

    class Value:
        pass

    for kind in ("scoped", "ttl", "thread"):
        value = Value()
        ref = weakref.ref(value)
        if kind == "scoped":
            with m.scoped("k", value):
                pass
        elif kind == "ttl":
            m.bind("k", value, ttl=5).release()
        else:
            t = threading.Thread(
                target=lambda v=value: m.bind("k", v, owner=threading.current_thread())
            )
            t.start()
            t.join(30)
        del value
        gc.collect()
        assert ref() is None, kind


def test_entry_bound_to_the_main_thread_stays_and_needs_no_sweeper(
    map_type: type[Any], closing: Callable[[Any], Any]
) -> None:
    m = closing(map_type())
    wait_until(lambda: expiry.sweeper_thread() is None, "no sweeper from earlier tests")
    bindings: list[Any] = []
    t = threading.Thread(
        target=lambda: bindings.append(m.bind("k", 1, owner=threading.main_thread()))
    )
    t.start()
    t.join(30)
    assert m["k"] == 1 and bindings[0].active
    assert expiry.sweeper_thread() is None  # nothing to poll: it ends with the interpreter
    assert bindings[0].release() is True and "k" not in m
