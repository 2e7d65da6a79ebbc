"""When a native map's memory is returned, with the map object's reference count kept off
the hot path once the map is shared between threads.

On free-threaded CPython 3.14+, the first call from a thread other than the map's creator
enables deferred reference counting on the map object: from then on the map is freed by the
cyclic garbage collector (its next collection), not the moment the last reference goes. A map
used by one thread only is freed at once on every build."""

from __future__ import annotations

import gc
import sys
import sysconfig
import threading
import weakref
from typing import Any

import pytest

from safemap.native import ConcurrentMap, SyncMap

NATIVE = [ConcurrentMap, SyncMap]
DEFERRED = bool(sysconfig.get_config_var("Py_GIL_DISABLED")) and sys.version_info >= (3, 14)


def use_from_other_thread(m: Any) -> None:
    def body() -> None:
        m[1] = 1
        assert m[1] == 1
        assert m.get(2) is None

    t = threading.Thread(target=body)
    t.start()
    t.join(30)
    assert not t.is_alive()


@pytest.mark.parametrize("T", NATIVE)
def test_map_used_by_its_creator_only_is_freed_at_once(T: type) -> None:
    m = T()
    for i in range(100):
        m[i] = i
        assert m[i] == i
    r = weakref.ref(m)
    del m
    assert r() is None


@pytest.mark.parametrize("T", NATIVE)
def test_shared_map_is_freed_by_the_next_collection(T: type) -> None:
    m = T()
    m[0] = [m]  # a cycle too: whatever the build, a collection frees it
    use_from_other_thread(m)
    r = weakref.ref(m)
    del m
    gc.collect()
    assert r() is None


@pytest.mark.skipif(not DEFERRED, reason="deferred reference counting: free-threaded 3.14+")
@pytest.mark.parametrize("T", NATIVE)
def test_shared_map_uses_deferred_reference_counting(T: type) -> None:
    m = T()
    use_from_other_thread(m)
    r = weakref.ref(m)
    del m
    assert r() is not None  # the interpreter's references to it were not counted
    gc.collect()
    assert r() is None
