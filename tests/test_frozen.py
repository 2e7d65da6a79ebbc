"""``safemap.FrozenMap``: the immutable Mapping that ``snapshot()`` returns."""

from __future__ import annotations

import collections.abc
import copy
import pickle
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import safemap
from safemap import FrozenMap


def test_built_like_dict() -> None:
    assert dict(FrozenMap()) == {}
    assert dict(FrozenMap({1: 2})) == {1: 2}
    assert dict(FrozenMap([(1, 2), (3, 4), (1, 5)])) == {1: 5, 3: 4}
    assert dict(FrozenMap((k, k) for k in range(3))) == {0: 0, 1: 1, 2: 2}
    assert dict(FrozenMap(a=1, b=None)) == {"a": 1, "b": None}
    assert dict(FrozenMap({"a": 1}, a=2, b=3)) == {"a": 2, "b": 3}
    assert dict(FrozenMap([("a", 1)], b=2)) == {"a": 1, "b": 2}
    assert dict(FrozenMap(MappingProxyType({1: 1}))) == {1: 1}
    assert dict(FrozenMap(FrozenMap({1: 1}))) == {1: 1}
    assert dict(FrozenMap(safemap.LockedMap({1: 1}))) == {1: 1}

    class KeysOnly:
        def keys(self) -> list[str]:
            return ["x"]

        def __getitem__(self, key: str) -> str:
            return key * 2

    assert dict(FrozenMap(KeysOnly())) == {"x": "xx"}
    with pytest.raises(TypeError):
        FrozenMap(1)
    with pytest.raises(TypeError):
        FrozenMap({}, {})
    with pytest.raises(TypeError):
        FrozenMap([([1], 2)])  # unhashable key


def test_holds_its_own_copy() -> None:
    source = {1: [1]}
    fm = FrozenMap(source)
    source[2] = 2
    del source[1]
    assert dict(fm) == {1: [1]}


def test_is_mapping_not_mutable_mapping() -> None:
    fm = FrozenMap({1: 2})
    assert isinstance(fm, collections.abc.Mapping)
    assert not isinstance(fm, collections.abc.MutableMapping)
    assert not issubclass(FrozenMap, collections.abc.MutableMapping)


def test_immutable() -> None:
    fm = FrozenMap({1: 2})
    with pytest.raises(TypeError):
        fm[1] = 3  # type: ignore[index]
    with pytest.raises(TypeError):
        fm[5] = 3  # type: ignore[index]
    with pytest.raises(TypeError):
        del fm[1]  # type: ignore[attr-defined]
    for name in ("__setitem__", "__delitem__", "clear", "pop", "popitem", "setdefault"):
        assert not hasattr(fm, name), name
    # set/delete/update exist but return new FrozenMaps: this one never changes.
    assert fm.update({1: 3}) == {1: 3} and fm.set(5, 3) == {1: 2, 5: 3} and fm.delete(1) == {}
    assert dict(fm) == {1: 2}


def test_mapping_methods() -> None:
    fm = FrozenMap({1: "a", 2: None})
    assert fm[1] == "a"
    with pytest.raises(KeyError):
        fm[3]
    assert fm.get(2, "d") is None
    assert fm.get(3) is None
    assert fm.get(3, "d") == "d"
    assert 1 in fm and 3 not in fm
    assert len(fm) == 2
    assert sorted(fm) == [1, 2]
    assert sorted(fm.keys()) == [1, 2]
    assert sorted(fm.values(), key=repr) == ["a", None]
    assert set(fm.items()) == {(1, "a"), (2, None)}
    assert fm.keys() == {1, 2}
    assert bool(fm) and not FrozenMap()


def test_values_are_shared() -> None:
    value: list[int] = []
    assert FrozenMap({1: value})[1] is value


def test_equality() -> None:
    fm = FrozenMap({1: "a", 2: None})
    assert fm == {1: "a", 2: None}
    assert {1: "a", 2: None} == fm  # noqa: SIM300
    assert fm == FrozenMap([(2, None), (1, "a")])
    assert fm == MappingProxyType({1: "a", 2: None})
    assert fm == collections.UserDict({1: "a", 2: None})
    assert fm == safemap.LockedMap({1: "a", 2: None})
    assert safemap.LockedMap({1: "a", 2: None}) == fm
    assert fm != {1: "a"}
    assert fm != {1: "a", 2: 0}
    assert fm != [(1, "a"), (2, None)]
    assert fm != 1
    assert FrozenMap() == {}
    assert FrozenMap({1: 1}) == FrozenMap({1.0: 1})


def test_hashable_when_values_are() -> None:
    a = FrozenMap({1: "a", "k": (1, 2), None: None})
    b = FrozenMap([(None, None), ("k", (1, 2)), (1, "a")])
    assert hash(a) == hash(b)
    assert isinstance(hash(a), int)
    assert hash(FrozenMap({1: 1})) == hash(FrozenMap({1.0: 1}))
    assert hash(FrozenMap()) == hash(FrozenMap())
    assert {a: "x"}[b] == "x"
    assert len({a, b, FrozenMap({1: "b"})}) == 2
    assert isinstance(a, collections.abc.Hashable)


def test_unhashable_values_make_it_unhashable() -> None:
    fm = FrozenMap({1: [1]})
    with pytest.raises(TypeError):
        hash(fm)
    with pytest.raises(TypeError):
        hash(fm)  # every time, not only the first
    with pytest.raises(TypeError):
        {fm: 1}  # noqa: B018
    with pytest.raises(TypeError):
        hash(FrozenMap({1: FrozenMap({2: {}})}))


def test_repr() -> None:
    assert repr(FrozenMap()) == "FrozenMap({})"
    assert repr(FrozenMap({1: 2})) == "FrozenMap({1: 2})"
    assert repr(FrozenMap({"a": None})) == "FrozenMap({'a': None})"
    assert str(FrozenMap({1: 2})) == "FrozenMap({1: 2})"


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle(protocol: int) -> None:
    fm = FrozenMap({1: "a", "b": (1, 2), None: None})
    back = pickle.loads(pickle.dumps(fm, protocol))
    assert type(back) is FrozenMap
    assert back == fm
    assert hash(back) == hash(fm)
    nested = FrozenMap({1: FrozenMap({2: 3})})
    back = pickle.loads(pickle.dumps(nested, protocol))
    assert type(back[1]) is FrozenMap
    assert back == nested


def test_copy_and_deepcopy() -> None:
    value: list[int] = [1]
    fm = FrozenMap({1: value})
    shallow = copy.copy(fm)
    assert type(shallow) is FrozenMap
    assert shallow == fm
    assert shallow[1] is value
    deep = copy.deepcopy(fm)
    assert type(deep) is FrozenMap
    assert deep == fm
    assert deep[1] is not value
    assert deep[1] == value
    fm_copy = fm.copy()
    assert type(fm_copy) is FrozenMap and fm_copy == fm


def test_subscriptable_for_type_hints() -> None:
    import typing

    assert typing.get_origin(FrozenMap[str, int]) is FrozenMap


def test_snapshot_type(map_type: type) -> None:
    snap = map_type({1: 2}).snapshot()
    assert type(snap) is FrozenMap
    assert hash(snap) == hash(FrozenMap({1: 2}))


PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


def _round_trips(obj: Any) -> Iterator[Any]:
    """``obj`` pickled and unpickled with every protocol, then deep-copied."""
    for protocol in PROTOCOLS:
        yield pickle.loads(pickle.dumps(obj, protocol))
    yield copy.deepcopy(obj)


def _contains_itself(fm: FrozenMap[str, Any]) -> FrozenMap[str, Any]:
    """``fm`` (which maps "box" to a list) with itself appended to that list."""
    fm["box"].append(fm)
    return fm


def test_a_frozenmap_that_contains_itself_round_trips() -> None:
    # Issue 17.2: the copy used to be an empty FrozenMap.
    for back in _round_trips(_contains_itself(FrozenMap(box=[], n=1))):
        assert type(back) is FrozenMap
        assert sorted(back) == ["box", "n"] and back["n"] == 1
        assert len(back["box"]) == 1 and back["box"][0] is back


def test_a_frozenmap_reached_through_a_dict_in_its_own_values_round_trips() -> None:
    inner: dict[str, Any] = {}
    fm = FrozenMap(inner=inner)
    inner["me"] = fm
    for back in _round_trips(fm):
        assert list(back) == ["inner"] and back["inner"]["me"] is back


def test_frozenmaps_sharing_contents_and_containing_each_other_round_trip() -> None:
    # FrozenMap(FrozenMap(...)) shares the contents dict; both must come back whole.
    first = FrozenMap(box=[])
    second = FrozenMap(first)
    first["box"].append(second)
    for back_first, back_second in _round_trips([first, second]):
        assert back_first is not back_second
        assert back_first["box"] is back_second["box"]
        assert back_first["box"][0] is back_second


def test_a_snapshot_that_contains_itself_round_trips(map_type: type) -> None:
    m = map_type(box=[], n=1)
    snap = _contains_itself(m.snapshot())
    for back in _round_trips(snap):
        assert type(back) is FrozenMap
        assert back["n"] == 1 and back["box"][0] is back


class Node:
    """Hashable by identity, with attributes: it can hold a FrozenMap that holds it."""


def test_hashing_a_frozenmap_during_its_own_rebuild_is_an_error_not_a_wrong_hash() -> None:
    # The rebuilt FrozenMap is empty until its contents are rebuilt; when its own contents
    # reach it as a dict key first, a hash now would be cached wrong forever.
    node = Node()
    fm = FrozenMap(node=node)
    node.index = {fm: "fm"}  # type: ignore[attr-defined]
    for protocol in PROTOCOLS:
        with pytest.raises(TypeError, match="not built yet"):
            pickle.loads(pickle.dumps(fm, protocol))
    with pytest.raises(TypeError, match="not built yet"):
        copy.deepcopy(fm)
    # Entered from the other side, the FrozenMap is whole before it is hashed.
    for back_node in _round_trips(node):
        (back_fm,) = back_node.index
        assert back_fm["node"] is back_node and back_node.index[back_fm] == "fm"
        assert hash(back_fm) == hash(FrozenMap(node=back_node))


def test_old_pickles_still_load() -> None:
    class OldFormat:
        def __reduce__(self) -> tuple[Any, ...]:
            return (FrozenMap, ({"a": 1},))  # what FrozenMap.__reduce__ used to produce

    assert pickle.loads(pickle.dumps(OldFormat())) == FrozenMap(a=1)


_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=4)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        _scalars | st.tuples(_scalars, _scalars),
        st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6),
        max_size=6,
    )
)
def test_pickle_and_deepcopy_keep_contents_and_hash(contents: dict[Any, Any]) -> None:
    fm = FrozenMap(contents)
    for back in _round_trips(fm):
        assert type(back) is FrozenMap and back == fm and dict(back) == contents
    hashable = FrozenMap({k: repr(v) for k, v in contents.items()})
    for back in _round_trips(hashable):
        assert hash(back) == hash(hashable)


def _rewrites(fm: FrozenMap[Any, Any]) -> list[tuple[str, Callable[[], object], type]]:
    """Every way we know to rebuild or rewire a built FrozenMap, with the error it gets."""

    class Sub(FrozenMap[Any, Any]):
        __slots__ = ()

    class SameLayout(collections.abc.Mapping[Any, Any]):
        """Layout-compatible with FrozenMap: as its __class__, its methods could rewrite it."""

        __slots__ = ("__weakref__", "_data", "_hash")

        def __getitem__(self, key: Any) -> Any:
            return self._data[key]

        def __iter__(self) -> Iterator[Any]:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    return [
        ("__init__ again", lambda: fm.__init__({"x": 9}), TypeError),  # type: ignore[misc]
        ("FrozenMap.__init__", lambda: FrozenMap.__init__(fm, x=9), TypeError),
        ("__setstate__", lambda: fm.__setstate__(({"x": 9}, None)), TypeError),
        ("set _data", lambda: setattr(fm, "_data", {"x": 9}), AttributeError),
        ("object.__setattr__ _data", lambda: object.__setattr__(fm, "_data", {}), AttributeError),
        ("object.__setattr__ _hash", lambda: object.__setattr__(fm, "_hash", 7), AttributeError),
        ("object.__delattr__ _data", lambda: object.__delattr__(fm, "_data"), AttributeError),
        ("object.__delattr__ _hash", lambda: object.__delattr__(fm, "_hash"), AttributeError),
        (
            "class-dict descriptor",
            lambda: FrozenMap.__dict__["_data"].__set__(fm, {"x": 9}),
            AttributeError,
        ),
        ("__class__ = subclass", lambda: setattr(fm, "__class__", Sub), TypeError),
        (
            "object.__setattr__ __class__",
            lambda: object.__setattr__(fm, "__class__", SameLayout),
            TypeError,
        ),
    ]


def _assert_every_rewrite_refused(fm: FrozenMap[Any, Any]) -> None:
    cls = type(fm)
    before = dict(fm)
    before_hash = hash(fm)
    keyed = {fm: "found"}
    for name, rewrite, error in _rewrites(fm):
        with pytest.raises(error, match="immutable"):
            rewrite()
        assert type(fm) is cls and fm.__class__ is cls, name
        assert dict(fm) == before, name
        assert hash(fm) == before_hash, name
        assert keyed[fm] == "found", name


def test_a_built_frozenmap_cannot_be_rebuilt_or_rewired() -> None:
    # Issue 17.3: __init__ used to replace the contents and reset the hash.
    _assert_every_rewrite_refused(FrozenMap({"a": 1, "b": (2, 3)}))


def test_a_snapshot_cannot_be_rebuilt(map_type: type) -> None:
    _assert_every_rewrite_refused(map_type({"a": 1}).snapshot())


class Tagged(FrozenMap[str, int]):
    """A documented kind of subclass: an extra keyword-only option and a method."""

    def __init__(self, data: Any = (), /, *, tag: str = "", **kwargs: int) -> None:
        super().__init__(data, **kwargs)
        self.tag = tag

    def total(self) -> int:
        return sum(self.values())


def test_subclasses_keep_every_guarantee() -> None:
    t = Tagged({"a": 1}, tag="x", b=2)
    assert t.total() == 3 and t.tag == "x" and t == {"a": 1, "b": 2}
    _assert_every_rewrite_refused(t)
    assert t.tag == "x"  # the refused super().__init__ stopped the subclass's __init__ too
    for back in _round_trips(t):
        assert type(back) is Tagged and back == t and back.tag == "x"
    assert type(t | {"c": 3}) is Tagged and type({"c": 3} | t) is Tagged
    assert type(Tagged.fromkeys("ab", 0)) is Tagged
    box: list[Any] = []
    recursive = Tagged(box=1, tag="r")
    recursive.tag_box = box  # type: ignore[attr-defined]
    box.append(recursive)
    for back in _round_trips(recursive):
        assert back.tag_box[0] is back and back.tag == "r"


def test_new_state_is_copied_and_adopt_is_not() -> None:
    # __setstate__ is public, so it keeps its own copy; _adopt (the maps' snapshot path)
    # takes the dict as is, in O(1).
    fresh = FrozenMap.__new__(FrozenMap)
    source = {"a": 1}
    fresh.__setstate__((source, None))
    source["b"] = 2
    assert fresh == {"a": 1}
    with pytest.raises(TypeError, match="state must be"):
        FrozenMap.__new__(FrozenMap).__setstate__({"a": 1})  # type: ignore[arg-type]
    data = {"a": 1}
    assert FrozenMap._adopt(data)._data is data


def test_pickling_hooks_never_hand_out_the_contents() -> None:
    fm = FrozenMap(a=1)

    def clear_every_dict(obj: Any) -> None:
        if isinstance(obj, dict):
            obj.clear()
        elif isinstance(obj, tuple):
            for part in obj:
                clear_every_dict(part)

    for protocol in PROTOCOLS:
        clear_every_dict(fm.__reduce_ex__(protocol))
    clear_every_dict(fm.__reduce__())
    clear_every_dict(fm.__getstate__())
    assert fm == {"a": 1} and len(fm) == 1


def test_an_unbuilt_frozenmap_is_not_hashable() -> None:
    with pytest.raises(TypeError, match="not built yet"):
        hash(FrozenMap.__new__(FrozenMap))
