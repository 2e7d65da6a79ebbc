"""Every map type survives the stress harness; deliberately broken maps are caught.

CI runs 100 histories (4 threads x 100 calls) per map type, with and without whole-map
calls. The long run, thousands of histories per type, is opt-in:

    python -m pytest -m slow tests/testing/test_stress.py
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from safemap import LockedMap
from safemap.testing import MapModel, StuckOperationsError, stress


@pytest.mark.timeout(240)
@pytest.mark.parametrize("whole_map", [0.0, 0.06], ids=["per-key", "with-whole-map-ops"])
def test_every_map_type_is_linearizable_under_stress(map_type: type[Any], whole_map: float) -> None:
    # A budget of search states (not seconds) decides each check the same way on every
    # machine; the histories here take a few thousand states at most.
    result = stress(
        map_type,
        threads=4,
        ops=100,
        histories=50,
        seed=7,
        whole_map=whole_map,
        time_budget=120,
        state_budget=200_000,
    )
    assert result.ok is True, str(result.counterexample)
    assert result.histories == 50 and result.operations == 50 * 4 * 100


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_every_map_type_long_run(map_type: type[Any]) -> None:
    for seed in range(20):
        result = stress(map_type, threads=6, ops=200, histories=100, seed=seed, whole_map=0.05)
        assert result.ok is not False, str(result.counterexample)


class _MergeInTwoSteps(LockedMap[Any, Any]):
    """Broken: merge reads and writes under separate lock acquisitions."""

    _gap = threading.Lock()

    def merge(self, key: Any, value: Any, fn: Any) -> Any:
        with self._gap:
            old = self.get(key)
        new = value if old is None else fn(old, value)
        with self._gap:
            self[key] = new
        return new


class _CasIgnoringOld(LockedMap[Any, Any]):
    """Broken: compare_and_swap swaps whenever the key is present."""

    def compare_and_swap(self, key: Any, old: Any, new: Any) -> bool:
        if key in self:
            self[key] = new
            return True
        return False


class _IteratesTwice(LockedMap[Any, Any]):
    """Broken: iteration yields the first entry a second time."""

    def _iter_items(self) -> Iterator[tuple[Any, Any]]:
        items = list(super()._iter_items())
        yield from items
        if len(items) > 1:
            yield items[0]


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("broken", "options", "symptom"),
    [
        (_MergeInTwoSteps, {"methods": ["merge", "load"], "whole_map": 0.0}, "merge("),
        (_CasIgnoringOld, {"methods": ["compare_and_swap", "store"]}, "compare_and_swap("),
        (_IteratesTwice, {"whole_map": 0.2}, "twice"),
    ],
    ids=["merge-read-then-write", "cas-ignores-old", "iteration-yields-twice"],
)
def test_broken_maps_are_caught_with_a_readable_counterexample(
    broken: type[Any], options: dict[str, Any], symptom: str
) -> None:
    result = stress(broken, threads=4, ops=100, histories=200, seed=3, **options)
    assert result.ok is False
    text = str(result.counterexample)
    print(text)  # shown with -s: the counterexample a user would read
    assert "history is not linearizable" in text
    assert "cannot be explained next" in text and "!!" in text
    assert symptom in text


def test_stress_is_reproducible_by_seed() -> None:
    seen: list[list[str]] = []

    class Spy(LockedMap[Any, Any]):
        def store(self, key: Any, value: Any) -> None:
            seen[-1].append(f"{key}={value}")
            super().store(key, value)

    for _ in range(2):
        seen.append([])
        stress(Spy, threads=1, ops=50, histories=1, seed=11, methods=["store"], whole_map=0)
    assert seen[0] == seen[1] and len(seen[0]) == 50


@pytest.mark.timeout(120)
def test_a_map_that_blocks_fails_the_run_with_the_stuck_calls_and_their_stacks() -> None:
    # Issue 17.7: the workers used to be joined without a timeout, so this hung forever.
    release = threading.Event()

    class BlocksInMerge(LockedMap[Any, Any]):
        def merge(self, key: Any, value: Any, fn: Any) -> Any:
            release.wait()  # a lost wake-up: nothing sets it while stress() runs
            return super().merge(key, value, fn)

    old_interval = sys.getswitchinterval()
    try:
        with pytest.raises(StuckOperationsError) as caught:
            stress(
                BlocksInMerge, threads=3, ops=30, histories=3, seed=5, whole_map=0,
                methods=["merge"], run_timeout=2.0,
            )  # fmt: skip
    finally:
        release.set()
    error = caught.value
    assert isinstance(error, AssertionError)  # a failure of the map, as pytest reports it
    assert sys.getswitchinterval() == old_interval
    assert error.history == 0 and error.seed == 5 and error.run_timeout == 2.0
    # Every worker blocks in its first call: each is reported once, in merge, with the
    # frame where it blocked.
    assert sorted(op.worker for op in error.stuck) == [0, 1, 2]
    text = str(error)
    assert "3 of 3 threads did not return from a call within run_timeout=2.0s" in text
    for op in error.stuck:
        assert op.call.startswith("merge('k") and op.call.endswith(", 1, _add)")
        assert "in merge\n    release.wait()" in op.stack
        assert f"worker {op.worker}: {op.call}" in text and op.stack.rstrip() in text
    # Unblocked, the abandoned workers stop at their next call instead of running on.
    for op in error.stuck:
        op.thread.join(timeout=30)
        assert not op.thread.is_alive()


@pytest.mark.timeout(120)
def test_a_map_whose_snapshot_blocks_is_reported_too() -> None:
    release = threading.Event()
    calls: list[str] = []

    class SnapshotBlocks(LockedMap[Any, Any]):
        def snapshot(self) -> Any:
            release.wait()
            return super().snapshot()

        def store(self, key: Any, value: Any) -> None:
            calls.append(key)
            super().store(key, value)

    try:
        with pytest.raises(StuckOperationsError) as caught:
            stress(SnapshotBlocks, threads=4, ops=10, histories=1, methods=["store"],
                   whole_map=0, run_timeout=1.0)  # fmt: skip
    finally:
        release.set()
    (stuck,) = caught.value.stuck
    assert stuck.worker == 0 and stuck.call == "snapshot() (the initial contents)"
    assert "3 other workers never started" in str(caught.value)
    stuck.thread.join(timeout=30)
    assert not stuck.thread.is_alive() and calls == []  # no call ran after the run was abandoned


def test_a_failing_initial_snapshot_propagates() -> None:
    class SnapshotFails(LockedMap[Any, Any]):
        def snapshot(self) -> Any:
            raise OSError("snapshot failed")

    with pytest.raises(OSError, match="snapshot failed"):
        stress(SnapshotFails, threads=3, ops=5, histories=1)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"threads": 0}, ValueError, "threads must be at least 1"),
        ({"ops": 0}, ValueError, "ops must be at least 1"),
        ({"histories": -1}, ValueError, "histories must be at least 1"),
        ({"keys": 0}, ValueError, "keys must be at least 1"),
        ({"threads": 2.5}, TypeError, "threads must be an int"),
        ({"ops": True}, TypeError, "ops must be an int"),
        ({"seed": None}, TypeError, "seed must be an int"),
        ({"seed": "7"}, TypeError, "seed must be an int"),
        ({"methods": ["no_such_method"]}, ValueError, "non-empty subset"),
        ({"methods": []}, ValueError, "non-empty subset"),
        ({"methods": "merge"}, TypeError, "not the string 'merge'"),
        ({"whole_map": 2.0}, ValueError, "between 0 and 1"),
        ({"whole_map": math.nan}, ValueError, "between 0 and 1"),
        ({"whole_map": "0.1"}, TypeError, "whole_map must be a number"),
        ({"time_budget": 0}, ValueError, "time_budget must be positive and finite"),
        ({"time_budget": -1.0}, ValueError, "time_budget must be positive and finite"),
        ({"state_budget": 0}, ValueError, "state_budget must be at least 1"),
        ({"state_budget": 10.0}, TypeError, "state_budget must be an int or None"),
        ({"run_timeout": 0}, ValueError, "run_timeout must be positive and finite"),
        ({"run_timeout": math.inf}, ValueError, "run_timeout must be positive and finite"),
        ({"run_timeout": None}, TypeError, "run_timeout must be a number of seconds"),
        ({"model": MapModel}, TypeError, "model must be a MapModel instance"),
    ],
)
def test_invalid_arguments_are_refused_before_anything_runs(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    built: list[object] = []

    def factory() -> LockedMap[Any, Any]:
        built.append(object())
        return LockedMap()

    with pytest.raises(error, match=message):
        stress(factory, **arguments)
    assert built == []


def test_a_factory_that_is_not_callable_or_builds_no_map_is_refused() -> None:
    with pytest.raises(TypeError, match="map_factory must be callable"):
        stress(LockedMap())  # type: ignore[arg-type]
    # A dict would fail every protocol call and be reported as not linearizable.
    with pytest.raises(TypeError, match=r"returned a dict, which lacks .*load.*snapshot"):
        stress(dict, threads=2, ops=5, histories=1)
    with pytest.raises(TypeError, match="lacks compare_and_swap"):
        stress(_OnlyLoadAndStore, threads=2, ops=5, histories=1, whole_map=0,
               methods=["load", "compare_and_swap"])  # fmt: skip
    result = stress(_OnlyLoadAndStore, threads=2, ops=5, histories=1, whole_map=0,
                    methods=["load", "store"])  # fmt: skip
    assert result.ok is True


class _OnlyLoadAndStore:
    """Implements just the calls a narrowed run makes: that is enough."""

    def __init__(self) -> None:
        self._map: LockedMap[Any, Any] = LockedMap()

    def load(self, key: Any) -> Any:
        return self._map.load(key)

    def store(self, key: Any, value: Any) -> None:
        self._map.store(key, value)

    def snapshot(self) -> Any:
        return self._map.snapshot()
