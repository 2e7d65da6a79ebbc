"""Return shapes and edge cases of the map protocol, table by table, run against every
registered map type."""

from __future__ import annotations

import ast
import collections.abc
import typing
from types import MappingProxyType
from typing import Any

import pytest

import safemap
from safemap import DELETE, MISSING, ConcurrentMapping, FrozenMap


class Boom(Exception):
    """Raised by test callbacks."""


class Box:
    """A value equal to every Box with the same payload, identical to none of them."""

    __slots__ = ("payload",)

    def __init__(self, payload: object) -> None:
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and self.payload == other.payload

    def __hash__(self) -> int:
        return hash(self.payload)

    def __repr__(self) -> str:
        return f"Box({self.payload!r})"


def contents(m: Any) -> dict[Any, Any]:
    """The map's contents as a plain dict (single-threaded use)."""
    return dict(m.items())


# ---------------------------------------------------------------- type and construction


def test_is_mutable_mapping_and_concurrent_mapping(map_type: type) -> None:
    m = map_type()
    assert isinstance(m, collections.abc.MutableMapping)
    assert isinstance(m, ConcurrentMapping)
    assert isinstance(m, safemap.ConcurrentMapping)
    assert issubclass(map_type, collections.abc.MutableMapping)
    assert issubclass(map_type, ConcurrentMapping)
    assert issubclass(ConcurrentMapping, collections.abc.MutableMapping)


def test_unhashable_like_dict(map_type: type) -> None:
    m = map_type({1: 2})
    with pytest.raises(TypeError):
        hash(m)
    assert not isinstance(m, collections.abc.Hashable)
    with pytest.raises(TypeError):
        {m: 1}  # noqa: B018


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda T: T(), {}),
        (lambda T: T({1: "a", 2: "b"}), {1: "a", 2: "b"}),
        (lambda T: T([(1, "a"), (2, "b"), (1, "c")]), {1: "c", 2: "b"}),
        (lambda T: T((k, k * k) for k in range(5)), {k: k * k for k in range(5)}),
        (lambda T: T(x=1, y=None), {"x": 1, "y": None}),
        (lambda T: T({"x": 1, "z": 3}, x=2, y=None), {"x": 2, "y": None, "z": 3}),
        (lambda T: T([("x", 1)], x=2), {"x": 2}),
        (lambda T: T(MappingProxyType({1: 2})), {1: 2}),
        (lambda T: T(FrozenMap({1: 2})), {1: 2}),
        (lambda T: T(T({1: 2, 3: 4})), {1: 2, 3: 4}),
        (lambda T: T(safemap.LockedMap({5: 6})), {5: 6}),
        (lambda T: T.fromkeys("abc"), {"a": None, "b": None, "c": None}),
        (lambda T: T.fromkeys([1, 2], 0), {1: 0, 2: 0}),
        (lambda T: T.fromkeys([], 0), {}),
    ],
    ids=[
        "empty",
        "mapping",
        "pairs",
        "generator",
        "kwargs",
        "mapping+kwargs",
        "pairs+kwargs",
        "mappingproxy",
        "frozenmap",
        "same-type",
        "lockedmap",
        "fromkeys-default",
        "fromkeys-value",
        "fromkeys-empty",
    ],
)
def test_constructor_forms(map_type: type, build: Any, expected: dict[Any, Any]) -> None:
    m = build(map_type)
    assert type(m) is map_type
    assert contents(m) == expected
    assert len(m) == len(expected)
    assert m == expected


def test_constructor_from_keys_object(map_type: type) -> None:
    class KeysOnly:
        """Not a Mapping, but dict() accepts it: keys() plus __getitem__."""

        def keys(self) -> list[str]:
            return ["a", "b"]

        def __getitem__(self, key: str) -> str:
            return key.upper()

    assert contents(map_type(KeysOnly())) == {"a": "A", "b": "B"}


def test_constructor_rejects_bad_input(map_type: type) -> None:
    with pytest.raises(TypeError):
        map_type(42)
    with pytest.raises((TypeError, ValueError)):
        map_type([1, 2, 3])
    with pytest.raises(TypeError):
        map_type({}, {})
    with pytest.raises(TypeError):
        map_type([([1], 2)])  # unhashable key


def test_constructor_does_not_alias_its_argument(map_type: type) -> None:
    source = {1: "a"}
    m = map_type(source)
    source[2] = "b"
    m[3] = "c"
    assert contents(m) == {1: "a", 3: "c"}
    assert source == {1: "a", 2: "b"}


def test_fromkeys_is_a_classmethod_returning_the_subclass(map_type: type) -> None:
    class Sub(map_type):  # type: ignore[misc,valid-type]
        pass

    m = Sub.fromkeys([1, 2], "v")
    assert type(m) is Sub
    assert contents(m) == {1: "v", 2: "v"}
    m2 = Sub().fromkeys([3])  # also callable on an instance, like dict
    assert type(m2) is Sub
    assert contents(m2) == {3: None}


def test_fromkeys_value_shared(map_type: type) -> None:
    value: list[int] = []
    m = map_type.fromkeys("ab", value)
    assert m["a"] is value
    assert m["b"] is value


def test_subclassable(map_type: type) -> None:
    class Sub(map_type):  # type: ignore[misc,valid-type]
        def total(self) -> int:
            return sum(self.values())

    s = Sub({1: 10}, x=5)
    s.extra = "attribute"
    assert s.total() == 15
    assert s.extra == "attribute"
    assert isinstance(s, ConcurrentMapping)
    assert repr(s).startswith("Sub({")
    c = s.copy()
    assert type(c) is Sub
    assert contents(c) == {1: 10, "x": 5}


def test_class_subscripting(map_type: type) -> None:
    alias = map_type[str, int]
    assert typing.get_origin(alias) is map_type
    assert typing.get_args(alias) == (str, int)
    frozen = FrozenMap[str, int]
    assert typing.get_origin(frozen) is FrozenMap


# --------------------------------------------------------------------- repr and ==


def test_repr(map_type: type) -> None:
    name = map_type.__name__
    assert repr(map_type()) == f"{name}({{}})"
    assert repr(map_type({1: 2})) == f"{name}({{1: 2}})"
    assert repr(map_type({"a": None})) == f"{name}({{'a': None}})"
    items = {i: str(i) for i in range(20)}
    text = repr(map_type(items))
    assert text.startswith(f"{name}({{") and text.endswith("})")
    assert ast.literal_eval(text[len(name) + 1 : -1]) == items  # order is unspecified
    assert str(map_type({1: 2})) == f"{name}({{1: 2}})"


def test_repr_of_subclass_uses_its_name(map_type: type) -> None:
    class MyMap(map_type):  # type: ignore[misc,valid-type]
        pass

    assert repr(MyMap({1: 2})) == "MyMap({1: 2})"


def test_repr_recursive_does_not_overflow(map_type: type) -> None:
    m = map_type()
    m[1] = m
    text = repr(m)
    assert text.startswith(f"{map_type.__name__}({{1: ")
    assert text.endswith("})")
    assert "..." in text


def test_repr_propagates_value_repr_error(map_type: type) -> None:
    class BadRepr:
        def __repr__(self) -> str:
            raise Boom

    m = map_type({1: BadRepr()})
    with pytest.raises(Boom):
        repr(m)
    assert len(m) == 1


def test_eq_with_any_mapping(map_type: type) -> None:
    m = map_type({1: "a", 2: None})
    same = {1: "a", 2: None}
    assert m == same
    assert same == m
    assert m == map_type(same)
    assert m == FrozenMap(same)
    assert FrozenMap(same) == m
    assert m == MappingProxyType(same)
    assert m == safemap.LockedMap(same)
    assert m == safemap.RWLockMap(same)
    assert safemap.LockedMap(same) == m
    assert m == collections.UserDict(same)
    assert not (m != same)  # noqa: SIM202
    assert m != {1: "a"}
    assert m != {1: "a", 2: None, 3: 0}
    assert m != {1: "b", 2: None}
    assert m != map_type({1: "a", 2: 0})
    assert m != [(1, "a"), (2, None)]
    assert m != 1
    assert (m == object()) is False
    assert map_type() == {}
    assert map_type() != {0: 0}


def test_eq_uses_identity_first_for_values(map_type: type) -> None:
    nan = float("nan")
    assert map_type({1: nan}) == {1: nan}
    assert map_type({1: nan}) != {1: float("nan")}


def test_bool(map_type: type) -> None:
    assert not map_type()
    assert map_type({0: None})
    assert bool(map_type({0: 0})) is True


# ---------------------------------------------------------------- dict-compatible


def test_getitem_setitem_delitem(map_type: type) -> None:
    m = map_type()
    assert m.__setitem__("k", 1) is None
    assert m["k"] == 1
    with pytest.raises(KeyError) as info:
        m["absent"]
    assert info.value.args == ("absent",)
    m["k"] = None
    assert m["k"] is None
    assert m.__delitem__("k") is None
    assert "k" not in m
    with pytest.raises(KeyError) as info:
        del m["k"]
    assert info.value.args == ("k",)
    assert contents(m) == {}


def test_equal_keys_are_one_key(map_type: type) -> None:
    m = map_type()
    m[1] = "int"
    m[1.0] = "float"
    m[True] = "bool"
    assert len(m) == 1
    assert m[1] == "bool"
    assert 1.0 in m


def test_contains_and_len(map_type: type) -> None:
    m = map_type({1: None, "a": 0})
    assert 1 in m
    assert "a" in m
    assert 2 not in m
    assert None not in m
    assert len(m) == 2
    m[None] = 1
    assert None in m
    assert len(m) == 3


def test_get(map_type: type) -> None:
    m = map_type({1: "a", 2: None})
    assert m.get(1) == "a"
    assert m.get(2, "default") is None
    assert m.get(3) is None
    sentinel = object()
    assert m.get(3, sentinel) is sentinel
    with pytest.raises(TypeError):
        m.get()
    with pytest.raises(TypeError):
        m.get(1, 2, 3)


def test_pop(map_type: type) -> None:
    m = map_type({1: "a", 2: None})
    assert m.pop(1) == "a"
    assert 1 not in m
    with pytest.raises(KeyError):
        m.pop(1)
    assert m.pop(1, "d") == "d"
    assert m.pop(1, None) is None
    assert m.pop(2, "d") is None
    assert contents(m) == {}
    with pytest.raises(TypeError):
        m.pop()


def test_popitem(map_type: type) -> None:
    expected = {i: str(i) for i in range(10)}
    m = map_type(expected)
    seen = {}
    while m:
        pair = m.popitem()
        assert type(pair) is tuple and len(pair) == 2
        key, value = pair
        assert key not in seen
        assert expected[key] is value
        seen[key] = value
    assert seen == expected
    with pytest.raises(KeyError):
        m.popitem()
    with pytest.raises(KeyError):
        map_type().popitem()


def test_setdefault(map_type: type) -> None:
    m = map_type()
    assert m.setdefault("a") is None
    assert "a" in m and m["a"] is None
    lst: list[int] = []
    assert m.setdefault("b", lst) is lst
    assert m.setdefault("b", []) is lst
    assert m.setdefault("a", 5) is None  # present with None: not replaced
    assert contents(m) == {"a": None, "b": []}


def test_update_forms(map_type: type) -> None:
    m = map_type({0: 0})
    assert m.update({1: "a"}) is None
    m.update([(2, "b"), (3, "c")])
    m.update(x=1, y=2)
    m.update({"x": 10}, y=20, z=None)
    m.update(map_type({4: "d"}))
    m.update(FrozenMap({5: "e"}))
    m.update((k, k) for k in (6, 7))
    m.update()
    m.update(())
    m |= {8: "h"}
    assert contents(m) == {
        0: 0,
        1: "a",
        2: "b",
        3: "c",
        "x": 10,
        "y": 20,
        "z": None,
        4: "d",
        5: "e",
        6: 6,
        7: 7,
        8: "h",
    }
    with pytest.raises(TypeError):
        m.update(1)
    with pytest.raises(TypeError):
        m.update({}, {})


def test_update_with_itself(map_type: type) -> None:
    m = map_type({1: 1, 2: 2})
    m.update(m)
    assert contents(m) == {1: 1, 2: 2}


def test_clear(map_type: type) -> None:
    m = map_type({i: i for i in range(100)})
    assert m.clear() is None
    assert len(m) == 0
    assert contents(m) == {}
    m[1] = 1
    assert contents(m) == {1: 1}


def test_copy_is_same_type_shallow_and_independent(map_type: type) -> None:
    value: list[int] = [1]
    m = map_type({1: value, 2: None})
    c = m.copy()
    assert type(c) is map_type
    assert c is not m
    assert c == m
    assert c[1] is value  # shallow: values shared
    c[3] = 3
    del c[2]
    assert contents(m) == {1: [1], 2: None}
    m[4] = 4
    assert 4 not in c


def test_views(map_type: type) -> None:
    m = map_type({1: "a", 2: "b"})
    keys, values, items = m.keys(), m.values(), m.items()
    assert isinstance(keys, collections.abc.KeysView)
    assert isinstance(values, collections.abc.ValuesView)
    assert isinstance(items, collections.abc.ItemsView)
    assert sorted(keys) == [1, 2]
    assert sorted(values) == ["a", "b"]
    assert sorted(items) == [(1, "a"), (2, "b")]
    assert len(keys) == len(values) == len(items) == 2
    assert 1 in keys and 3 not in keys
    assert "a" in values and "z" not in values
    assert (1, "a") in items
    assert (1, "b") not in items
    assert (3, "a") not in items
    assert keys == {1, 2}
    assert keys & {2, 3} == {2}
    assert keys | {3} == {1, 2, 3}
    assert items - {(1, "a")} == {(2, "b")}
    # views are live, like dict's
    m[3] = "c"
    del m[1]
    assert set(keys) == {2, 3}
    assert set(values) == {"b", "c"}
    assert set(items) == {(2, "b"), (3, "c")}
    assert len(keys) == 2


def test_iteration_yields_each_key_once(map_type: type) -> None:
    expected = {i: -i for i in range(200)}
    m = map_type(expected)
    keys = list(m)
    assert len(keys) == len(set(keys)) == 200
    assert set(keys) == set(expected)
    it = iter(m)
    assert iter(it) is it
    assert sorted(m.items()) == sorted(expected.items())


def test_items_view_contains_uses_identity_first(map_type: type) -> None:
    nan = float("nan")
    m = map_type({1: nan})
    assert (1, nan) in m.items()
    assert nan in m.values()


# ----------------------------------------------------------------- Go primitives


def test_load(map_type: type) -> None:
    obj = object()
    m = map_type({1: obj, 2: None})
    result = m.load(1)
    assert type(result) is tuple
    assert result[0] is obj and result[1] is True
    assert m.load(2) == (None, True)
    assert m.load(2)[1] is True
    absent = m.load(3)
    assert absent == (None, False)
    assert absent[0] is None and absent[1] is False


def test_store(map_type: type) -> None:
    m = map_type()
    obj = object()
    assert m.store(1, obj) is None
    assert m[1] is obj
    assert m.store(1, None) is None
    assert m.load(1) == (None, True)
    assert len(m) == 1


def test_load_or_store(map_type: type) -> None:
    m = map_type()
    first, second = Box(1), Box(1)
    actual, loaded = m.load_or_store("k", first)
    assert actual is first and loaded is False
    actual, loaded = m.load_or_store("k", second)
    assert actual is first and loaded is True
    assert m["k"] is first
    actual, loaded = m.load_or_store("n", None)
    assert actual is None and loaded is False
    actual, loaded = m.load_or_store("n", 5)
    assert actual is None and loaded is True
    assert contents(m) == {"k": first, "n": None}


def test_load_and_delete(map_type: type) -> None:
    obj = object()
    m = map_type({1: obj, 2: None})
    value, loaded = m.load_and_delete(1)
    assert value is obj and loaded is True
    assert 1 not in m
    assert m.load_and_delete(1) == (None, False)
    value, loaded = m.load_and_delete(2)
    assert value is None and loaded is True
    assert m.load_and_delete(2)[1] is False
    assert contents(m) == {}


def test_delete(map_type: type) -> None:
    m = map_type({1: 1})
    assert m.delete(1) is None
    assert m.delete(1) is None  # absent: no error
    assert m.delete("never") is None
    assert contents(m) == {}


def test_swap(map_type: type) -> None:
    m = map_type()
    a, b = object(), object()
    assert m.swap("k", a) == (None, False)
    assert m["k"] is a
    previous, loaded = m.swap("k", b)
    assert previous is a and loaded is True
    assert m["k"] is b
    assert m.swap("k", None) == (b, True)
    previous, loaded = m.swap("k", 1)
    assert previous is None and loaded is True
    assert contents(m) == {"k": 1}


def test_compare_and_swap(map_type: type) -> None:
    m = map_type({"k": Box(1), "n": None})
    new = object()
    assert m.compare_and_swap("absent", None, 1) is False
    assert "absent" not in m  # absent: not created
    assert m.compare_and_swap("absent", MISSING, 1) is False
    assert "absent" not in m
    assert m.compare_and_swap("k", Box(2), new) is False
    assert m["k"] == Box(1)
    assert m.compare_and_swap("k", Box(1), new) is True  # equal, not identical
    assert m["k"] is new
    assert m.compare_and_swap("k", new, 7) is True
    assert m.compare_and_swap("n", None, "x") is True
    assert m.compare_and_swap("n", None, "y") is False
    assert contents(m) == {"k": 7, "n": "x"}


def test_compare_and_swap_identity_first(map_type: type) -> None:
    nan = float("nan")
    m = map_type({"k": nan})
    assert m.compare_and_swap("k", float("nan"), 1) is False
    assert m["k"] is nan
    assert m.compare_and_swap("k", nan, 1) is True
    assert m["k"] == 1


def test_compare_and_delete(map_type: type) -> None:
    nan = float("nan")
    m = map_type({"k": Box(1), "n": None, "nan": nan})
    assert m.compare_and_delete("absent", None) is False
    assert m.compare_and_delete("k", Box(2)) is False
    assert "k" in m
    assert m.compare_and_delete("k", Box(1)) is True
    assert "k" not in m
    assert m.compare_and_delete("k", Box(1)) is False
    assert m.compare_and_delete("n", 0) is False
    assert m.compare_and_delete("n", None) is True
    assert m.compare_and_delete("nan", float("nan")) is False
    assert m.compare_and_delete("nan", nan) is True
    assert contents(m) == {}


def test_compare_propagates_value_eq_errors(map_type: type) -> None:
    class BadEq:
        def __eq__(self, other: object) -> bool:
            raise Boom

        __hash__ = object.__hash__

    stored = BadEq()
    m = map_type({"k": stored})
    with pytest.raises(Boom):
        m.compare_and_swap("k", BadEq(), 1)
    with pytest.raises(Boom):
        m.compare_and_delete("k", BadEq())
    assert m["k"] is stored and len(m) == 1
    assert m.compare_and_swap("k", stored, 1) is True  # identity first: __eq__ not needed


def test_range_visits_every_entry_once(map_type: type) -> None:
    expected = {i: str(i) for i in range(50)}
    m = map_type(expected)
    seen: list[tuple[Any, Any]] = []
    assert m.range(lambda k, v: seen.append((k, v))) is None  # None continues
    assert len(seen) == 50
    assert dict(seen) == expected
    assert map_type().range(lambda k, v: pytest.fail("called on an empty map")) is None


@pytest.mark.parametrize("result", [None, True, 1, 0.5, "", [], (), "False"])
def test_range_continues_unless_false(map_type: type, result: object) -> None:
    m = map_type({i: i for i in range(10)})
    calls = []

    def fn(k: Any, v: Any) -> object:
        calls.append(k)
        return result

    m.range(fn)
    assert sorted(calls) == list(range(10))


@pytest.mark.parametrize("stop_after", [1, 2, 5, 10])
def test_range_stops_on_false(map_type: type, stop_after: int) -> None:
    m = map_type({i: i for i in range(10)})
    calls = []

    def fn(k: Any, v: Any) -> bool | None:
        calls.append(k)
        return False if len(calls) == stop_after else None

    assert m.range(fn) is None
    assert len(calls) == stop_after
    assert len(set(calls)) == stop_after


def test_range_propagates_exceptions(map_type: type) -> None:
    m = map_type({1: 1, 2: 2})

    def fn(k: Any, v: Any) -> None:
        raise Boom

    with pytest.raises(Boom):
        m.range(fn)
    assert contents(m) == {1: 1, 2: 2}


# ------------------------------------------------------------- compute family


def test_compute_absent(map_type: type) -> None:
    m = map_type()
    calls = []
    new = object()

    def fn(k: Any, old: Any) -> Any:
        calls.append((k, old))
        return new

    assert m.compute("k", fn) is new
    assert calls == [("k", MISSING)]
    assert calls[0][1] is MISSING
    assert m["k"] is new


def test_compute_present(map_type: type) -> None:
    old_value = object()
    m = map_type({"k": old_value})
    calls = []

    def fn(k: Any, old: Any) -> Any:
        calls.append((k, old))
        return "new"

    assert m.compute("k", fn) == "new"
    assert len(calls) == 1 and calls[0][0] == "k" and calls[0][1] is old_value
    assert m["k"] == "new"


def test_compute_delete(map_type: type) -> None:
    m = map_type({"k": 1})
    assert m.compute("k", lambda k, old: DELETE) is None
    assert "k" not in m
    assert m.compute("k", lambda k, old: DELETE) is None  # leave absent
    assert "k" not in m
    assert contents(m) == {}


def test_compute_none_is_a_value(map_type: type) -> None:
    m = map_type()
    assert m.compute("k", lambda k, old: None) is None
    assert m.load("k") == (None, True)
    seen = []
    m.compute("k", lambda k, old: seen.append(old) or 1)
    assert seen == [None]  # old is None, not MISSING
    assert m["k"] == 1


def test_compute_if_absent(map_type: type) -> None:
    m = map_type()
    calls = []
    made = object()

    def factory(k: Any) -> Any:
        calls.append(k)
        return made

    assert m.compute_if_absent("k", factory) is made
    assert calls == ["k"]
    assert m.compute_if_absent("k", factory) is made  # present: not called
    assert calls == ["k"]
    assert m["k"] is made


def test_compute_if_absent_present_value_returned(map_type: type) -> None:
    m = map_type({"n": None, "k": 0})
    assert m.compute_if_absent("n", lambda k: pytest.fail("called")) is None
    assert m.compute_if_absent("k", lambda k: pytest.fail("called")) == 0
    assert contents(m) == {"n": None, "k": 0}


def test_compute_if_absent_delete_stores_nothing(map_type: type) -> None:
    m = map_type()
    assert m.compute_if_absent("k", lambda k: DELETE) is None
    assert "k" not in m
    assert len(m) == 0


def test_compute_if_absent_none_is_stored(map_type: type) -> None:
    m = map_type()
    assert m.compute_if_absent("k", lambda k: None) is None
    assert m.load("k") == (None, True)


def test_compute_if_present(map_type: type) -> None:
    old_value = object()
    m = map_type({"k": old_value})
    calls = []

    def fn(k: Any, old: Any) -> Any:
        calls.append((k, old))
        return "new"

    assert m.compute_if_present("absent", fn) is None
    assert calls == []
    assert "absent" not in m
    assert m.compute_if_present("k", fn) == "new"
    assert len(calls) == 1 and calls[0][1] is old_value
    assert m.compute_if_present("k", lambda k, old: DELETE) is None
    assert "k" not in m
    assert contents(m) == {}


def test_compute_if_present_none_value_is_present(map_type: type) -> None:
    m = map_type({"k": None})
    seen = []
    assert m.compute_if_present("k", lambda k, old: seen.append(old) or 2) == 2
    assert seen == [None]


def test_merge(map_type: type) -> None:
    m = map_type()
    calls = []

    def fn(old: Any, value: Any) -> Any:
        calls.append((old, value))
        return old + value

    assert m.merge("k", 1, fn) == 1
    assert calls == []  # absent: stores value, fn not called
    assert m.merge("k", 2, fn) == 3
    assert calls == [(1, 2)]
    assert m["k"] == 3
    assert m.merge("k", 0, lambda old, v: DELETE) is None
    assert "k" not in m
    assert m.merge("n", None, fn) is None
    assert m.load("n") == (None, True)
    old_value, new_value = object(), object()
    m["o"] = old_value
    seen = []
    m.merge("o", new_value, lambda a, b: seen.append((a, b)) or b)
    assert seen[0][0] is old_value and seen[0][1] is new_value
    assert m["o"] is new_value


def test_merge_counter_idiom(map_type: type) -> None:
    import operator

    m = map_type()
    for _ in range(10):
        m.merge("hits", 1, operator.add)
    assert m["hits"] == 10


@pytest.mark.parametrize("present", [False, True])
@pytest.mark.parametrize("method", ["compute", "compute_if_absent", "compute_if_present", "merge"])
def test_compute_family_callback_error_leaves_map_unchanged(
    map_type: type, method: str, present: bool
) -> None:
    m = map_type({"other": 1, **({"k": "old"} if present else {})})
    before = contents(m)
    error = Boom("from callback")

    def raising(*args: Any) -> Any:
        raise error

    call = {
        "compute": lambda: m.compute("k", raising),
        "compute_if_absent": lambda: m.compute_if_absent("k", raising),
        "compute_if_present": lambda: m.compute_if_present("k", raising),
        "merge": lambda: m.merge("k", "v", raising),
    }[method]
    should_call = {
        "compute": True,
        "compute_if_absent": not present,
        "compute_if_present": present,
        "merge": present,
    }[method]
    if should_call:
        with pytest.raises(Boom) as info:
            call()
        assert info.value is error
        assert contents(m) == before
    else:
        call()


# ------------------------------------------------------------------------ bulk


def test_delete_if(map_type: type) -> None:
    m = map_type({i: i % 3 for i in range(30)})
    seen = []

    def pred(k: Any, v: Any) -> bool:
        seen.append((k, v))
        return v == 0

    removed = m.delete_if(pred)
    assert removed == 10
    assert type(removed) is int
    assert sorted(seen) == [(i, i % 3) for i in range(30)]
    assert contents(m) == {i: i % 3 for i in range(30) if i % 3}
    assert m.delete_if(lambda k, v: False) == 0
    assert m.delete_if(lambda k, v: True) == 20
    assert contents(m) == {}
    assert m.delete_if(lambda k, v: True) == 0


def test_delete_if_truthiness(map_type: type) -> None:
    m = map_type({1: [], 2: [0], 3: None, 4: "x"})
    assert m.delete_if(lambda k, v: v) == 2
    assert contents(m) == {1: [], 3: None}


def test_delete_if_pred_raises_removes_nothing(map_type: type) -> None:
    m = map_type({i: i for i in range(20)})
    calls = []
    error = Boom()

    def pred(k: Any, v: Any) -> bool:
        calls.append(k)
        if len(calls) == 15:
            raise error
        return True

    with pytest.raises(Boom) as info:
        m.delete_if(pred)
    assert info.value is error
    assert contents(m) == {i: i for i in range(20)}


def test_delete_if_identity_first(map_type: type) -> None:
    nan = float("nan")
    m = map_type({1: nan, 2: 2})
    assert m.delete_if(lambda k, v: k == 1) == 1
    assert contents(m) == {2: 2}


def test_snapshot(map_type: type) -> None:
    value: list[int] = []
    m = map_type({1: value, 2: None})
    snap = m.snapshot()
    assert type(snap) is FrozenMap
    assert isinstance(snap, collections.abc.Mapping)
    assert not isinstance(snap, collections.abc.MutableMapping)
    assert snap == {1: [], 2: None}
    assert snap[1] is value  # shallow
    m[3] = 3
    del m[1]
    assert dict(snap) == {1: [], 2: None}  # a point-in-time copy
    assert type(map_type().snapshot()) is FrozenMap
    assert map_type().snapshot() == {}


def test_transaction_commits_and_returns_result(map_type: type) -> None:
    m = map_type({"a": 1, "b": 2, "c": 3})
    result = object()

    def fn(view: Any) -> Any:
        assert isinstance(view, collections.abc.MutableMapping)
        assert view["a"] == 1
        assert len(view) == 3
        view["a"] = 10
        del view["b"]
        view["d"] = 4
        assert view["a"] == 10
        assert "b" not in view
        assert sorted(view) == ["a", "c", "d"]
        assert len(view) == 3
        assert view.get("b") is None
        assert view.pop("c") == 3
        assert view.setdefault("e", 5) == 5
        view.update({"f": 6}, g=7)
        return result

    assert m.transaction(fn) is result
    assert contents(m) == {"a": 10, "d": 4, "e": 5, "f": 6, "g": 7}


def test_transaction_view_full_mutable_mapping(map_type: type) -> None:
    m = map_type({1: 1, 2: 2})

    def fn(view: Any) -> Any:
        key, value = view.popitem()
        assert (key, value) in ((1, 1), (2, 2))
        view.clear()
        assert len(view) == 0
        assert list(view) == []
        with pytest.raises(KeyError):
            view[1]
        with pytest.raises(KeyError):
            del view[1]
        view[3] = None
        assert view[3] is None
        assert dict(view.items()) == {3: None}
        return None

    assert m.transaction(fn) is None
    assert contents(m) == {3: None}


def test_transaction_raises_lands_nothing(map_type: type) -> None:
    m = map_type({"a": 1, "b": 2})
    error = Boom("abort")

    def fn(view: Any) -> None:
        view["a"] = 100
        del view["b"]
        view["c"] = 3
        view.clear()
        view["d"] = 4
        raise error

    with pytest.raises(Boom) as info:
        m.transaction(fn)
    assert info.value is error
    assert contents(m) == {"a": 1, "b": 2}


def test_transaction_view_invalid_after_return(map_type: type) -> None:
    m = map_type({"a": 1})
    views: list[Any] = []

    m.transaction(views.append)
    view = views[0]
    for use in (
        lambda: view["a"],
        lambda: view.__setitem__("a", 2),
        lambda: view.__delitem__("a"),
        lambda: len(view),
        lambda: list(view),
        lambda: "a" in view,
        lambda: view.get("a"),
        lambda: view.pop("a"),
        lambda: view.update(x=1),
        lambda: view.clear(),
    ):
        with pytest.raises(RuntimeError):
            use()
    assert contents(m) == {"a": 1}


def test_transaction_view_invalid_after_raise(map_type: type) -> None:
    m = map_type({"a": 1})
    views: list[Any] = []

    def fn(view: Any) -> None:
        views.append(view)
        raise Boom

    with pytest.raises(Boom):
        m.transaction(fn)
    with pytest.raises(RuntimeError):
        views[0]["a"]
    with pytest.raises(RuntimeError):
        views[0]["b"] = 1
    assert contents(m) == {"a": 1}


def test_transaction_base_exception_lands_nothing(map_type: type) -> None:
    m = map_type({"a": 1})

    def fn(view: Any) -> None:
        view["a"] = 2
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.transaction(fn)
    assert contents(m) == {"a": 1}
    assert m.transaction(lambda v: v.__setitem__("a", 3)) is None
    assert contents(m) == {"a": 3}


def test_public_names() -> None:
    assert safemap.MISSING is MISSING
    assert safemap.DELETE is DELETE
    assert MISSING is not DELETE
    assert MISSING is not None and DELETE is not None
    assert issubclass(safemap.RecursiveUpdateError, RuntimeError)
    for name in (
        "ConcurrentMapping",
        "MISSING",
        "DELETE",
        "RecursiveUpdateError",
        "FrozenMap",
        "RWLock",
        "LockedMap",
        "RWLockMap",
    ):
        assert hasattr(safemap, name), name


# ------------------------------------------------------- sentinels are not values

SENTINELS = pytest.mark.parametrize("sentinel", [MISSING, DELETE], ids=["MISSING", "DELETE"])


def sentinel_message(sentinel: Any) -> str:
    name = "MISSING" if sentinel is MISSING else "DELETE"
    return f"^safemap\\.{name} is a sentinel and cannot be stored as a value$"


# Every way of storing a caller-given value, tried on a map holding {"k": 1, "j": 2}, for a
# present key and an absent one where that matters.
STORING_CALLS: list[tuple[str, Any]] = [
    ("setitem-present", lambda m, s: m.__setitem__("k", s)),
    ("setitem-absent", lambda m, s: m.__setitem__("new", s)),
    ("store-present", lambda m, s: m.store("k", s)),
    ("store-absent", lambda m, s: m.store("new", s)),
    ("load_or_store-present", lambda m, s: m.load_or_store("k", s)),
    ("load_or_store-absent", lambda m, s: m.load_or_store("new", s)),
    ("setdefault-present", lambda m, s: m.setdefault("k", s)),
    ("setdefault-absent", lambda m, s: m.setdefault("new", s)),
    ("swap-present", lambda m, s: m.swap("k", s)),
    ("swap-absent", lambda m, s: m.swap("new", s)),
    ("compare_and_swap-equal", lambda m, s: m.compare_and_swap("k", 1, s)),
    ("compare_and_swap-unequal", lambda m, s: m.compare_and_swap("k", 5, s)),
    ("merge-present", lambda m, s: m.merge("k", s, lambda old, v: old)),
    ("merge-absent", lambda m, s: m.merge("new", s, lambda old, v: old)),
    ("update-mapping", lambda m, s: m.update({"a": 0, "new": s, "z": 0})),
    ("update-pairs", lambda m, s: m.update([("a", 0), ("new", s), ("z", 0)])),
    ("update-kwargs", lambda m, s: m.update({"a": 0}, new=s)),
    ("ior", lambda m, s: m.__ior__({"a": 0, "k": s})),
]


@SENTINELS
@pytest.mark.parametrize("call", [c for _, c in STORING_CALLS], ids=[n for n, _ in STORING_CALLS])
def test_storing_a_sentinel_raises_and_changes_nothing(
    map_type: type, call: Any, sentinel: Any
) -> None:
    m = map_type({"k": 1, "j": 2})
    with pytest.raises(TypeError, match=sentinel_message(sentinel)):
        call(m, sentinel)
    assert contents(m) == {"k": 1, "j": 2}


@SENTINELS
def test_constructing_with_a_sentinel_value_raises(map_type: type, sentinel: Any) -> None:
    message = sentinel_message(sentinel)
    with pytest.raises(TypeError, match=message):
        map_type({"a": 1, "s": sentinel})
    with pytest.raises(TypeError, match=message):
        map_type([("a", 1), ("s", sentinel)])
    with pytest.raises(TypeError, match=message):
        map_type(s=sentinel)
    with pytest.raises(TypeError, match=message):
        map_type.fromkeys(["a", "b"], sentinel)
    with pytest.raises(TypeError, match=message):
        map_type.fromkeys([], sentinel)


@SENTINELS
def test_sentinel_as_key_is_an_ordinary_key(map_type: type, sentinel: Any) -> None:
    m = map_type({sentinel: "v"})
    assert m[sentinel] == "v"
    assert m.pop(sentinel) == "v"
    assert contents(m) == {}


# (name, call with a callback returning ``result``) for the compute family, on {"k": 1}.
COMPUTE_RETURNING: list[tuple[str, Any]] = [
    ("compute-present", lambda m, r: m.compute("k", lambda k, old: r)),
    ("compute-absent", lambda m, r: m.compute("new", lambda k, old: r)),
    ("compute_if_absent", lambda m, r: m.compute_if_absent("new", lambda k: r)),
    ("compute_if_present", lambda m, r: m.compute_if_present("k", lambda k, old: r)),
    ("merge", lambda m, r: m.merge("k", 5, lambda old, v: r)),
]


@pytest.mark.parametrize(
    "call", [c for _, c in COMPUTE_RETURNING], ids=[n for n, _ in COMPUTE_RETURNING]
)
def test_compute_callback_returning_missing_raises_and_changes_nothing(
    map_type: type, call: Any
) -> None:
    m = map_type({"k": 1})
    with pytest.raises(TypeError, match=sentinel_message(MISSING)):
        call(m, MISSING)
    assert contents(m) == {"k": 1}
    m.store("after", 2)  # nothing stays locked or busy
    assert contents(m) == {"k": 1, "after": 2}


@pytest.mark.parametrize(
    "call", [c for _, c in COMPUTE_RETURNING], ids=[n for n, _ in COMPUTE_RETURNING]
)
def test_compute_callback_returning_delete_removes(map_type: type, call: Any) -> None:
    m = map_type({"k": 1})
    assert call(m, DELETE) is None
    assert "new" not in m
    assert contents(m) in ({}, {"k": 1})  # compute_if_absent on "new" leaves "k"
    assert DELETE not in m.values()


@SENTINELS
def test_compare_with_a_sentinel_old_is_false(map_type: type, sentinel: Any) -> None:
    m = map_type({"k": 1})
    assert m.compare_and_swap("k", sentinel, 2) is False
    assert m.compare_and_swap("absent", sentinel, 2) is False
    assert m.compare_and_delete("k", sentinel) is False
    assert m.compare_and_delete("absent", sentinel) is False
    assert contents(m) == {"k": 1}


@SENTINELS
def test_transaction_view_refuses_a_sentinel_value(map_type: type, sentinel: Any) -> None:
    m = map_type({"k": 1})
    caught: list[BaseException] = []

    def fn(view: Any) -> None:
        view["a"] = 2
        try:
            view["k"] = sentinel
        except TypeError as exc:
            caught.append(exc)
        assert view["k"] == 1

    m.transaction(fn)
    assert len(caught) == 1
    assert str(caught[0]) == f"{sentinel!r} is a sentinel and cannot be stored as a value"
    assert contents(m) == {"k": 1, "a": 2}
