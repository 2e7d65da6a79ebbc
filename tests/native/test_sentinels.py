"""safemap.MISSING and safemap.DELETE are never stored as values by the native maps.

Every method that would store a caller-given value raises TypeError before changing
anything; a compute-family callback returning DELETE removes, one returning MISSING raises
and leaves the map unchanged; compare-and-* with a sentinel as ``old`` return False.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from safemap import DELETE, MISSING
from safemap.native import ConcurrentMap, SyncMap

NATIVE = [ConcurrentMap, SyncMap]
SENTINELS = {"MISSING": MISSING, "DELETE": DELETE}


class EqAll:
    """A value equal to everything (so only an explicit sentinel check refuses it)."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


# each: (name, fn(m, key, sentinel)); key "a" is present, "new" absent
STORING: list[tuple[str, Callable[[Any, Any, Any], Any]]] = [
    ("setitem", lambda m, k, s: m.__setitem__(k, s)),
    ("store", lambda m, k, s: m.store(k, s)),
    ("load_or_store", lambda m, k, s: m.load_or_store(k, s)),
    ("setdefault", lambda m, k, s: m.setdefault(k, s)),
    ("swap", lambda m, k, s: m.swap(k, s)),
    ("compare_and_swap_new", lambda m, k, s: m.compare_and_swap(k, m.get(k), s)),
    ("merge_v", lambda m, k, s: m.merge(k, s, lambda a, b: 0)),
    ("update", lambda m, k, s: m.update({k: s})),
    ("update_kw", lambda m, k, s: m.update(**{k: s})),
    ("update_pairs", lambda m, k, s: m.update([(k, s)])),
]


@pytest.mark.parametrize("key", ["a", "new"])
@pytest.mark.parametrize("sentinel", list(SENTINELS))
@pytest.mark.parametrize("op", [name for name, _ in STORING])
@pytest.mark.parametrize("T", NATIVE)
def test_storing_a_sentinel_raises_and_changes_nothing(
    T: type, op: str, sentinel: str, key: str
) -> None:
    fn = dict(STORING)[op]
    m = T(a=1, b=2)
    before = dict(m.snapshot())
    message = f"safemap.{sentinel} is a sentinel and cannot be stored as a value"
    with pytest.raises(TypeError, match=re.escape(message)):
        fn(m, key, SENTINELS[sentinel])
    assert dict(m.snapshot()) == before
    assert len(m) == len(before)
    assert all(v not in (MISSING, DELETE) for v in m.values())


@pytest.mark.parametrize("sentinel", list(SENTINELS))
@pytest.mark.parametrize("T", NATIVE)
def test_constructor_and_fromkeys_refuse_sentinels(T: type, sentinel: str) -> None:
    s = SENTINELS[sentinel]
    for build in (
        lambda: T({"a": s}),
        lambda: T([("a", s)]),
        lambda: T(a=s),
        lambda: T.fromkeys(["a", "b"], s),
    ):
        with pytest.raises(TypeError, match=rf"safemap\.{sentinel} is a sentinel"):
            build()


COMPUTES: list[tuple[str, Callable[[Any, Any, Any], Any]]] = [
    ("compute", lambda m, k, s: m.compute(k, lambda _k, _v: s)),
    ("compute_if_absent", lambda m, k, s: m.compute_if_absent(k, lambda _k: s)),
    ("compute_if_present", lambda m, k, s: m.compute_if_present(k, lambda _k, _v: s)),
    ("merge", lambda m, k, s: m.merge(k, 5, lambda _a, _b: s)),
]


# does the callback run for a present ("a") / absent ("new") key?
CALLED = {
    ("compute", "a"): True,
    ("compute", "new"): True,
    ("compute_if_absent", "a"): False,
    ("compute_if_absent", "new"): True,
    ("compute_if_present", "a"): True,
    ("compute_if_present", "new"): False,
    ("merge", "a"): True,
    ("merge", "new"): False,  # stores v (5)
}


@pytest.mark.parametrize("key", ["a", "new"])
@pytest.mark.parametrize("op", [name for name, _ in COMPUTES])
@pytest.mark.parametrize("T", NATIVE)
def test_callback_returning_missing_raises_and_changes_nothing(T: type, op: str, key: str) -> None:
    fn = dict(COMPUTES)[op]
    m = T(a=1, b=2)
    expected = {"a": 1, "b": 2}
    if CALLED[op, key]:
        with pytest.raises(TypeError, match=r"safemap\.MISSING is a sentinel"):
            fn(m, key, MISSING)
    else:
        fn(m, key, MISSING)
        if op == "merge":
            expected["new"] = 5
    assert dict(m.snapshot()) == expected
    assert len(m) == len(expected)
    # the map works on: the shard lock / mutex was released
    m["c"] = 3
    assert m.compute("c", lambda _k, v: v + 1) == 4


@pytest.mark.parametrize("key", ["a", "new"])
@pytest.mark.parametrize("op", [name for name, _ in COMPUTES])
@pytest.mark.parametrize("T", NATIVE)
def test_callback_returning_delete_removes(T: type, op: str, key: str) -> None:
    fn = dict(COMPUTES)[op]
    m = T(a=1, b=2)
    expected = {"a": 1, "b": 2}
    result = fn(m, key, DELETE)
    if CALLED[op, key]:
        assert result is None
        expected.pop(key, None)
    elif op == "merge":
        assert result == 5
        expected["new"] = 5
    else:
        assert result == (1 if key == "a" else None)
    assert dict(m.snapshot()) == expected
    assert len(m) == len(expected)


@pytest.mark.parametrize("sentinel", list(SENTINELS))
@pytest.mark.parametrize("T", NATIVE)
def test_compare_and_star_with_sentinel_old_is_false(T: type, sentinel: str) -> None:
    s = SENTINELS[sentinel]
    v = EqAll()  # == says True to anything, the sentinel included
    m = T(a=v)
    assert m.compare_and_swap("a", s, 2) is False
    assert m.compare_and_delete("a", s) is False
    assert m.compare_and_swap("absent", s, 2) is False
    assert m.compare_and_delete("absent", s) is False
    assert m["a"] is v and len(m) == 1 and "absent" not in m
    assert m.compare_and_swap("a", 123, 2) is True  # EqAll equals 123: a real match swaps
