"""The linearizability checker (safemap.testing) on maps with bound entries: live ttl
bindings, an expired entry not yet reclaimed, owner and scoped bindings (docs/scoped.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from safemap.protocol import expiry
from safemap.testing import stress


class _Owner:
    pass


@pytest.fixture
def far_clock() -> Iterator[expiry.ManualClock]:
    fake = expiry.ManualClock(0.0)
    previous = expiry.set_clock(fake)
    try:
        yield fake
    finally:
        expiry.set_clock(previous)


def test_maps_with_bound_entries_are_linearizable(
    map_type: type[Any], far_clock: expiry.ManualClock
) -> None:
    made: list[Any] = []
    owners: list[_Owner] = []

    def factory() -> Any:
        m = map_type()
        made.append(m)
        m.bind("k0", 10**30 + 1, ttl=1)  # will be expired (and maybe not reclaimed)
        m.bind("k1", 10**30 + 2, ttl=10**6)  # live for the whole run
        owner = _Owner()
        owners.append(owner)
        m.bind("k2", 10**30 + 3, owner=owner)
        m.scoped("k3", 10**30 + 4).__enter__()
        far_clock.advance(1)  # k0 is now due: every call must see it absent
        return m

    slow = map_type.__name__ in ("ActorMap", "AsyncActorMap", "RedisMap")
    try:
        result = stress(
            factory, threads=3, ops=30 if slow else 60, histories=3, keys=6, whole_map=0.1, seed=7
        )
        assert result.ok is True, result.counterexample
    finally:
        for m in made:
            st = expiry._state(m)
            for b in list(st.bindings) if st is not None else ():
                b._forget()
            getattr(m, "close", lambda: None)()
