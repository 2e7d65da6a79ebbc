"""The shared protocol suite on maps with ttl bindings: every map here has switched to its
expiring variant and holds an expired entry that no read may show (docs/scoped.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_concurrency import *  # noqa: F403  # the shared tests, collected here again
from test_protocol_api import *  # noqa: F403

from safemap import ConcurrentMap, LockedMap
from safemap.protocol import expiry

# Not collected here: each asserts ``type(m) is map_type``, which a map's first ttl binding
# ends by design (it becomes an instance of a subclass of its class; docs/scoped.md).
for _name in (
    "test_constructor_forms",
    "test_copy_is_same_type_shallow_and_independent",
    "test_fromkeys_is_a_classmethod_returning_the_subclass",
    "test_subclassable",
):
    del globals()[_name]

_clock = expiry.ManualClock()


class _Hidden:
    """The key of the expired entry each map holds (equal only to itself)."""

    def __repr__(self) -> str:
        return "<hidden>"


def _with_an_expired_entry(m: Any) -> None:
    m.bind(_Hidden(), "expired", ttl=1)
    _clock.advance(1)


class BoundConcurrentMap(ConcurrentMap[Any, Any]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _with_an_expired_entry(self)


class BoundLockedMap(LockedMap[Any, Any]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _with_an_expired_entry(self)


@pytest.fixture(autouse=True)
def _manual_clock() -> Iterator[None]:
    previous = expiry.set_clock(_clock)
    try:
        yield
    finally:
        expiry.set_clock(previous)


@pytest.fixture(params=["BoundConcurrentMap", "BoundLockedMap"])
def map_type(request: pytest.FixtureRequest) -> type[Any]:
    return {"BoundConcurrentMap": BoundConcurrentMap, "BoundLockedMap": BoundLockedMap}[
        request.param
    ]
