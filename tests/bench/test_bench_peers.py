"""The peers' adapters give the protocol's answers, single-threaded: the workloads' checks
rely on them. (safemap's own map types are held to the protocol by the main test suite.)"""

from __future__ import annotations

import operator
from typing import Any

import pytest

from safemap.bench.registry import Impl, close_map, discover, select

IMPLS, SKIPPED = discover()
PEERS = [i for i in IMPLS if i.kind == "peer"]


@pytest.fixture(params=PEERS, ids=lambda i: i.name)
def impl(request: pytest.FixtureRequest) -> Impl:
    return request.param  # type: ignore[no-any-return]


def test_operations(impl: Impl) -> None:
    m: Any = impl.factory()
    try:
        assert m.load(1) == (None, False)
        m.store(1, "a")
        assert m.load(1) == ("a", True)
        assert m.load_or_store(1, "b") == ("a", True)
        assert m.load_or_store(2, "b") == ("b", False)
        assert m.swap(2, "c") == ("b", True)
        assert m.swap(3, "d") == (None, False)
        assert m.compare_and_swap(3, "x", "e") is False
        assert m.compare_and_swap(3, "d", "e") is True
        assert m.compare_and_swap(9, None, "e") is False
        assert m.compare_and_delete(3, "x") is False
        assert m.compare_and_delete(3, "e") is True
        assert m.load_and_delete(2) == ("c", True)
        assert m.load_and_delete(2) == (None, False)
        m.delete(1)
        m.delete(1)
        assert len(m) == 0
        assert m.merge("n", 1, operator.add) == 1
        assert m.merge("n", 1, operator.add) == 2
        assert m.compute_if_present("n", lambda k, v: v + 10) == 12
        assert m.compute_if_present("absent", lambda k, v: v + 10) is None
        for k in range(5):
            m.store(k, k)
        assert dict(m.items()) == {"n": 12, 0: 0, 1: 1, 2: 2, 3: 3, 4: 4}
        seen: list[Any] = []
        m.range(lambda k, v: seen.append(k) or len(seen) < 3)
        assert len(seen) == 3
        m.clear()
        assert len(m) == 0 and dict(m.items()) == {}
    finally:
        close_map(m)


def test_load_or_store_reports_loaded_for_the_same_object() -> None:
    # An adapter must not infer "loaded" from object identity.
    for impl in PEERS:
        m: Any = impl.factory()
        try:
            m.load_or_store(0, 0)
            assert m.load_or_store(0, 0) == (0, True), impl.name
        finally:
            close_map(m)


def test_registry_marks_only_the_bare_dict_unsafe() -> None:
    unsafe = [i.name for i in IMPLS if not i.safe]
    assert unsafe == ["dict"]
    assert {"LockedMap", "RWLockMap", "dict", "dict+Lock"} <= {i.name for i in IMPLS}


def test_skipped_implementations_say_how_to_install() -> None:
    for s in SKIPPED:
        assert s.install and s.reason


def test_select_is_case_insensitive_and_rejects_unknown_names() -> None:
    assert [i.name for i in select(IMPLS, ["lockedmap", "DICT"])] == ["LockedMap", "dict"]
    with pytest.raises(ValueError, match="unknown implementation"):
        select(IMPLS, ["NoSuchMap"])
