"""The peers' adapters give the protocol's answers, single-threaded: the workloads' checks
rely on them. (safemap's own map types are held to the protocol by the main test suite.)"""

from __future__ import annotations

import operator
import threading
from typing import Any

import pytest

import safemap
from safemap.bench.catalog import all_workloads
from safemap.bench.peers import LockedDict, UnsafeDict
from safemap.bench.protocol import DICT_CALLS, direct
from safemap.bench.registry import Impl, close_map, discover, select
from safemap.bench.runner import run_cell
from safemap.bench.workload import Workload

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


def test_the_dict_limit_is_dicts_own_single_calls() -> None:
    # Not an adapter method: the very bound methods of a plain (exact) dict, so that no
    # harness overhead makes the limit slower than a safe map's single call.
    m = UnsafeDict()
    calls = m.direct()
    d = calls.target
    assert type(d) is dict
    assert calls.get == d.get and calls.setdefault == d.setdefault
    assert calls.pop == d.pop and calls.clear == d.clear
    for bound in (calls.get, calls.setdefault, calls.pop, calls.clear):
        assert type(bound).__name__ == "builtin_function_or_method" and bound.__self__ is d


def test_a_safemap_map_is_called_through_its_own_dict_methods() -> None:
    m = safemap.LockedMap[Any, Any]()
    calls = direct(m)
    assert calls.target is m
    assert calls.get == m.get and calls.setdefault == m.setdefault and calls.pop == m.pop


class _DirectOnly(LockedDict):
    """Refuses, in the measuring threads, the BenchMap calls that Direct replaces."""

    def _refuse(self, op: str) -> None:
        if threading.current_thread().name.startswith("bench-"):
            raise AssertionError(f"{op} called instead of its single-call spelling")

    def load(self, key: Any) -> tuple[Any, bool]:
        self._refuse("load")
        return super().load(key)

    def store(self, key: Any, value: Any) -> None:
        self._refuse("store")
        super().store(key, value)

    def load_or_store(self, key: Any, value: Any) -> tuple[Any, bool]:
        self._refuse("load_or_store")
        return super().load_or_store(key, value)

    def load_and_delete(self, key: Any) -> tuple[Any, bool]:
        self._refuse("load_and_delete")
        return super().load_and_delete(key)

    def delete(self, key: Any) -> None:
        self._refuse("delete")
        super().delete(key)


@pytest.mark.parametrize(
    "workload",
    [w for w in all_workloads(capacity=256) if set(w.info.ops) & DICT_CALLS],
    ids=lambda w: w.name,
)
def test_workloads_call_every_dict_operation_through_direct(workload: Workload) -> None:
    outcome = run_cell(workload, _DirectOnly, 2, duration=0.01, ops_per_thread=300)
    assert outcome.exceptions == 0, outcome.errors
