"""``popitem`` is one delete, not a write during an iteration (it finds its key with an
iteration that is over before it deletes)."""

from __future__ import annotations

from typing import Any


def test_popitem_counts_a_delete_and_no_write_during_iteration(map_type: type[Any]) -> None:
    m = map_type({i: i for i in range(20)})
    try:
        before = m.stats()
        for _ in range(5):
            m.popitem()
        change = m.stats().minus(before)
        assert change.deletes == 5
        assert change.writes_during_iteration == 0
        assert len(m) == 15
    finally:
        getattr(m, "close", lambda: None)()
