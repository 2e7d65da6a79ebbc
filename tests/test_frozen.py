"""``safemap.FrozenMap``: the immutable Mapping that ``snapshot()`` returns."""

from __future__ import annotations

import collections.abc
import copy
import pickle
from types import MappingProxyType

import pytest

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
    for name in ("__setitem__", "__delitem__", "clear", "pop", "popitem", "setdefault", "update"):
        assert not hasattr(fm, name), name
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
