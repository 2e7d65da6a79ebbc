"""``safemap._frames.current_frames``: ``sys._current_frames()`` with no collection (and so
no finalizer) running inside it, the shape of CPython's deadlock python/cpython#106883
that hung this suite (a redis connection's ``__del__`` ran inside it on one thread while
another waited for the thread-list lock holding the GIL)."""

from __future__ import annotations

import gc
import sys
import threading
from types import FrameType
from typing import Any

import pytest

from safemap import _frames
from safemap._frames import current_frames


def test_it_returns_every_threads_frame() -> None:
    release = threading.Event()
    t = threading.Thread(target=release.wait, args=(30,), daemon=True)
    t.start()
    try:
        frames = current_frames()
        assert threading.get_ident() in frames and t.ident in frames
        assert all(isinstance(f, FrameType) for f in frames.values())
    finally:
        release.set()
        t.join(30)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_paused_during_the_call_and_restored_after(
    monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    seen: list[tuple[bool, bool]] = []

    def spy() -> dict[int, Any]:
        seen.append((gc.isenabled(), _frames._lock.locked()))
        return {}

    monkeypatch.setattr(sys, "_current_frames", spy)
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        assert current_frames() == {}
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [(False, True)]


def test_the_collector_is_restored_when_the_call_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing() -> dict[int, Any]:
        raise MemoryError

    monkeypatch.setattr(sys, "_current_frames", failing)
    assert gc.isenabled()
    with pytest.raises(MemoryError):
        current_frames()
    assert gc.isenabled() and not _frames._lock.locked()


def test_concurrent_calls_leave_the_collector_enabled(run_threads: Any) -> None:
    assert gc.isenabled()

    def calls(_i: int) -> None:
        for _ in range(300):
            assert threading.get_ident() in current_frames()

    run_threads(calls, 4)
    assert gc.isenabled()
