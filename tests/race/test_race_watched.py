"""Watched maps keep their flavor (dict, defaultdict, OrderedDict, Counter), copies and
pickles are plain maps, and the shadow stays bounded over a million operations."""

from __future__ import annotations

import copy
import gc
import pickle
from collections import Counter, OrderedDict, defaultdict

import pytest
from support.race import concurrently

from safemap import race
from safemap.race import _runtime, _shadow

pytestmark = pytest.mark.usefixtures("detector")  # tests/race/conftest.py


def kinds() -> list[str]:
    return sorted(r.kind for r in race.reports())


def test_class_is_cached_per_flavor_and_keeps_isinstance() -> None:
    a, b = race.watch({}), race.watch({"x": 1})
    assert type(a) is type(b) and type(a) is not dict
    dd = race.watch(defaultdict(list))
    assert isinstance(dd, dict) and isinstance(dd, defaultdict)
    od = race.watch(OrderedDict())
    assert isinstance(od, OrderedDict) and type(od) is not type(a)
    assert isinstance(race.watch(Counter()), Counter)


def test_defaultdict_calls_factory_read_then_write_and_shape_change() -> None:
    dd = race.watch(defaultdict(list, {"a": [1]}), name="dd")
    dd["b"].append(2)
    assert dd == {"a": [1], "b": [2]} and dd.default_factory is list
    assert repr(dd) == "defaultdict(<class 'list'>, {'a': [1], 'b': [2]})"
    assert dd.get("zz") is None and "zz" not in dd  # get/in do not call the factory
    # The missing-key access is a read and then a write of the key plus a shape change.
    dd2 = race.watch(defaultdict(int), name="dd2")
    concurrently(lambda: dd2["k"], lambda: dd2.get("k"))
    assert kinds() == ["read/write"]
    race.clear()
    dd3 = race.watch(defaultdict(int), name="dd3")
    concurrently(lambda: dd3["k"], lambda: len(dd3))
    assert kinds() == ["observation/write"]
    race.clear()
    dd4 = race.watch(defaultdict(int, {"k": 0}), name="dd4")
    concurrently(lambda: dd4["k"], lambda: dd4.get("k"))  # hit: a read only
    assert kinds() == []


def test_defaultdict_without_factory_raises_keyerror() -> None:
    dd = race.watch(defaultdict(None), name="dd")
    with pytest.raises(KeyError):
        dd["x"]


def test_ordereddict_order_methods() -> None:
    od = race.watch(OrderedDict([("a", 1), ("b", 2), ("c", 3)]), name="od")
    od.move_to_end("a")
    assert list(od) == ["b", "c", "a"]
    od.move_to_end("a", last=False)
    assert list(od) == ["a", "b", "c"] and list(reversed(od)) == ["c", "b", "a"]
    assert od.popitem(last=False) == ("a", 1) and od.popitem() == ("c", 3)
    assert od.setdefault("z", 9) == 9 and od.pop("z") == 9 and list(od.items()) == [("b", 2)]
    assert repr(od) == repr(OrderedDict([("b", 2)]))  # the flavor's own repr (3.12 changed it)
    assert od == OrderedDict(b=2) and race.reports() == []
    with pytest.raises(KeyError):
        race.watch(OrderedDict()).popitem()


def test_ordereddict_move_to_end_races_with_iteration() -> None:
    od = race.watch(OrderedDict(a=1, b=2), name="od")
    concurrently(lambda: list(od), lambda: od.move_to_end("a"))
    # One report: the key conflict (iteration's read of 'a') and the shape conflict share
    # the pair of sites, so the second is deduplicated.
    assert kinds() in (["iteration/write"], ["read/write"])


def test_counter_flavor() -> None:
    c = race.watch(Counter("abca"), name="c")
    c.update("aa")
    c.update({"b": 2})
    assert c["a"] == 4 and c["b"] == 3 and c["zz"] == 0 and "zz" not in c
    assert c.most_common(1) == [("a", 4)] and c.total() == 8
    assert isinstance(c + Counter("a"), Counter)
    d = race.watch(Counter(), name="d")
    concurrently(lambda: d.update("x"), lambda: d.get("x"))
    assert "read/write" in kinds()


def test_dict_popitem_takes_no_argument() -> None:
    with pytest.raises(TypeError):
        race.watch({"a": 1}).popitem(False)
    with pytest.raises(KeyError):
        race.watch({}).popitem()


@pytest.mark.parametrize(
    "original",
    [{"a": 1}, defaultdict(list, {"a": [1]}), OrderedDict(a=1, b=2), Counter("aab")],
    ids=["dict", "defaultdict", "OrderedDict", "Counter"],
)
def test_copies_and_pickles_are_plain_maps_of_the_flavor(original: dict[str, object]) -> None:
    w = race.watch(original, name="w")
    for plain in (
        w.copy(),
        copy.copy(w),
        copy.deepcopy(w),
        pickle.loads(pickle.dumps(w)),
        pickle.loads(pickle.dumps(w, protocol=0)),
    ):
        assert type(plain) is type(original) and not race.is_watched(plain)
        assert plain == original and list(plain) == list(original)
    if isinstance(original, defaultdict):
        assert copy.copy(w).default_factory is list
    deep = copy.deepcopy(w)
    if isinstance(original, defaultdict):
        assert deep["a"] == [1] and deep["a"] is not w["a"]


def test_watch_takes_contents_and_keeps_attributes() -> None:
    src = OrderedDict([("b", 1), ("a", 2)])
    w = race.watch(src)
    assert list(w) == ["b", "a"]
    src["c"] = 3
    assert "c" not in w  # the original is copied, not watched


def test_fromkeys_and_subclass_construction() -> None:
    cls = type(race.watch({}))
    d = cls.fromkeys("ab", 0)
    assert d == {"a": 0, "b": 0} and race.is_watched(d)


def test_reentrant_use_from_key_eq_is_fine() -> None:
    d = race.watch({}, name="m")

    class Key:
        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            len(d)  # reads the same map while it is being accessed
            return self is other

    k = Key()
    d[k] = 1
    assert d[k] == 1 and k in d
    assert race.reports() == []


@pytest.mark.usefixtures("frozen_heap")
def test_shadow_memory_is_bounded_over_a_million_operations() -> None:
    d = race.watch({k: k for k in range(100)}, name="mem")
    sync = _runtime.SyncVar()
    fresh = 10**9
    # Without tracemalloc (it would make this minutes long; benchmarks/bench_race.py
    # measures the bytes): the number of live GC-tracked objects must stay flat.
    checkpoint = 0
    for i in range(1_000_000 // 5):
        if i % 64 == 0:
            _runtime.release(sync)  # a new epoch: the next accesses are slow paths
        if i % 10 == 0:
            d.get(fresh)  # a miss on a never-seen key
            d[fresh + 1] = i  # insert and delete an ever-new key
            del d[fresh + 1]
            fresh += 2
        else:
            d.get(i % 100)
            d[i % 100] = i
            i % 100 in d  # noqa: B015
        d[i % 100] = i
        len(d)
        if i == 40_000:
            gc.collect()
            checkpoint = len(gc.get_objects())
    gc.collect()
    end = len(gc.get_objects())
    ms = d._race
    assert len(ms.keys) <= len(d) + 2 * _shadow.ABSENT_MAX
    state = _runtime.current()
    assert len(state.history) <= state.history.maxlen  # type: ignore[operator]
    assert end - checkpoint < 2000, (checkpoint, end)  # flat, not growing with the ops
    assert race.reports() == []
