"""The detector's own bookkeeping survives code that runs in the middle of it: an
allocation inside the detector can start a garbage collection on the spot, and the
collection's callbacks and finalizers may use a map the detector watches, on the same
thread."""

from __future__ import annotations

import gc
import sysconfig
import threading
from typing import Any

import pytest

import safemap
from safemap import race

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


@pytest.mark.skipif(
    FREE_THREADED,
    reason="the free-threaded collector does not start at a chosen allocation (its threshold "
    "is a heap-growth heuristic), so a collection inside the detector cannot be forced",
)
@pytest.mark.usefixtures("frozen_heap")
def test_collection_callbacks_writing_a_map_during_the_detectors_bookkeeping() -> None:
    target: safemap.LockedMap[int, int] = safemap.LockedMap()
    busy = threading.local()

    def on_collect(phase: str, _info: dict[str, Any]) -> None:
        # Runs inside whatever allocation started the collection: often the detector's.
        if phase == "start" and not getattr(busy, "on", False):
            busy.on = True
            try:
                target[len(target)] = 0
            finally:
                busy.on = False

    done = threading.Event()

    def writes() -> None:
        m: safemap.LockedMap[int, int] = safemap.LockedMap()
        for i in range(2_000):
            m[i % 64] = i  # each store releases into the map's key clock
        done.set()

    old = gc.get_threshold()
    with race.detect():
        gc.callbacks.append(on_collect)
        gc.set_threshold(1)  # a collection at nearly every allocation
        try:
            worker = threading.Thread(target=writes, daemon=True)
            worker.start()
            worker.join(60)
        finally:
            gc.set_threshold(*old)
            gc.callbacks.remove(on_collect)
    assert done.is_set(), "a collection callback deadlocked against the detector"
    assert len(target) > 0  # the callback did run, and its writes landed
