"""Per-map side state (``safemap.protocol.sidecar``)."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

from safemap.protocol import sidecar as sc


def test_one_sidecar_per_map_and_none_before_use(map_type: type[Any]) -> None:
    m, other = map_type(), map_type()
    try:
        assert sc.existing_sidecar(m) is None
        s = sc.sidecar(m)
        assert sc.sidecar(m) is s and sc.existing_sidecar(m) is s
        assert sc.existing_sidecar(other) is None and sc.sidecar(other) is not s
    finally:
        for x in (m, other):
            getattr(x, "close", lambda: None)()


@pytest.mark.usefixtures("frozen_heap")  # 50 full collections
def test_a_collected_map_drops_its_sidecar_and_a_reused_id_gets_a_fresh_one() -> None:
    import safemap

    for _ in range(50):
        m = safemap.ConcurrentMap()
        sc.sidecar(m).marker = True
        old_id = id(m)
        del m
        gc.collect()
        assert old_id not in sc._table
        n = safemap.ConcurrentMap()
        assert sc.existing_sidecar(n) is None
        assert not hasattr(sc.sidecar(n), "marker")


def test_threads_racing_to_create_get_the_same_sidecar() -> None:
    import safemap

    for _ in range(100):
        m = safemap.ConcurrentMap()
        barrier = threading.Barrier(4)
        got: list[object] = []

        def make(m: Any = m, barrier: threading.Barrier = barrier, got: list[object] = got) -> None:
            barrier.wait()
            got.append(sc.sidecar(m))

        threads = [threading.Thread(target=make) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({id(x) for x in got}) == 1
