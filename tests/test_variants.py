"""Per-instance variants (``safemap.protocol.variants``): switching one map to a subclass of
its own class with opt-in mixins, on every map type."""

from __future__ import annotations

import copy
import pickle
import threading
from typing import Any

import pytest

from safemap.protocol.variants import features_of, plain_class, switch


class _Tag:
    """Marks reads: ``m[k]`` returns ``("tag", value)``."""

    __slots__ = ()
    variant_rank = 10

    def __getitem__(self, key: Any) -> Any:
        return ("tag", super().__getitem__(key))  # type: ignore[misc]


class _Outer:
    __slots__ = ()
    variant_rank = 1

    def __getitem__(self, key: Any) -> Any:
        return ("outer", super().__getitem__(key))  # type: ignore[misc]


def test_switch_changes_one_instance_only(map_type: type[Any]) -> None:
    m, other = map_type(a=1), map_type(a=1)
    try:
        assert switch(m, add=_Tag) is True
        assert m["a"] == ("tag", 1) and other["a"] == 1
        assert isinstance(m, map_type) and type(m) is not map_type
        assert type(m).__name__ == map_type.__name__ and repr(m) == repr(other)
        assert plain_class(type(m)) is map_type and features_of(m) == {_Tag}
        assert switch(m, add=_Tag) is False  # already on
        assert switch(m, remove=_Tag) is True
        assert type(m) is map_type and m["a"] == 1 and features_of(m) == frozenset()
    finally:
        for x in (m, other):
            getattr(x, "close", lambda: None)()


def test_mixin_order_is_by_rank_not_by_switch_order(map_type: type[Any]) -> None:
    m, n = map_type(a=1), map_type(a=1)
    try:
        switch(m, add=_Tag)
        switch(m, add=_Outer)
        switch(n, add=_Outer)
        switch(n, add=_Tag)
        assert type(m) is type(n)  # one cached variant per feature set
        assert m["a"] == ("outer", ("tag", 1))
    finally:
        for x in (m, n):
            getattr(x, "close", lambda: None)()


def test_copies_and_pickles_are_of_the_plain_class(map_type: type[Any]) -> None:
    m = map_type(a=1)
    try:
        switch(m, add=_Tag)
        copies = [m.copy(), copy.copy(m), copy.deepcopy(m), m | {"b": 2}, {"b": 2} | m]
        if map_type.__name__ not in ("ActorMap", "AsyncActorMap", "RedisMap"):
            copies.append(pickle.loads(pickle.dumps(m)))
        for c in copies:
            try:
                assert type(c) is map_type and c["a"] == 1
            finally:
                getattr(c, "close", lambda: None)()
    finally:
        getattr(m, "close", lambda: None)()


def test_concurrent_switches_lose_no_feature() -> None:
    import safemap

    for _ in range(200):
        m = safemap.ConcurrentMap(a=1)
        barrier = threading.Barrier(2)

        def turn_on(mixin: type, m: Any = m, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            switch(m, add=mixin)

        threads = [threading.Thread(target=turn_on, args=(x,)) for x in (_Tag, _Outer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert features_of(m) == {_Tag, _Outer}


def test_a_mixin_with_slots_is_refused() -> None:
    import safemap

    class Bad:
        __slots__ = ("x",)
        variant_rank = 0

    with pytest.raises(TypeError):
        switch(safemap.ConcurrentMap(), add=Bad)
