"""The protocol's methods derived from ``compute`` when ``compute`` runs its callback more
than once (RedisMap's optimistic commit retries it after a conflicting write): each result
must come from the last run, the one whose view of the key the call acted on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from safemap import MISSING, ConcurrentMapping, LockedMap


class RetryingMap(LockedMap[Any, Any]):
    """``compute`` first runs ``fn`` on a stale view of the key and discards the result, as
    an optimistic commit refused because another client wrote the key meanwhile."""

    stale: Any = MISSING

    def compute(self, key: Any, fn: Callable[[Any, Any], Any]) -> Any:
        fn(key, self.stale)  # the refused attempt
        return super().compute(key, fn)


def retrying(stale: Any, **items: Any) -> RetryingMap:
    m = RetryingMap(items)
    m.stale = stale
    return m


def test_load_or_store_reports_the_value_it_found_on_the_last_run() -> None:
    m = retrying(MISSING, k=2)  # absent on the refused run, present on the last
    assert ConcurrentMapping.load_or_store(m, "k", 3) == (2, True)
    assert m["k"] == 2
    m = retrying(5)  # present on the refused run, absent on the last
    assert ConcurrentMapping.load_or_store(m, "k", 3) == (3, False)
    assert m["k"] == 3


@pytest.mark.parametrize("stale", [7, MISSING], ids=["unequal", "absent"])
def test_compare_and_swap_reports_what_the_last_run_did(stale: Any) -> None:
    m = retrying(1, k=2)  # equal to `old` on the refused run only
    assert ConcurrentMapping.compare_and_swap(m, "k", 1, 9) is False
    assert m["k"] == 2
    m = retrying(stale, k=1)  # equal to `old` on the last run only
    assert ConcurrentMapping.compare_and_swap(m, "k", 1, 9) is True
    assert m["k"] == 9


def test_compare_and_delete_reports_what_the_last_run_did() -> None:
    m = retrying(1, k=2)
    assert ConcurrentMapping.compare_and_delete(m, "k", 1) is False
    assert m["k"] == 2
    m = retrying(7, k=1)
    assert ConcurrentMapping.compare_and_delete(m, "k", 1) is True
    assert "k" not in m
