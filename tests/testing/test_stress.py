"""Every map type survives the stress harness; deliberately broken maps are caught.

CI runs 100 histories (4 threads x 100 calls) per map type, with and without whole-map
calls. The long run, thousands of histories per type, is opt-in:

    python -m pytest -m slow tests/testing/test_stress.py
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from safemap import LockedMap
from safemap.testing import stress


@pytest.mark.timeout(240)
@pytest.mark.parametrize("whole_map", [0.0, 0.06], ids=["per-key", "with-whole-map-ops"])
def test_every_map_type_is_linearizable_under_stress(map_type: type[Any], whole_map: float) -> None:
    result = stress(map_type, threads=4, ops=100, histories=50, seed=7, whole_map=whole_map)
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


def test_stress_is_reproducible_by_seed_and_validates_its_arguments() -> None:
    seen: list[list[str]] = []

    class Spy(LockedMap[Any, Any]):
        def store(self, key: Any, value: Any) -> None:
            seen[-1].append(f"{key}={value}")
            super().store(key, value)

    for _ in range(2):
        seen.append([])
        stress(Spy, threads=1, ops=50, histories=1, seed=11, methods=["store"], whole_map=0)
    assert seen[0] == seen[1] and len(seen[0]) == 50
    with pytest.raises(ValueError):
        stress(LockedMap, threads=0)
    with pytest.raises(ValueError):
        stress(LockedMap, methods=["no_such_method"])
    with pytest.raises(ValueError):
        stress(LockedMap, whole_map=2.0)
