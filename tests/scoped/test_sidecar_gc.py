"""The sidecar table under a garbage collection that runs while a sidecar is being created
(every feature of docs/scoped.md makes sidecars: a deadlock there hangs them all)."""

from __future__ import annotations

import gc
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from safemap import LockedMap
from safemap.protocol import sidecar as sidecar_module


def test_collecting_a_map_while_another_sidecar_is_created_does_not_deadlock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A collected map's entry is removed by a weak reference callback, which the collector
    runs in whichever thread allocates when it triggers: also in the one holding the
    table's lock to create another sidecar. Here the collection is made to happen at that
    allocation."""

    def collecting_namespace() -> SimpleNamespace:
        gc.collect()  # as if this allocation had triggered a collection
        return SimpleNamespace()

    garbage: Any = LockedMap()
    garbage["self"] = garbage  # a cycle: only the collector frees it
    sidecar_module.sidecar(garbage)
    del garbage
    monkeypatch.setattr(sidecar_module, "SimpleNamespace", collecting_namespace)
    done = threading.Event()
    made: list[Any] = []

    def body() -> None:
        fresh: Any = LockedMap()
        made.append(sidecar_module.sidecar(fresh) is sidecar_module.existing_sidecar(fresh))
        done.set()

    gc.disable()  # no collection before the one inside the lock
    try:
        t = threading.Thread(target=body, daemon=True)
        t.start()
        assert done.wait(30), "sidecar creation deadlocked against a weakref callback"
    finally:
        gc.enable()
    t.join(30)
    assert made == [True]
