"""FrozenMap's C read path (``safemap.protocol._frozen.FrozenBase``).

``m[k]``, ``get``, ``in``, ``len`` and iteration are answered in C from either backing (a
dict, or a trie version) and agree with a dict; no Python code of the library runs during
a read; each internal field is published once, so threads racing to build the dict, the
trie or the hash all get the same object; the fields stay sealed; GC and weak references
work through the C base.
"""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safemap import FrozenMap, PersistentMap
from safemap.protocol import _frozen

WAIT = 60.0  # seconds: reached only on a deadlock

_keys = st.integers(-40, 40) | st.text(max_size=3) | st.tuples(st.integers(0, 3))


def _backings(contents: dict[Any, Any]) -> list[tuple[str, FrozenMap[Any, Any]]]:
    dict_backed = FrozenMap(contents)
    snapshot = PersistentMap(contents).snapshot()  # trie-backed, no dict yet
    via_set = FrozenMap().update(contents)  # trie-backed, built by a batch
    materialized = PersistentMap(contents).snapshot()
    materialized.keys()  # trie-backed and its dict made
    return [
        ("dict", dict_backed),
        ("snapshot", snapshot),
        ("update", via_set),
        ("materialized", materialized),
    ]


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(_keys, st.integers()), st.lists(_keys, max_size=8))
def test_reads_agree_with_dict_on_every_backing(
    contents: dict[Any, int], probes: list[Any]
) -> None:
    for name, fm in _backings(contents):
        assert len(fm) == len(contents), name
        assert sorted(map(repr, fm)) == sorted(map(repr, contents)), name
        for key in [*contents, *probes]:
            assert (key in fm) == (key in contents), name
            assert fm.get(key) == contents.get(key), name
            assert fm.get(key, "d") == contents.get(key, "d"), name
            if key in contents:
                assert fm[key] == contents[key], name
            else:
                with pytest.raises(KeyError):
                    fm[key]


def test_read_errors_are_dicts() -> None:
    for name, fm in _backings({"a": 1}):
        with pytest.raises(TypeError):
            fm[[1]]  # unhashable
        with pytest.raises(TypeError):
            fm.get()  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            fm.get(1, 2, 3)  # type: ignore[call-arg]
        with pytest.raises(KeyError) as info:
            fm["zz"]
        assert info.value.args == ("zz",), name


def test_reads_run_no_python_code() -> None:
    """Every read is a C call: the profiler sees no Python function of the library."""
    for name, fm in _backings({i: str(i) for i in range(100)}):
        called: list[str] = []

        def profile(frame: Any, event: str, _arg: Any, called: list[str] = called) -> None:
            if event == "call":
                called.append(frame.f_code.co_name)

        sys.setprofile(profile)
        try:
            fm[5], fm.get(5), fm.get(-1, 0), 5 in fm, -1 in fm, len(fm)
            for _ in fm:
                pass
        finally:
            sys.setprofile(None)
        assert called == [], name


def test_unbuilt_instance_reads_raise_attribute_error() -> None:
    fm = FrozenMap.__new__(FrozenMap)
    reads: list[Callable[[], object]] = [
        lambda: fm[1],
        lambda: fm.get(1),
        lambda: 1 in fm,
        lambda: len(fm),
        lambda: iter(fm),
    ]
    for read in reads:
        with pytest.raises(AttributeError):
            read()


def test_dict_subclass_adopted_keeps_its_missing() -> None:
    class Defaulting(dict[Any, Any]):
        def __missing__(self, key: Any) -> Any:
            return "default"

    fm = FrozenMap._adopt(Defaulting(a=1))
    assert fm["a"] == 1 and fm["b"] == "default"
    assert fm.get("b") is None and "b" not in fm


def test_fields_are_published_once() -> None:
    snap = PersistentMap({"a": 1}).snapshot()
    data = _frozen._get(snap, 0)
    assert data is None  # trie-backed, no dict yet
    made = snap._data
    assert _frozen._get(snap, 0) is made
    assert _frozen._set(snap, 0, {"other": 2}) is made  # never replaced
    trie = snap._trie
    assert _frozen._set(snap, 1, PersistentMap({"b": 2})._current()) is trie
    with pytest.raises(TypeError):
        _frozen._set(FrozenMap.__new__(FrozenMap), 1, {"not": "a trie"})
    with pytest.raises(TypeError):
        _frozen._set(FrozenMap.__new__(FrozenMap), 0, [("not", "a dict")])
    with pytest.raises(TypeError):
        _frozen._get({"not": "a FrozenMap"}, 0)  # type: ignore[arg-type]
    assert dict(snap.items()) == {"a": 1} and snap.set("c", 3)["c"] == 3


def test_racing_threads_share_one_dict_one_trie_and_one_hash() -> None:
    threads, rounds = 4, 150
    for _ in range(rounds):
        snap = PersistentMap({i: i for i in range(64)}).snapshot()
        plain = FrozenMap({i: i for i in range(64)})
        got: list[tuple[int, int, int]] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(threads)

        def body(
            snap: Any = snap,
            plain: Any = plain,
            barrier: Any = barrier,
            got: list[tuple[int, int, int]] = got,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait()
                # dict from the trie, trie from the dict, hash: each built once
                d, t = snap._data, plain.set(0, 0)._trie
                hash(snap)
                got.append((id(d), id(plain._trie), id(snap._hash)))
                assert t is not None and snap[63] == 63 and plain.get(63) == 63
            except BaseException as e:  # reported below
                errors.append(e)

        workers = [threading.Thread(target=body) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(WAIT)
            assert not w.is_alive(), "deadlock"
        assert errors == []
        assert len(set(got)) == 1


def test_readers_race_materialization_and_derivation() -> None:
    """Readers of one trie-backed FrozenMap on several threads, while others build its
    dict, its hash and derived maps: every read is exact, nothing raises."""
    contents = {i: i * 2 for i in range(2000)} | {f"s{i}": i for i in range(500)}
    errors: list[BaseException] = []
    for _ in range(20):
        fm = PersistentMap(contents).snapshot()
        barrier = threading.Barrier(4)

        def reader(fm: Any = fm, barrier: Any = barrier) -> None:
            try:
                barrier.wait()
                for k, v in contents.items():
                    assert fm[k] == v and fm.get(k) == v and k in fm
                assert len(fm) == len(contents) and sum(1 for _ in fm) == len(contents)
            except BaseException as e:  # reported below
                errors.append(e)

        def builder(fm: Any = fm, barrier: Any = barrier) -> None:
            try:
                barrier.wait()
                assert len(fm.items()) == len(contents)
                assert fm.set(-1, 0)[-1] == 0 and hash(FrozenMap({1: fm.get(1)}))
            except BaseException as e:  # reported below
                errors.append(e)

        workers = [threading.Thread(target=f) for f in (reader, reader, builder, builder)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(WAIT)
            assert not w.is_alive(), "deadlock"
    assert errors == []


def test_subclass_weakref_and_cycle_collection() -> None:
    class Tagged(FrozenMap[Any, Any]):
        def __init__(self, other: Any = (), /, tag: str = "", **kwargs: Any) -> None:
            self.tag = tag
            super().__init__(other, **kwargs)

    t = Tagged({"a": 1}, tag="x")
    assert t["a"] == 1 and t.tag == "x" and isinstance(t, _frozen.FrozenBase)
    derived = t.set("b", 2)
    assert type(derived) is Tagged and derived["b"] == 2 and len(derived) == 2

    box: list[Any] = []
    cyclic = PersistentMap({"box": box}).snapshot()
    box.append(cyclic)  # cyclic -> box -> cyclic
    cyclic.keys()  # and through its dict too
    ref = weakref.ref(cyclic)
    del cyclic, box
    gc.collect()
    assert ref() is None


def test_deeply_nested_frozen_maps_are_freed_without_recursion_error() -> None:
    fm: FrozenMap[str, Any] = FrozenMap()
    for _ in range(100_000):
        fm = FrozenMap({"inner": fm})
    del fm  # the trashcan bounds the C recursion of the deallocations


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.integers(-3, 3) | st.floats(-3, 3) | st.booleans() | st.text(max_size=1), st.integers()
    ),
    st.lists(st.integers(-3, 3) | st.floats(-3, 3) | st.booleans(), max_size=6),
)
def test_equal_keys_of_other_types_are_found(contents: dict[Any, int], probes: list[Any]) -> None:
    """A trie walk compares exact str/int keys without a call and falls back to ``==``
    for any other pair (1 == 1.0 == True): the fallback finds what a dict finds."""
    for name, fm in _backings(contents):
        for key in probes:
            assert fm.get(key, "absent") == contents.get(key, "absent"), name
            assert (key in fm) == (key in contents), name
