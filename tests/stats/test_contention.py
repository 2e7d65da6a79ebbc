"""Lock contention: counted and timed only when a lock was found held (``stats()``), and the
sampled contention profile (``safemap.protocol.contention``)."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from support.actor import Background, wait_until

import safemap
from safemap.protocol import contention
from safemap.protocol.contention import contention_profile, register_backend

JOIN = 60.0


def _waiting_in_slow_path(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked in a map's timed slow path (``_contended``)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "_contended":
            return True
        frame = frame.f_back
    return False


def _contend(m: Any, blocked_call: Callable[[], object]) -> None:
    """Hold ``m``'s write lock (inside a compute callback) until ``blocked_call``, made by
    another thread, is waiting for it in the slow path; then let both finish."""
    inside, release = threading.Event(), threading.Event()

    def hold(key: object, old: object) -> int:
        inside.set()
        assert release.wait(JOIN)
        return 1

    holder = Background(m.compute, "held", hold)
    assert inside.wait(JOIN)
    waiter = Background(blocked_call)
    wait_until(lambda: _waiting_in_slow_path(waiter._thread), "the caller waits for the lock")
    release.set()
    holder.join()
    waiter.join()
    assert holder.error is None and waiter.error is None


@pytest.mark.parametrize("cls", [safemap.LockedMap, safemap.RWLockMap])
def test_uncontended_acquisitions_are_not_timed(cls: type[Any]) -> None:
    m = cls(a=1)
    for _ in range(100):
        m.get("a")
        m["b"] = 2
    s = m.stats()
    assert (s.lock_contentions, s.lock_wait_seconds) == (0, 0.0)
    assert s.lock_acquisitions == 1 + 200  # the constructor's store, then each call once


@pytest.mark.parametrize("cls", [safemap.LockedMap, safemap.RWLockMap])
@pytest.mark.parametrize("blocked", ["get", "set", "len"])
def test_a_contended_acquisition_is_counted_and_timed(cls: type[Any], blocked: str) -> None:
    m = cls(a=1)
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: m.get("a"),
        "set": lambda: m.__setitem__("b", 2),
        "len": lambda: len(m),
    }
    _contend(m, calls[blocked])
    s = m.stats()
    assert s.lock_contentions == 1
    assert s.lock_wait_seconds > 0


@pytest.mark.parametrize("cls", [safemap.LockedMap, safemap.RWLockMap])
def test_profile_names_the_waiting_call_site(cls: type[Any]) -> None:
    # Sampled once, under the map's name: the map's own lock reports nothing to the native
    # sampler (an RWLockMap's wait was once sampled twice, as "RWLock" too).
    m = cls(a=1)
    kind = f"{cls.__name__}.read"

    def site_that_waits() -> object:
        return m.get("a")

    with contention_profile() as profile:
        _contend(m, site_that_waits)
    assert profile.samples == 1
    report = profile.report()
    assert "site_that_waits" in report.splitlines()[2]
    assert kind in report
    folded = profile.folded().splitlines()
    assert len(folded) == 1
    stack, micros = folded[0].rsplit(" ", 1)
    assert int(micros) >= 0
    frames = stack.split(";")
    assert frames[-1] == f"[{kind}]"
    assert "site_that_waits" in frames[-2]
    assert not any(re.match(r"safemap\.", f) for f in frames)  # safemap's frames left out
    assert " " not in stack


def test_profile_samples_one_in_every() -> None:
    profile = contention.ContentionProfile(every=3)
    with profile:
        for _ in range(10):
            contention.record("X.read", 0.001)
    assert profile.samples == 4  # the 1st, 4th, 7th and 10th
    assert profile.wait_seconds == pytest.approx(0.004)
    contention.record("X.read", 0.001)  # no profile active: nothing recorded
    assert profile.samples == 4


def test_only_one_profile_at_a_time() -> None:
    with (
        contention_profile(),
        pytest.raises(RuntimeError, match="already active"),
        contention_profile(),
    ):
        pass
    with contention_profile():  # the first one ended: a new one may start
        pass


def test_every_must_be_positive() -> None:
    with pytest.raises(ValueError):
        contention_profile(0)


def test_backends_are_switched_on_and_off() -> None:
    calls: list[tuple[int, object]] = []

    def setter(every: int, callback: Callable[[str, float], None] | None) -> None:
        calls.append((every, callback))

    register_backend(setter)
    try:
        with contention_profile(every=7) as profile:
            every, callback = calls[-1]
            assert every == 7 and callback is not None
            callback("ConcurrentMap.shard", 0.002)  # as a C lock reports a sampled wait
        assert calls[-1] == (0, None)
        assert profile.samples == 1  # backends sample themselves: recorded as given
        assert "test_backends_are_switched_on_and_off" in profile.report()
    finally:
        contention._backends.remove(setter)


def test_actor_mailbox_wait_is_profiled() -> None:
    from support.actor import Gate

    with safemap.ActorMap(maxsize=1) as m, contention_profile() as profile:
        gate = Gate()
        held = Background(m.execute, gate.hold)
        assert gate.entered.wait(JOIN)
        queued = Background(m.__setitem__, "q", 1)
        wait_until(lambda: len(m._mailbox._items) == 1, "queued")

        def waits_for_room() -> None:
            m["w"] = 2

        waiter = Background(waits_for_room)
        wait_until(lambda: m._mailbox._putters == 1, "waiting for room")
        gate.open()
        for bg in (held, queued, waiter):
            bg.join()
    assert profile.samples == 1
    assert "waits_for_room" in profile.report()
    assert "[ActorMap.mailbox]" in profile.folded()
