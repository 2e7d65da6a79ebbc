"""MISSING and DELETE are never stored as values in an actor map (issue 17.1).

Every method that would store a caller-given value raises ``TypeError`` on the caller's side,
before anything is sent to the owner (``stats().mailbox.accepted`` does not move) and with the map
unchanged; a compute-family callback returning ``MISSING`` raises the same ``TypeError`` (on
the owner, before the dict is touched) and ``DELETE`` removes; ``compare_and_swap`` /
``compare_and_delete`` with a sentinel as ``old`` return ``False``.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.actor import WAIT
from support.asyncmap import BlockingAsyncActorMap

from safemap import DELETE, MISSING
from safemap.actor import ActorMap, AsyncActorMap

SENTINELS = [MISSING, DELETE]
MESSAGE = {
    MISSING: "safemap.MISSING is a sentinel and cannot be stored as a value",
    DELETE: "safemap.DELETE is a sentinel and cannot be stored as a value",
}


class AlwaysEqual:
    """A value whose ``__eq__`` claims equality with anything, sentinels included."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


STORES: dict[str, Callable[[Any, Any], Any]] = {
    "setitem": lambda m, s: m.__setitem__("k", s),
    "store": lambda m, s: m.store("k", s),
    "store over a present key": lambda m, s: m.store("a", s),
    "load_or_store": lambda m, s: m.load_or_store("k", s),
    "swap": lambda m, s: m.swap("a", s),
    "compare_and_swap new": lambda m, s: m.compare_and_swap("a", 1, s),
    "merge value": lambda m, s: m.merge("k", s, operator.add),
    "setdefault": lambda m, s: m.setdefault("k", s),
    "update mapping": lambda m, s: m.update({"k": 1, "l": s}),
    "update pairs": lambda m, s: m.update([("k", 1), ("l", s)]),
    "update keywords": lambda m, s: m.update(k=1, l=s),
    "ior": lambda m, s: m.__ior__({"k": s}),
}

CALLBACKS: dict[str, Callable[[Any], Any]] = {
    "compute on absent": lambda m: m.compute("k", lambda k, old: MISSING),
    "compute on present": lambda m: m.compute("a", lambda k, old: MISSING),
    "compute_if_absent": lambda m: m.compute_if_absent("k", lambda k: MISSING),
    "compute_if_present": lambda m: m.compute_if_present("a", lambda k, old: MISSING),
    "merge fn": lambda m: m.merge("a", 5, lambda old, v: MISSING),
}


@pytest.fixture(params=["ActorMap", "ThreadsafeView"])
def owned(request: pytest.FixtureRequest) -> Iterator[Any]:
    m: Any = ActorMap({"a": 1}) if request.param == "ActorMap" else BlockingAsyncActorMap(a=1)
    yield m
    m.close()


@pytest.mark.parametrize("sentinel", SENTINELS, ids=repr)
@pytest.mark.parametrize("call", list(STORES.values()), ids=list(STORES))
def test_storing_a_sentinel_raises_before_anything_is_sent(
    owned: Any, call: Callable[[Any, Any], Any], sentinel: Any
) -> None:
    accepted = owned.stats().mailbox.accepted
    with pytest.raises(TypeError) as info:
        call(owned, sentinel)
    assert str(info.value) == MESSAGE[sentinel]
    assert owned.stats().mailbox.accepted == accepted  # refused on the caller's side
    assert owned.snapshot() == {"a": 1}


@pytest.mark.parametrize("sentinel", SENTINELS, ids=repr)
def test_construction_and_fromkeys_refuse_sentinels(sentinel: Any) -> None:
    for make in (
        lambda: ActorMap({"k": sentinel}),
        lambda: ActorMap(k=sentinel),
        lambda: ActorMap.fromkeys(["k"], sentinel),
        lambda: BlockingAsyncActorMap({"k": sentinel}),
        lambda: AsyncActorMap([("k", sentinel)]),
    ):
        with pytest.raises(TypeError, match="is a sentinel and cannot be stored as a value"):
            make()


@pytest.mark.parametrize("call", list(CALLBACKS.values()), ids=list(CALLBACKS))
def test_callback_returning_missing_raises_and_changes_nothing(
    owned: Any, call: Callable[[Any], Any]
) -> None:
    with pytest.raises(TypeError) as info:
        call(owned)
    assert str(info.value) == MESSAGE[MISSING]
    assert owned.snapshot() == {"a": 1}


def test_callback_returning_delete_removes(owned: Any) -> None:
    owned.update(b=2, c=3)
    assert owned.compute("a", lambda k, old: DELETE) is None
    assert owned.compute("absent", lambda k, old: DELETE) is None
    assert owned.compute_if_present("b", lambda k, old: DELETE) is None
    assert owned.merge("c", 0, lambda old, v: DELETE) is None
    assert owned.compute_if_absent("d", lambda k: DELETE) is None
    assert owned.snapshot() == {}


@pytest.mark.parametrize("sentinel", SENTINELS, ids=repr)
def test_compare_with_a_sentinel_as_old_is_false(owned: Any, sentinel: Any) -> None:
    anything = AlwaysEqual()
    owned["x"] = anything
    accepted = owned.stats().mailbox.accepted
    assert owned.compare_and_swap("x", sentinel, 2) is False
    assert owned.compare_and_delete("x", sentinel) is False
    assert owned.compare_and_swap("absent", sentinel, 2) is False
    assert owned.compare_and_delete("absent", sentinel) is False
    assert owned.stats().mailbox.accepted == accepted
    assert owned.snapshot() == {"a": 1, "x": anything}
    assert owned.compare_and_swap("x", 0, 2) is True  # a real old value still compares


def test_awaited_async_map_follows_the_same_rule() -> None:
    async def main() -> None:
        async with AsyncActorMap({"a": 1}) as m:
            anything = AlwaysEqual()
            await m.store("x", anything)
            accepted = m.stats().mailbox.accepted
            for sentinel in SENTINELS:
                for call in (
                    m.store("k", sentinel),
                    m.load_or_store("k", sentinel),
                    m.setdefault("k", sentinel),
                    m.swap("a", sentinel),
                    m.compare_and_swap("a", 1, sentinel),
                    m.merge("k", sentinel, operator.add),
                    m.update({"k": 1, "l": sentinel}),
                    m.update(k=sentinel),
                ):
                    with pytest.raises(TypeError) as info:
                        await call
                    assert str(info.value) == MESSAGE[sentinel]
                assert await m.compare_and_swap("x", sentinel, 2) is False
                assert await m.compare_and_delete("x", sentinel) is False
            assert m.stats().mailbox.accepted == accepted
            for call in (
                m.compute("k", lambda k, old: MISSING),
                m.compute_if_absent("k", lambda k: MISSING),
                m.compute_if_present("a", lambda k, old: MISSING),
                m.merge("a", 5, lambda old, v: MISSING),
            ):
                with pytest.raises(TypeError) as info:
                    await call
                assert str(info.value) == MESSAGE[MISSING]
            assert await m.snapshot() == {"a": 1, "x": anything}
            assert await m.compute("a", lambda k, old: DELETE) is None
            assert await m.snapshot() == {"x": anything}

    asyncio.run(asyncio.wait_for(main(), WAIT))
